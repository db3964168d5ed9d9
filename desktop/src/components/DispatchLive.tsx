// The live view of one dispatch, shared by the Nodes page (the dispatch just invoked) and
// the Dispatches page (the detail of one): useDispatchWatch follows it with WatchDispatch
// (a server stream): its state at every change, its output as it comes (stdout and stderr
// apart, decoded as UTF-8 across chunk boundaries, the oldest trimmed beyond VIEW_LIMIT);
// a stream that breaks before the dispatch ends is resumed from the output offset
// reached, with backoff (followWatch), and when that gives up the error is reported and
// resume() tries again. The output of a browser.* dispatch is binary (its screenshot, a
// PNG): it is counted, not decoded, and BrowserResult shows it as an image with the rest
// of the result. DispatchOutput shows the output; DispatchLive is the compact panel of
// the Nodes page, with the cancellation.
import { useEffect, useMemo, useRef, useState } from "react";
import { createClient } from "@connectrpc/connect";
import { useTransport } from "@connectrpc/connect-query";
import { DispatchService, DispatchState, type Dispatch } from "../../../gen/ts/palyra/controlplane/v1/dispatch_pb.js";
import { OutputStream } from "../../../gen/ts/palyra/node/v1/node_pb.js";
import { DispatchStateBadge, dispatchEnded } from "./DispatchStateBadge.js";
import { ErrorPanel } from "./ErrorPanel.js";
import { RelativeTime } from "./RelativeTime.js";
import { CancelDispatch } from "./CancelDispatch.js";
import { prettyJSON } from "./prettyJSON.js";
import { count } from "./plural.js";
import { followWatch } from "./followWatch.js";
import { BrowserResult, isBrowserDispatch } from "./BrowserResult.js";
import styles from "./DispatchLive.module.css";

/** Segment is a run of output from one stream. */
export interface Segment {
  stream: OutputStream;
  text: string;
}

/** VIEW_LIMIT is the most output characters kept on screen; older output is trimmed. */
const VIEW_LIMIT = 2 << 20;
/** stateSentence says where a dispatch stands, in a sentence. */
const stateSentence: Record<DispatchState, string> = {
  [DispatchState.UNSPECIFIED]: "",
  [DispatchState.QUEUED]: "The dispatch is queued, waiting for its node.",
  [DispatchState.SENT]: "The dispatch was sent to the node.",
  [DispatchState.RUNNING]: "The dispatch is running.",
  [DispatchState.SUCCEEDED]: "The dispatch succeeded.",
  [DispatchState.FAILED]: "The dispatch failed.",
  [DispatchState.TIMED_OUT]: "The dispatch timed out.",
  [DispatchState.CANCELLED]: "The dispatch was cancelled.",
};

/** useDispatchWatch follows dispatch id: its latest state, its output, the output
 * bytes received, whether the output is binary (a browser.* dispatch's, not decoded),
 * whether it is trimmed, whether it is still watching, and the error that stopped it
 * (resume() continues from the offset reached). */
