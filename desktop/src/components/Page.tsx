// Page is the frame of every page: its heading (focused on navigation, so it takes
// tabIndex -1), an optional description and actions, and the document title.
import { useEffect, type ReactNode } from "react";
import styles from "./Page.module.css";

export function Page({ title, description, actions, children }: { title: string; description?: ReactNode; actions?: ReactNode; children?: ReactNode }) {
  useEffect(() => {
    document.title = `${title} · Palyra console`;
  }, [title]);
  return (
    <section className={styles.page} aria-labelledby="page-title">
      <div className={styles.head}>
        <div>
          <h1 id="page-title" tabIndex={-1} className={styles.title}>
            {title}
          </h1>
          {description ? <p className={styles.description}>{description}</p> : null}
        </div>
        {actions ? <div className={styles.actions}>{actions}</div> : null}
      </div>
      {children}
    </section>
  );
}

/** Card is a titled panel of a page. */
export function Card({ title, children, aside }: { title: string; children: ReactNode; aside?: ReactNode }) {
  const id = `card-${title.toLowerCase().replace(/[^a-z0-9]+/g, "-")}`;
  return (
    <section className={styles.card} aria-labelledby={id}>
      <div className={styles.cardHead}>
        <h2 id={id} className={styles.cardTitle}>
          {title}
        </h2>
        {aside}
      </div>
      {children}
    </section>
  );
}
