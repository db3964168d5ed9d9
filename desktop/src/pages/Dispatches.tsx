// Dispatches: the list, newest first, filtered by node, capability, state and creation
// time (all in the address, so a filtered list can be linked; palyrad applies them all),
// page by page; the detail of one (?id=) with its output streaming live (WatchDispatch)
// and its cancellation.
import { useEffect, useMemo, useRef, useState, type FormEvent } from "react";
import { Link, useSearchParams } from "react-router";
import { createClient, ConnectError, Code } from "@connectrpc/connect";
import { useQueryClient } from "@tanstack/react-query";
import { createConnectQueryKey, useQuery, useTransport } from "@connectrpc/connect-query";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { DispatchService, DispatchState, type Dispatch } from "../../../gen/ts/palyra/controlplane/v1/dispatch_pb.js";
import { OutputStream } from "../../../gen/ts/palyra/node/v1/node_pb.js";
import { usePermission } from "../session.js";
import { Card, Page } from "../components/Page.js";
import { ErrorPanel } from "../components/ErrorPanel.js";
import { RelativeTime } from "../components/RelativeTime.js";
import { Badge } from "../components/Badge.js";
import { DispatchStateBadge, dispatchEnded, dispatchStateName } from "../components/DispatchStateBadge.js";
import { Confirm } from "../components/Dialog.js";
import { usePagedList } from "../components/paging.js";
import { ListBody, Loading, TableHead } from "../components/ListBody.js";
import styles from "./admin.module.css";

const PAGE_SIZE = 50;
/** VIEW_LIMIT is the most output the detail keeps on screen; the rest is trimmed. */
const VIEW_LIMIT = 2 << 20;

const windows: { value: string; label: string; seconds: number }[] = [
  { value: "", label: "Any time", seconds: 0 },
  { value: "1h", label: "Last hour", seconds: 3600 },
  { value: "24h", label: "Last 24 hours", seconds: 24 * 3600 },
  { value: "7d", label: "Last 7 days", seconds: 7 * 24 * 3600 },
];

export default function Dispatches() {
  const [params, setParams] = useSearchParams();
  const id = params.get("id") ?? "";
  return (
    <Page title="Dispatches" description="Capabilities run on nodes, newest first.">
      {id ? <DispatchDetail id={id} onClose={() => setParams((p) => (p.delete("id"), p))} /> : null}
      <DispatchList />
    </Page>
  );
}

function DispatchList() {
  const [params, setParams] = useSearchParams();
  const filter = {
    node: params.get("node") ?? "",
    capability: params.get("capability") ?? "",
    state: params.get("state") ?? "",
    since: params.get("since") ?? "",
  };
  const [draft, setDraft] = useState(filter);
  const span = windows.find((w) => w.value === filter.since) ?? windows[0];
  // The window's start is fixed when the filter is applied, not at every render (a new
  // start would be a new query); the list refreshes within it.
  const applied = params.toString();
  const createTimeAfter = useMemo(
    () => (span.seconds && applied ? timestampFromMs(Date.now() - span.seconds * 1000) : undefined),
    [span.seconds, applied],
  );
  const state = DispatchState[filter.state as keyof typeof DispatchState] ?? DispatchState.UNSPECIFIED;
  const list = usePagedList(
    DispatchService.method.listDispatches,
    { nodeId: filter.node, capability: filter.capability, state, createTimeAfter, pageSize: PAGE_SIZE },
    (page) => page.dispatches,
    { refetchInterval: 10_000 },
  );

  function apply(e: FormEvent) {
    e.preventDefault();
    setParams((p) => {
      for (const [k, v] of Object.entries(draft)) {
        if (v.trim()) p.set(k, v.trim());
        else p.delete(k);
      }
      return p;
    });
  }

  return (
    <Card title="All dispatches">
      <form className={styles.filters} onSubmit={apply} aria-label="Filter dispatches">
        <div className="field">
          <label htmlFor="f-node">Node ID</label>
          <input id="f-node" value={draft.node} onChange={(e) => setDraft({ ...draft, node: e.target.value })} placeholder="any node" spellCheck={false} />
        </div>
        <div className="field">
          <label htmlFor="f-capability">Capability</label>
          <input id="f-capability" value={draft.capability} onChange={(e) => setDraft({ ...draft, capability: e.target.value })} placeholder="any, e.g. shell.execute" spellCheck={false} />
        </div>
        <div className="field">
          <label htmlFor="f-state">State</label>
          <select id="f-state" value={draft.state} onChange={(e) => setDraft({ ...draft, state: e.target.value })}>
            <option value="">Any state</option>
            {Object.values(DispatchState)
              .filter((v): v is DispatchState => typeof v === "number" && v !== DispatchState.UNSPECIFIED)
              .map((v) => (
                <option key={v} value={DispatchState[v]}>
                  {dispatchStateName(v)}
                </option>
              ))}
          </select>
        </div>
        <div className="field">
          <label htmlFor="f-since">Created</label>
          <select id="f-since" value={draft.since} onChange={(e) => setDraft({ ...draft, since: e.target.value })}>
            {windows.map((w) => (
              <option key={w.value} value={w.value}>
                {w.label}
              </option>
            ))}
          </select>
        </div>
        <button type="submit" className="button">
          Apply filters
        </button>
      </form>
      <ListBody list={list} noun="dispatches">
        {(rows) => <DispatchRows rows={rows} selected={params.get("id") ?? ""} />}
      </ListBody>
    </Card>
  );
}

