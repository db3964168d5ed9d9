// Badge is a short state label with a tone; the tone is never the only carrier of
// meaning (the label says it).
import styles from "./Badge.module.css";

export type Tone = "ok" | "warn" | "danger" | "neutral";

export function Badge({ tone, children }: { tone: Tone; children: string }) {
  return <span className={`${styles.badge} ${styles[tone]}`}>{children}</span>;
}
