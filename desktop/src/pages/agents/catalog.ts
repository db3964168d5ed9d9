// The tool picker's catalog: the capabilities the paired nodes announce
// (NodeInventoryService.ListNodes), one entry per capability with its description, input
// schema and the nodes offering it; and the models an agent may call (CompatService
// ListModels, without the agents themselves).
import { useQuery } from "@connectrpc/connect-query";
import { NodeInventoryService, Presence, type Node } from "../../../../gen/ts/palyra/controlplane/v1/nodes_pb.js";
import { CompatService } from "../../../../gen/ts/palyra/compat/v1/compat_pb.js";
import { usePermission } from "../../session.js";

/** CatalogEntry is one capability and the nodes that announce it. */
export interface CatalogEntry {
  name: string;
  description: string;
  inputSchema: string;
  /** nodes announce it (available or not), newest first. */
  nodes: Node[];
  /** online counts the online nodes that can run it now. */
  online: number;
}

/** NODES_READ is the most nodes the catalog reads (one page of ListNodes). */
const NODES_READ = 500;

/** catalogOf folds nodes into capabilities, by name. */
export function catalogOf(nodes: Node[]): CatalogEntry[] {
  const byName = new Map<string, CatalogEntry>();
  for (const n of nodes) {
    for (const c of n.capabilities) {
      let e = byName.get(c.name);
      if (!e) byName.set(c.name, (e = { name: c.name, description: c.description, inputSchema: c.inputSchema, nodes: [], online: 0 }));
      if (!e.description) e.description = c.description;
      if (!e.inputSchema) e.inputSchema = c.inputSchema;
      e.nodes.push(n);
      if (c.available && n.presence === Presence.ONLINE) e.online++;
    }
  }
  return [...byName.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** useCatalog reads the capabilities of the paired nodes; needs says the permission
 * the principal lacks to read them, if it does. */
export function useCatalog() {
  const may = usePermission("nodes.read");
  const q = useQuery(NodeInventoryService.method.listNodes, { pageSize: NODES_READ }, { enabled: may, refetchInterval: 15_000 });
  const nodes = q.data?.nodes ?? [];
  return { entries: catalogOf(nodes), nodes, error: q.error, loading: may && !q.data && !q.error, needs: may ? undefined : "nodes.read" };
}

/** useModels reads the models an agent may call; agents ("agent:…") are left out. */
export function useModels() {
  const may = usePermission("compat.models.read");
  const q = useQuery(CompatService.method.listModels, {}, { enabled: may });
  return { models: (q.data?.models ?? []).filter((m) => !m.id.startsWith("agent:")), error: q.error, needs: may ? undefined : "compat.models.read" };
}
