// The frame of a page that is not built yet (see the README's console section): its
// title only.
import { Page } from "../components/Page.js";

export default function NotBuilt({ title }: { title: string }) {
  return <Page title={title} description="This page is not built yet." />;
}
