// The hand-off of `palyra console`: /handoff#code=... claims the single-use code for a
// session and then replaces the URL, so that the code leaves neither the address bar
// nor the history. The code travels in the fragment, which the browser never sends to
// a server (nor in a Referer).
import { useEffect, useRef, useState } from "react";
import { Navigate } from "react-router";
import { useSession } from "../session.js";
import { ErrorPanel } from "../components/ErrorPanel.js";
import styles from "./SignIn.module.css";

export default function Handoff() {
  const { claimHandoff } = useSession();
  const [result, setResult] = useState<"pending" | "done" | { error: unknown }>("pending");
  const started = useRef(false);
  useEffect(() => {
    if (started.current) return; // StrictMode runs effects twice; a code works once
    started.current = true;
    const code = new URLSearchParams(window.location.hash.slice(1)).get("code") ?? "";
    window.history.replaceState(null, "", "/handoff");
    claimHandoff(code).then(
      () => setResult("done"),
      (error: unknown) => setResult({ error }),
    );
  }, [claimHandoff]);
  if (result === "done") return <Navigate to="/" replace />;
  return (
    <main className={styles.wrap}>
      <div className={styles.card}>
        <h1>Signing in from palyra console</h1>
        {result === "pending" ? (
          <p role="status">Opening the session…</p>
        ) : (
          <>
            <ErrorPanel error={result.error} title="This sign-in link does not work" />
            <p>
              A link of <code>palyra console</code> works once and for one minute. Run <code>palyra console</code> again, or{" "}
              <a href="/">sign in with an API token</a>.
            </p>
          </>
        )}
      </div>
    </main>
  );
}
