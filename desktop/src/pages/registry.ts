// Every page of the console, in navigation order: the app shell's navigation and the
// router are both built from this table. A page with `built: false` is not built yet
// and shows only its title (the README's console section lists them).
import type { ComponentType } from "react";

/** PageSpec is one page of the console. */
export interface PageSpec {
  /** path is the route, without parameters. */
  path: string;
  /** title names the page in the navigation and its heading. */
  title: string;
  /** section groups the navigation. */
  section: "Operate" | "Access" | "Configure" | "Compat";
  /** permission is needed to see the page at all (the server stays the authority). */
  permission?: string;
  /** load returns the page component; undefined for a page not built yet. */
  load?: () => Promise<{ default: ComponentType }>;
}

export const pages: PageSpec[] = [
  { path: "/", title: "Overview", section: "Operate", load: () => import("./Overview.js") },
  // TODO(issue 14): the pages below are not built yet.
  { path: "/pairing", title: "Pairing", section: "Operate", permission: "nodes.read" },
  { path: "/nodes", title: "Nodes", section: "Operate", permission: "nodes.read" },
  { path: "/dispatches", title: "Dispatches", section: "Operate", permission: "nodes.dispatch" },
  { path: "/access/tokens", title: "API tokens", section: "Access", permission: "tokens.manage" },
  { path: "/access/flags", title: "Feature flags", section: "Access" },
  { path: "/access/audit", title: "Audit log", section: "Access", permission: "audit.read" },
  { path: "/config", title: "Configuration", section: "Configure", permission: "config.read" },
  { path: "/secrets", title: "Secrets", section: "Configure", permission: "secrets.list" },
  { path: "/compat/models", title: "Models", section: "Compat", permission: "compat.models.read", load: () => import("./compat/Models.js") },
  { path: "/compat/usage", title: "Usage", section: "Compat", permission: "compat.usage.read", load: () => import("./compat/Usage.js") },
  { path: "/compat/playground", title: "Chat playground", section: "Compat", permission: "compat.chat.create", load: () => import("./compat/Playground.js") },
];
