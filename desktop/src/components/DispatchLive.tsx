// DispatchLive follows one dispatch with WatchDispatch (a server stream): its state at
// every change, its output as it comes (stdout and stderr apart, decoded as UTF-8
// across chunk boundaries), its result, error and exit code; and cancels it. A stream
// that breaks before the dispatch ends is resumed from the output offset reached.
import { useEffect, useMemo, useRef, useState } from "react";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { useTransport } from "@connectrpc/connect-query";
import { DispatchService, DispatchState, type Dispatch } from "../../../gen/ts/palyra/controlplane/v1/dispatch_pb.js";
import { OutputStream } from "../../../gen/ts/palyra/node/v1/node_pb.js";
import { usePermission } from "../session.js";
import { DispatchStateBadge, dispatchEnded, dispatchStateName } from "./DispatchStateBadge.js";
import { ErrorPanel } from "./ErrorPanel.js";
import { RelativeTime } from "./RelativeTime.js";
import styles from "./DispatchLive.module.css";

/** Segment is a run of output from one stream. */
interface Segment {
  stream: OutputStream;
  text: string;
}

/** MAX_SHOWN is the most output characters the page keeps; the rest is counted. */
const MAX_SHOWN = 2_000_000;
/** RESUMES is how often a broken stream is resumed before the page gives up. */
const RESUMES = 5;

/** useDispatchWatch streams dispatch id. */
export function useDispatchWatch(id: string) {
  const transport = useTransport();
  const client = useMemo(() => createClient(DispatchService, transport), [transport]);
  const [dispatch, setDispatch] = useState<Dispatch>();
  const [segments, setSegments] = useState<Segment[]>([]);
  const [dropped, setDropped] = useState(0);
  const [error, setError] = useState<unknown>();
  const [watching, setWatching] = useState(true);

  useEffect(() => {
    const abort = new AbortController();
    const decoders = new Map<OutputStream, TextDecoder>();
    let offset = 0n;
    let shown = 0;
    let ended = false;
    setDispatch(undefined);
    setSegments([]);
    setDropped(0);
    setError(undefined);
    setWatching(true);
    (async () => {
      for (let attempt = 0; !ended && !abort.signal.aborted; attempt++) {
        try {
          for await (const ev of client.watchDispatch({ id, fromOffset: offset }, { signal: abort.signal })) {
            attempt = 0;
            if (ev.event.case === "dispatch") {
              const d = ev.event.value;
              ended = dispatchEnded(d.state);
              setDispatch(d);
            } else if (ev.event.case === "output") {
              const chunk = ev.event.value;
              offset = chunk.offset + BigInt(chunk.data.length);
              let decoder = decoders.get(chunk.stream);
              if (!decoder) decoders.set(chunk.stream, (decoder = new TextDecoder()));
              const text = decoder.decode(chunk.data, { stream: true });
              if (shown + text.length > MAX_SHOWN) {
                setDropped((n) => n + text.length);
                continue;
              }
              shown += text.length;
              setSegments((prev) => {
                const last = prev[prev.length - 1];
                if (last && last.stream === chunk.stream) return [...prev.slice(0, -1), { stream: last.stream, text: last.text + text }];
                return [...prev, { stream: chunk.stream, text }];
              });
            }
          }
          if (!ended) throw new ConnectError("the watch ended before the dispatch did", Code.Unavailable);
        } catch (err) {
          if (abort.signal.aborted) return;
          const ce = ConnectError.from(err);
          const transient = [Code.Unavailable, Code.Unknown, Code.DeadlineExceeded, Code.Internal].includes(ce.code);
          if (!transient || attempt >= RESUMES) {
            setError(err);
            return;
          }
          await new Promise((resolve) => setTimeout(resolve, 500 * 2 ** attempt));
        }
      }
    })().finally(() => {
      if (!abort.signal.aborted) setWatching(false);
    });
    return () => abort.abort();
  }, [client, id]);

  return { client, dispatch, segments, dropped, error, watching };
}

/** prettyJSON indents a JSON text, or returns it as it is. */
function prettyJSON(text: string): string {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
}

