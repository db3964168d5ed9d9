// Problem is what palyrad said is wrong with a form's field, shown under it; the field
// names it in its aria-describedby.
import styles from "./Problem.module.css";

/** Problem is a field's problem, as palyrad put it; nothing without one. */
export function Problem({ id, text }: { id: string; text?: string }) {
  return text ? (
    <p id={id} className={styles.problem}>
      {text}
    </p>
  ) : null;
}
