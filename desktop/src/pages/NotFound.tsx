import { Link } from "react-router";
import { Page } from "../components/Page.js";

export default function NotFound() {
  return (
    <Page title="Page not found" description="The console has no page at this address.">
      <p>
        <Link to="/">Go to the overview</Link>
      </p>
    </Page>
  );
}