export function DispatchLive({ id }: { id: string }) {
  const { client, dispatch: d, segments, dropped, error, watching } = useDispatchWatch(id);
  const mayDispatch = usePermission("nodes.dispatch");
  const [cancelling, setCancelling] = useState(false);
  const [cancelError, setCancelError] = useState<unknown>();
  const outputRef = useRef<HTMLPreElement>(null);
  const running = d !== undefined && !dispatchEnded(d.state);

  // Keep the newest output in view while it comes.
  useEffect(() => {
    const el = outputRef.current;
    if (el) el.scrollTop = el.scrollHeight;
  }, [segments]);

  async function cancel() {
    setCancelling(true);
    setCancelError(undefined);
    try {
      await client.cancelDispatch({ id, reason: "cancelled in the console" });
    } catch (err) {
      setCancelError(err);
    } finally {
      setCancelling(false);
    }
  }

  return (
    <section className={styles.live} aria-label={`Dispatch ${id}`}>
      <div className={styles.head}>
        <span>
          Dispatch <code>{id}</code>
        </span>
        {d ? <DispatchStateBadge state={d.state} /> : <span role="status" className="field-hint">Connecting…</span>}
        {running ? (
          <>
            <span className={styles.spinner} aria-hidden="true" />
            {d?.cancelTime ? <span className="field-hint">cancellation asked for, waiting for the node</span> : null}
            {mayDispatch ? (
              <button type="button" className="button" onClick={() => void cancel()} disabled={cancelling || d?.cancelTime !== undefined} aria-busy={cancelling}>
                {cancelling ? "Cancelling…" : "Cancel dispatch"}
              </button>
            ) : null}
          </>
        ) : null}
      </div>
      <p role="status" className={styles.state}>
        {d ? `The dispatch is ${dispatchStateName(d.state)}.` : ""}
      </p>
      {d ? (
        <dl className={styles.facts}>
          <div>
            <dt>Capability</dt>
            <dd>
              <code>{d.capability}</code> on <code>{d.nodeId}</code>
            </dd>
          </div>
          <div>
            <dt>Created</dt>
            <dd>
              <RelativeTime value={d.createTime} /> by {d.createdBy}; deadline <RelativeTime value={d.deadline} />
            </dd>
          </div>
          {d.finishTime ? (
            <div>
              <dt>Ended</dt>
              <dd>
                <RelativeTime value={d.finishTime} />
                {d.state !== DispatchState.CANCELLED || d.exitCode !== 0 ? <>, exit code {d.exitCode}</> : null}
              </dd>
            </div>
          ) : null}
          {d.error ? (
            <div>
              <dt>Error</dt>
              <dd className={styles.error}>{d.error}</dd>
            </div>
          ) : null}
        </dl>
      ) : null}
      {cancelError ? <ErrorPanel error={cancelError} title="The dispatch was not cancelled" /> : null}
      {error ? <ErrorPanel error={error} title="Following the dispatch failed" /> : null}
      <div>
        <h4 className={styles.subhead}>Output</h4>
        {segments.length === 0 ? (
          <p className="field-hint">{watching ? "No output yet." : "No output."}</p>
        ) : (
          <pre ref={outputRef} className={styles.output} role="log" aria-label="Output" tabIndex={0}>
            {segments.map((s, i) => (
              <span key={i} className={s.stream === OutputStream.STDERR ? styles.stderr : undefined}>
                {s.text}
              </span>
            ))}
          </pre>
        )}
        {dropped > 0 ? <p className="field-hint">{dropped} more characters not shown here.</p> : null}
        {d?.outputTruncated ? <p className="field-hint">The output went beyond the dispatch's cap; the rest was not kept.</p> : null}
        {d?.outputLost ? <p className="field-hint">{d.outputLostReason}</p> : null}
      </div>
      {d?.resultJson ? (
        <div>
          <h4 className={styles.subhead}>Result</h4>
          <pre className={styles.output} tabIndex={0} aria-label="Result">
            {prettyJSON(d.resultJson)}
          </pre>
        </div>
      ) : null}
    </section>
  );
}
