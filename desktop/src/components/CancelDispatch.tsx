// CancelDispatch is the "Cancel dispatch" button of a dispatch that has not ended, for
// whoever may dispatch: it asks with the Confirm dialog (with an optional reason, sent
// to the node) and then cancels; a dispatch whose cancellation is asked for says so.
import { useState } from "react";
import { createClient } from "@connectrpc/connect";
import { createConnectQueryKey, useTransport } from "@connectrpc/connect-query";
import { useQueryClient } from "@tanstack/react-query";
import { DispatchService, type Dispatch } from "../../../gen/ts/palyra/controlplane/v1/dispatch_pb.js";
import { usePermission } from "../session.js";
import { dispatchEnded } from "./DispatchStateBadge.js";
import { Confirm } from "./Dialog.js";

export function CancelDispatch({ dispatch: d }: { dispatch: Dispatch }) {
  const may = usePermission("nodes.dispatch");
  const transport = useTransport();
  const queryClient = useQueryClient();
  const [open, setOpen] = useState(false);
  if (!may || dispatchEnded(d.state)) return null;

  async function cancel(reason: string) {
    await createClient(DispatchService, transport).cancelDispatch({ id: d.id, reason });
    await queryClient.invalidateQueries({ queryKey: createConnectQueryKey({ schema: DispatchService, cardinality: undefined }) });
  }

  return (
    <>
      <button type="button" className="button button-danger" onClick={() => setOpen(true)} disabled={Boolean(d.cancelTime)}>
        {d.cancelTime ? "Cancellation asked" : "Cancel dispatch"}
      </button>
      <Confirm title="Cancel this dispatch?" open={open} onClose={() => setOpen(false)} action="Cancel dispatch" reason={{ label: "Reason (recorded and sent to the node)" }} run={cancel}>
        <p>
          A queued dispatch is cancelled at once; a running one is stopped by its node. <code>{d.capability}</code> on <code>{d.nodeId}</code>.
        </p>
      </Confirm>
    </>
  );
}