function DispatchRows({ rows, selected }: { rows: Dispatch[]; selected: string }) {
  const [params] = useSearchParams();
  const link = (id: string) => {
    const p = new URLSearchParams(params);
    p.set("id", id);
    return `?${p.toString()}`;
  };
  return (
    <table className="table">
      <caption className="visually-hidden">Dispatches, newest first</caption>
      <TableHead columns={["Dispatch", "Capability", "Node", "State", "Created", "By"]} />
      <tbody>
        {rows.map((d) => (
          <tr key={d.id} className={d.id === selected ? styles.selected : undefined}>
            <td>
              <Link to={link(d.id)} aria-current={d.id === selected ? "true" : undefined}>
                <code>{d.id}</code>
              </Link>
            </td>
            <td>
              <code>{d.capability}</code>
            </td>
            <td>
              <code>{d.nodeId}</code>
            </td>
            <td>
              <DispatchStateBadge state={d.state} />
              {d.cancelTime && !dispatchEnded(d.state) ? <> <Badge tone="warn">cancelling</Badge></> : null}
            </td>
            <td>
              <RelativeTime value={d.createTime} />
            </td>
            <td>{d.createdBy}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

interface Segment {
  stream: OutputStream;
  text: string;
}

/** useWatch follows a dispatch with WatchDispatch: its latest state and its output. A
 * broken stream is reported, and resume() continues it from the last offset. */
function useWatch(id: string) {
  const transport = useTransport();
  const client = useMemo(() => createClient(DispatchService, transport), [transport]);
  const [dispatch, setDispatch] = useState<Dispatch>();
  const [segments, setSegments] = useState<Segment[]>([]);
  const [trimmed, setTrimmed] = useState(false);
  const [error, setError] = useState<unknown>();
  const [ended, setEnded] = useState(false);
  const [attempt, setAttempt] = useState(0);
  const [received, setReceived] = useState(0n);
  const offset = useRef(0n);
  const decoders = useRef(new Map<OutputStream, TextDecoder>());

  useEffect(() => {
    offset.current = 0n;
    setReceived(0n);
    decoders.current = new Map();
    setDispatch(undefined);
    setSegments([]);
    setTrimmed(false);
    setEnded(false);
    setError(undefined);
  }, [id]);

  useEffect(() => {
    const abort = new AbortController();
    setError(undefined);
    (async () => {
      try {
        for await (const ev of client.watchDispatch({ id, fromOffset: offset.current }, { signal: abort.signal })) {
          if (ev.event.case === "dispatch") setDispatch(ev.event.value);
          else if (ev.event.case === "output") {
            const chunk = ev.event.value;
            const end = chunk.offset + BigInt(chunk.data.length);
            if (end <= offset.current) continue; // already shown (a resumed watch)
            const skip = Number(offset.current > chunk.offset ? offset.current - chunk.offset : 0n);
            offset.current = end;
            setReceived(end);
            let decoder = decoders.current.get(chunk.stream);
            if (!decoder) decoders.current.set(chunk.stream, (decoder = new TextDecoder()));
            const text = decoder.decode(chunk.data.subarray(skip), { stream: true });
            setSegments((prev) => {
              const next = prev.length > 0 && prev[prev.length - 1].stream === chunk.stream
                ? [...prev.slice(0, -1), { stream: chunk.stream, text: prev[prev.length - 1].text + text }]
                : [...prev, { stream: chunk.stream, text }];
              let size = next.reduce((n, s) => n + s.text.length, 0);
              while (size > VIEW_LIMIT && next.length > 1) {
                size -= next.shift()!.text.length;
                setTrimmed(true);
              }
              return next;
            });
          }
        }
        if (!abort.signal.aborted) setEnded(true);
      } catch (err) {
        if (abort.signal.aborted || ConnectError.from(err).code === Code.Canceled) return;
        setError(err);
      }
    })();
    return () => abort.abort();
  }, [client, id, attempt]);

  return { dispatch, segments, trimmed, error, ended, received, resume: () => setAttempt((a) => a + 1) };
}

function DispatchDetail({ id, onClose }: { id: string; onClose: () => void }) {
  const mayDispatch = usePermission("nodes.dispatch");
  const queryClient = useQueryClient();
  const transport = useTransport();
  // GetDispatch names a missing or malformed id clearly; the watch does the rest.
  const got = useQuery(DispatchService.method.getDispatch, { id }, { refetchInterval: false });
  const watch = useWatch(id);
  const d = watch.dispatch ?? got.data?.dispatch;
  const [cancelling, setCancelling] = useState(false);
  const heading = useRef<HTMLDivElement>(null);
  useEffect(() => {
    // Braced: scrollIntoView returns a promise in newer browsers, not a cleanup.
    heading.current?.scrollIntoView({ block: "nearest" });
  }, [id]);

  async function cancel(reason: string) {
    await createClient(DispatchService, transport).cancelDispatch({ id, reason });
    await queryClient.invalidateQueries({ queryKey: createConnectQueryKey({ schema: DispatchService, cardinality: undefined }) });
  }

  const close = (
    <button type="button" className="button button-small" onClick={onClose}>
      Close
    </button>
  );
  return (
    <div ref={heading}>
      <Card title={`Dispatch ${id}`} aside={close}>
        {got.error ? (
          <ErrorPanel error={got.error} />
        ) : !d ? (
          <Loading />
        ) : (
          <div className={styles.stack}>
            <dl className={styles.facts}>
              <div>
                <dt>State</dt>
                <dd aria-live="polite">
                  <DispatchStateBadge state={d.state} />
                  {d.cancelTime && !dispatchEnded(d.state) ? <> cancellation asked <RelativeTime value={d.cancelTime} />, waiting for the node</> : null}
                  {d.error ? <span className={styles.error}> {d.error}</span> : null}
                  {dispatchEnded(d.state) && d.exitCode !== 0 ? <> (exit code {d.exitCode})</> : null}
                </dd>
              </div>
              <div>
                <dt>Capability</dt>
                <dd>
                  <code>{d.capability}</code> on node <Link to={`?node=${d.nodeId}`}><code>{d.nodeId}</code></Link>
                </dd>
              </div>
              <div>
                <dt>Created</dt>
                <dd>
                  <RelativeTime value={d.createTime} /> by {d.createdBy}
                  {d.idempotencyKey ? <> (idempotency key <code>{d.idempotencyKey}</code>)</> : null}
                </dd>
              </div>
              <div>
                <dt>Started</dt>
                <dd>
                  <RelativeTime value={d.startTime} never="not yet" />
                </dd>
              </div>
              <div>
                <dt>{dispatchEnded(d.state) ? "Finished" : "Deadline"}</dt>
                <dd>{dispatchEnded(d.state) ? <RelativeTime value={d.finishTime} /> : <RelativeTime value={d.deadline} />}</dd>
              </div>
              <div>
                <dt>Output</dt>
                <dd>
                  {/* The state events carry the count of their moment; the stream is newer. */}
                  {String(watch.received > d.outputBytes ? watch.received : d.outputBytes)} bytes (cap {String(d.maxOutputBytes)})
                  {d.outputTruncated ? <> <Badge tone="warn">truncated at the cap</Badge></> : null}
                  {d.outputLost ? <> <Badge tone="warn">partly lost</Badge> {d.outputLostReason}</> : null}
                </dd>
              </div>
            </dl>
            <div>
              <h3 className="field-hint">Input</h3>
              <pre className={styles.pre}>{pretty(d.inputJson || "{}")}</pre>
            </div>
            {d.resultJson ? (
              <div>
                <h3 className="field-hint">Result</h3>
                <pre className={styles.pre}>{pretty(d.resultJson)}</pre>
              </div>
            ) : null}
            <div>
              <h3 className="field-hint">
                Output {watch.ended ? "(complete)" : watch.error ? "(stream broken)" : dispatchEnded(d.state) ? "" : "(live)"}
              </h3>
              {watch.trimmed ? <p className="field-hint">Earlier output is trimmed from this view; <code>palyra dispatch get</code> reads all of it.</p> : null}
              <pre className={styles.pre} aria-label="Output" aria-live="off" tabIndex={0} data-testid="dispatch-output">
                {watch.segments.length === 0 ? (
                  <span className={styles.muted}>{watch.ended ? "No output." : "Waiting for output…"}</span>
                ) : (
                  watch.segments.map((s, i) => (
                    <span key={i} className={s.stream === OutputStream.STDERR ? styles.stderr : undefined}>
                      {s.text}
                    </span>
                  ))
                )}
              </pre>
              {watch.error ? (
                <div className={styles.stack}>
                  <ErrorPanel error={watch.error} title="The live output stopped" />
                  <div>
                    <button type="button" className="button" onClick={watch.resume}>
                      Resume the live output
                    </button>
                  </div>
                </div>
              ) : null}
            </div>
            {mayDispatch && !dispatchEnded(d.state) ? (
              <div>
                <button type="button" className="button button-danger" onClick={() => setCancelling(true)} disabled={Boolean(d.cancelTime)}>
                  {d.cancelTime ? "Cancellation asked" : "Cancel dispatch"}
                </button>
              </div>
            ) : null}
          </div>
        )}
      </Card>
      <Confirm
        title="Cancel this dispatch?"
        open={cancelling}
        onClose={() => setCancelling(false)}
        action="Cancel dispatch"
        reason={{ label: "Reason (recorded and sent to the node)" }}
        run={cancel}
      >
        <p>
          A queued dispatch is cancelled at once; a running one is stopped by its node. <code>{d?.capability}</code> on <code>{d?.nodeId}</code>.
        </p>
      </Confirm>
    </div>
  );
}

function pretty(json: string): string {
  try {
    return JSON.stringify(JSON.parse(json), null, 2);
  } catch {
    return json;
  }
}
