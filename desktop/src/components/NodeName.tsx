// A node named as the Nodes page names it: its name, linked to the node, with its id
// (and "revoked" when it is); a node that no longer exists, or any while the principal
// may not read nodes, shows as its id alone.
import { Link } from "react-router";
import { useQuery } from "@connectrpc/connect-query";
import { NodeInventoryService, type Node } from "../../../gen/ts/palyra/controlplane/v1/nodes_pb.js";
import { usePermission } from "../session.js";

/** useNode reads node id (GetNode, cached a minute); undefined while it loads, when it
 * does not exist, and without nodes.read. */
export function useNode(id: string): Node | undefined {
  const may = usePermission("nodes.read");
  const q = useQuery(NodeInventoryService.method.getNode, { id }, { enabled: may && id !== "", staleTime: 60_000 });
  return q.data?.node;
}

/** NodeName shows node id by its name, linked to the Nodes page, and its id. */
export function NodeName({ id }: { id: string }) {
  const node = useNode(id);
  if (!node) return <code>{id}</code>;
  return (
    <>
      <Link to={`/nodes?node=${id}`}>{node.name}</Link> <code className="field-hint">{id}</code>
      {node.revoked ? <span className="field-hint"> (revoked)</span> : null}
    </>
  );
}
