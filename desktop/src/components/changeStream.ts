// useChangeStream follows a server stream that announces changes (WatchPairingRequests,
// WatchApprovals) and reads the service's queries again at every message, so that the
// lists a page shows follow every replica's changes. It reconnects with backoff and says
// whether the stream is up; while it is not, the page polls.
import { useEffect, useState } from "react";
import type { DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createConnectQueryKey, useTransport } from "@connectrpc/connect-query";
import { useQueryClient } from "@tanstack/react-query";

/** useChangeStream opens watch(client, signal) on service and returns whether it is
 * live: from the first message for which synced is true (every message, by default). */
export function useChangeStream<S extends DescService, M>(
  service: S,
  watch: (client: Client<S>, signal: AbortSignal) => AsyncIterable<M>,
  synced: (message: M) => boolean = () => true,
): boolean {
  const transport = useTransport();
  const queryClient = useQueryClient();
  const [live, setLive] = useState(false);
  useEffect(() => {
    const client = createClient(service, transport);
    const abort = new AbortController();
    const refetch = () => queryClient.invalidateQueries({ queryKey: createConnectQueryKey({ schema: service, cardinality: undefined }) });
    void (async () => {
      for (let attempt = 0; !abort.signal.aborted; attempt++) {
        try {
          for await (const message of watch(client, abort.signal)) {
            attempt = 0;
            if (synced(message)) setLive(true);
            void refetch();
          }
        } catch (err) {
          if (abort.signal.aborted) return;
          // Without the right or the session, retrying does not help; the lists poll.
          if ([Code.Unauthenticated, Code.PermissionDenied].includes(ConnectError.from(err).code)) {
            setLive(false);
            return;
          }
        }
        setLive(false);
        await new Promise((resolve) => setTimeout(resolve, Math.min(1_000 * 2 ** attempt, 30_000)));
      }
    })();
    return () => abort.abort();
    // watch and synced are the page's constants: the stream is opened once.
  }, [service, transport, queryClient]);
  return live;
}
