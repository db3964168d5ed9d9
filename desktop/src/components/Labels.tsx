// Labels shows a key=value map (a node's or a secret's labels) as chips, in key order.
import { Badge } from "./Badge.js";
import styles from "./Labels.module.css";

/** Labels renders labels; none (default: nothing) stands in for an empty map. */
export function Labels({ labels, none }: { labels: Record<string, string>; none?: string }) {
  const entries = Object.entries(labels).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  if (entries.length === 0) return none ? <>{none}</> : null;
  return (
    <span className={styles.labels}>
      {entries.map(([k, v]) => (
        <Badge key={k} tone="neutral">{`${k}=${v}`}</Badge>
      ))}
    </span>
  );
}
