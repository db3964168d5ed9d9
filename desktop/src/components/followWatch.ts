// followWatch follows a server stream of one thing's changes until the thing ends,
// shared by the live views of dispatches and runs: a stream that breaks, or closes
// before the end, is opened again with backoff (the watch itself says where it resumes),
// and after RESUMES failures in a row, or an error that resuming cannot mend, that error
// is the result.
import { Code, ConnectError } from "@connectrpc/connect";

/** RESUMES is how often a broken stream is resumed in a row before its error is shown. */
const RESUMES = 5;

/** transient says whether a failed watch is worth resuming. */
export function transient(err: unknown): boolean {
  return [Code.Unavailable, Code.Unknown, Code.DeadlineExceeded, Code.Internal].includes(ConnectError.from(err).code);
}

/** followWatch calls watch until ended() (the thing of what has ended) or signal is
 * aborted, and resolves to undefined then, or to the error that stopped it. watch reads
 * one stream to its close and calls received() at each message, which resets the count
 * of failures in a row. */
export async function followWatch(signal: AbortSignal, what: string, ended: () => boolean, watch: (received: () => void) => Promise<void>): Promise<unknown> {
  for (let attempt = 0; !ended() && !signal.aborted; attempt++) {
    try {
      await watch(() => (attempt = 0));
      if (!ended()) throw new ConnectError(`the watch ended before the ${what} did`, Code.Unavailable);
    } catch (err) {
      if (signal.aborted) return undefined;
      if (!transient(err) || attempt >= RESUMES) return err;
      await new Promise((resolve) => setTimeout(resolve, 500 * 2 ** attempt));
    }
  }
  return undefined;
}