export function useDispatchWatch(id: string) {
  const transport = useTransport();
  const client = useMemo(() => createClient(DispatchService, transport), [transport]);
  const [dispatch, setDispatch] = useState<Dispatch>();
  const [segments, setSegments] = useState<Segment[]>([]);
  const [trimmed, setTrimmed] = useState(false);
  const [received, setReceived] = useState(0n);
  const [error, setError] = useState<unknown>();
  const [watching, setWatching] = useState(true);
  const [generation, setGeneration] = useState(0);
  // Where the output reached, kept across resumes of the same dispatch.
  const progress = useRef({ id, offset: 0n, decoders: new Map<OutputStream, TextDecoder>(), binary: false });

  useEffect(() => {
    progress.current = { id, offset: 0n, decoders: new Map(), binary: false };
    setDispatch(undefined);
    setSegments([]);
    setTrimmed(false);
    setReceived(0n);
  }, [id]);

  useEffect(() => {
    const abort = new AbortController();
    if (progress.current.id !== id) progress.current = { id, offset: 0n, decoders: new Map(), binary: false };
    const at = progress.current;
    let ended = false;
    setError(undefined);
    setWatching(true);
    void followWatch(abort.signal, "dispatch", () => ended, async (received) => {
      for await (const ev of client.watchDispatch({ id, fromOffset: at.offset }, { signal: abort.signal })) {
        received();
        if (ev.event.case === "dispatch") {
          ended = dispatchEnded(ev.event.value.state);
          // The dispatch comes first: its capability says before any output whether it is text.
          at.binary = isBrowserDispatch(ev.event.value.capability);
          setDispatch(ev.event.value);
          continue;
        }
        if (ev.event.case !== "output") continue;
        const chunk = ev.event.value;
        const end = chunk.offset + BigInt(chunk.data.length);
        if (end <= at.offset) continue; // shown before the stream was resumed
        const skip = Number(at.offset > chunk.offset ? at.offset - chunk.offset : 0n);
        at.offset = end;
        setReceived(end);
        if (at.binary) continue;
        let decoder = at.decoders.get(chunk.stream);
        if (!decoder) at.decoders.set(chunk.stream, (decoder = new TextDecoder()));
        const text = decoder.decode(chunk.data.subarray(skip), { stream: true });
        setSegments((prev) => {
          const last = prev[prev.length - 1];
          const next = last?.stream === chunk.stream ? [...prev.slice(0, -1), { stream: last.stream, text: last.text + text }] : [...prev, { stream: chunk.stream, text }];
          let size = next.reduce((n, s) => n + s.text.length, 0);
          while (size > VIEW_LIMIT && next.length > 1) {
            size -= next.shift()!.text.length;
            setTrimmed(true);
          }
          if (size > VIEW_LIMIT) {
            next[0] = { stream: next[0].stream, text: next[0].text.slice(size - VIEW_LIMIT) };
            setTrimmed(true);
          }
          return next;
        });
      }
    }).then((err) => {
      if (abort.signal.aborted) return;
      if (err) setError(err);
      setWatching(false);
    });
    return () => abort.abort();
  }, [client, id, generation]);

  const binary = isBrowserDispatch(dispatch?.capability);
  return { dispatch, segments, trimmed, received, binary, error, watching, resume: () => setGeneration((g) => g + 1) };
}

/** DispatchOutput shows a watch's output (stderr marked), following the newest while it comes. */
export function DispatchOutput({ watch }: { watch: ReturnType<typeof useDispatchWatch> }) {
  const ref = useRef<HTMLPreElement>(null);
  useEffect(() => {
    const el = ref.current;
    if (el) el.scrollTop = el.scrollHeight;
  }, [watch.segments]);
  return (
    <div className={styles.outputBlock}>
      {watch.trimmed ? <p className="field-hint">Earlier output is trimmed from this view; <code>palyra dispatch get</code> reads all of it.</p> : null}
      <pre ref={ref} className={styles.output} role="log" aria-label="Output" aria-live="off" tabIndex={0} data-testid="dispatch-output">
        {watch.binary ? (
          <span className={styles.muted}>
            {watch.received > 0n ? `${count(watch.received, "bytes")} of binary output (a browser dispatch's screenshot, shown with its result), not shown as text.` : watch.watching ? "Waiting for output…" : "No output."}
          </span>
        ) : watch.segments.length === 0 ? (
          <span className={styles.muted}>{watch.watching ? "Waiting for output…" : "No output."}</span>
        ) : (
          watch.segments.map((s, i) => (
            <span key={i} className={s.stream === OutputStream.STDERR ? styles.stderr : undefined}>
              {s.text}
            </span>
          ))
        )}
      </pre>
      {watch.error ? (
        <>
          <ErrorPanel error={watch.error} title="The live output stopped" />
          <div>
            <button type="button" className="button" onClick={watch.resume}>
              Resume the live output
            </button>
          </div>
        </>
      ) : null}
    </div>
  );
}

/** DispatchLive is the compact live view of dispatch id: state, facts, output, result. */
export function DispatchLive({ id }: { id: string }) {
  const watch = useDispatchWatch(id);
  const d = watch.dispatch;
  const running = d !== undefined && !dispatchEnded(d.state);
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
            {d.cancelTime ? <span className="field-hint">cancellation asked for, waiting for the node</span> : null}
            <CancelDispatch dispatch={d} />
          </>
        ) : null}
      </div>
      <p role="status" className={styles.state}>
        {d ? stateSentence[d.state] : ""}
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
      <div>
        <h4 className={styles.subhead}>Output</h4>
        <DispatchOutput watch={watch} />
        {d?.outputTruncated ? <p className="field-hint">The output went beyond the dispatch's cap; the rest was not kept.</p> : null}
        {d?.outputLost ? <p className="field-hint">{d.outputLostReason}</p> : null}
      </div>
      {d ? <BrowserResult id={d.id} capability={d.capability} resultJson={d.resultJson} /> : null}
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
