// Every page of the console, in navigation order: the app shell's navigation and the
// router are both built from this table.
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
  /** load returns the page component. */
  load: () => Promise<{ default: ComponentType }>;
}

export const pages: PageSpec[] = [
  { path: "/", title: "Overview", section: "Operate", load: () => import("./Overview.js") },
  { path: "/pairing", title: "Pairing", section: "Operate", permission: "nodes.read", load: () => import("./Pairing.js") },
  { path: "/nodes", title: "Nodes", section: "Operate", permission: "nodes.read", load: () => import("./Nodes.js") },
  { path: "/agents", title: "Agents", section: "Operate", permission: "agents.read", load: () => import("./agents/Agents.js") },
  { path: "/runs", title: "Runs", section: "Operate", permission: "agents.read", load: () => import("./agents/Runs.js") },
  { path: "/dispatches", title: "Dispatches", section: "Operate", permission: "nodes.dispatch", load: () => import("./Dispatches.js") },
  { path: "/approvals", title: "Approvals", section: "Operate", permission: "approvals.read", load: () => import("./Approvals.js") },
  { path: "/access/tokens", title: "API tokens", section: "Access", permission: "tokens.manage", load: () => import("./Tokens.js") },
  { path: "/access/flags", title: "Feature flags", section: "Access", load: () => import("./Flags.js") },
  { path: "/access/audit", title: "Audit log", section: "Access", permission: "audit.read", load: () => import("./Audit.js") },
  { path: "/config", title: "Configuration", section: "Configure", permission: "config.read", load: () => import("./Config.js") },
  { path: "/secrets", title: "Secrets", section: "Configure", permission: "secrets.list", load: () => import("./Secrets.js") },
  { path: "/browser", title: "Browser profiles", section: "Configure", permission: "browser.read", load: () => import("./browser/BrowserProfiles.js") },
  { path: "/compat/models", title: "Models", section: "Compat", permission: "compat.models.read", load: () => import("./compat/Models.js") },
  { path: "/compat/usage", title: "Usage", section: "Compat", permission: "compat.usage.read", load: () => import("./compat/Usage.js") },
  { path: "/compat/playground", title: "Chat playground", section: "Compat", permission: "compat.chat.create", load: () => import("./compat/Playground.js") },
];
