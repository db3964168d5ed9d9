// The app shell: a skip link, the navigation (every page of the registry the principal
// may see, grouped by section), who is signed in, sign-out, and the page's main region.
import type { ReactNode } from "react";
import { NavLink } from "react-router";
import { Role } from "../../../gen/ts/palyra/access/v1/access_pb.js";
import { useSession } from "../session.js";
import { pages, type PageSpec } from "../pages/registry.js";
import styles from "./Shell.module.css";

const sections: PageSpec["section"][] = ["Operate", "Access", "Configure", "Compat"];

export function Shell({ children }: { children: ReactNode }) {
  const { state, signOut } = useSession();
  if (state.kind !== "signedIn") return null;
  const principal = state.session.principal;
  const may = (p: PageSpec) => !p.permission || principal?.permissions.includes(p.permission);
  return (
    <div className={styles.layout}>
      <a className={styles.skip} href="#main">
        Skip to content
      </a>
      <header className={styles.header}>
        <span className={styles.brand}>
          <img src="/icons/icon.svg" alt="" width={28} height={28} />
          Palyra
        </span>
        <span className={styles.who}>
          Signed in as <strong>{principal?.user || principal?.id}</strong>
          {principal?.role ? <span className={styles.role}> · role {roleName(principal.role)}</span> : null}
        </span>
        <button type="button" className="button" onClick={() => void signOut()}>
          Sign out
        </button>
      </header>
      <nav className={styles.nav} aria-label="Console">
        {sections.map((section) => {
          const visible = pages.filter((p) => p.section === section && may(p));
          if (visible.length === 0) return null;
          return (
            <div key={section} className={styles.section}>
              <h2 className={styles.sectionTitle} id={`nav-${section}`}>
                {section}
              </h2>
              <ul aria-labelledby={`nav-${section}`}>
                {visible.map((p) => (
                  <li key={p.path}>
                    <NavLink to={p.path} end className={({ isActive }) => (isActive ? `${styles.link} ${styles.active}` : styles.link)}>
                      {p.title}
                    </NavLink>
                  </li>
                ))}
              </ul>
            </div>
          );
        })}
      </nav>
      <main id="main" className={styles.main} tabIndex={-1}>
        {children}
      </main>
    </div>
  );
}

/** roleName turns Role.ADMIN into "admin". */
function roleName(role: Role): string {
  return (Role[role] ?? `role ${role}`).toLowerCase();
}
