// ErrorPanel shows a failed call as the server put it: its message and its Connect code
// (the code name, as in the CLI and the docs), announced to screen readers.
import { Code, ConnectError } from "@connectrpc/connect";
import styles from "./ErrorPanel.module.css";

/** codeName is the snake_case name of a Connect code, e.g. "permission_denied". */
export function codeName(code: Code): string {
  return (Code[code] ?? "unknown").replace(/([a-z])([A-Z])/g, "$1_$2").toLowerCase();
}

export function ErrorPanel({ error, title = "The call failed" }: { error: unknown; title?: string }) {
  const ce = ConnectError.from(error);
  return (
    <div className={styles.panel} role="alert">
      <p className={styles.title}>
        {title} <code className={styles.code}>{codeName(ce.code)}</code>
      </p>
      <p className={styles.message}>{ce.rawMessage || "no message"}</p>
    </div>
  );
}
