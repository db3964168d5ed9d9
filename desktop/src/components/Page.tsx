// Page is the frame of every page: its heading, an optional description and actions,
// and the document title. A page reached by navigation (not the first load) moves the
// focus to its heading, so that keyboard and screen reader users land on the new page.
import { useEffect, useRef, type ReactNode } from "react";
import { useLocation } from "react-router";
import styles from "./Page.module.css";

export function Page({ title, description, actions, children }: { title: string; description?: ReactNode; actions?: ReactNode; children?: ReactNode }) {
  const heading = useRef<HTMLHeadingElement>(null);
  const { key } = useLocation();
  useEffect(() => {
    document.title = `${title} · Palyra console`;
  }, [title]);
  useEffect(() => {
    if (key !== "default") heading.current?.focus(); // "default": the first page loaded
  }, [key]);
  return (
    <section className={styles.page} aria-labelledby="page-title">
      <div className={styles.head}>
        <div>
          <h1 id="page-title" ref={heading} tabIndex={-1} className={styles.title}>
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
