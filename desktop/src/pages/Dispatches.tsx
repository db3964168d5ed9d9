// Dispatches: the list, newest first, filtered by node, capability, state and creation
// time (all in the address, so a filtered list can be linked; palyrad applies them all),
// page by page; the detail of one (?id=) with its output streaming live (WatchDispatch)
// and its cancellation; a browser dispatch's page, screenshot and blocked requests.
import { useEffect, useMemo, useRef } from "react";
import { Link, useSearchParams } from "react-router";
import { useQuery } from "@connectrpc/connect-query";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { DispatchService, DispatchState, type Dispatch } from "../../../gen/ts/palyra/controlplane/v1/dispatch_pb.js";
import { Card, Page } from "../components/Page.js";
import { ErrorPanel } from "../components/ErrorPanel.js";
import { RelativeTime } from "../components/RelativeTime.js";
import { Badge } from "../components/Badge.js";
import { DispatchStateBadge, dispatchEnded, dispatchStateName } from "../components/DispatchStateBadge.js";
import { CancelDispatch } from "../components/CancelDispatch.js";
import { DispatchOutput, useDispatchWatch } from "../components/DispatchLive.js";
import { BrowserResult } from "../components/BrowserResult.js";
import { prettyJSON } from "../components/prettyJSON.js";
import { usePagedList } from "../components/paging.js";
import { ListBody, Loading, TableHead } from "../components/ListBody.js";
import styles from "./admin.module.css";
import { count } from "../components/plural.js";
import { StateFilter, TextFilter, useAddressFilter, withParam } from "../components/AddressFilter.js";

const PAGE_SIZE = 50;

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
  const { params, filter, draft, edit, apply } = useAddressFilter(["node", "capability", "state", "since"]);
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

  return (
    <Card title="All dispatches">
      <form className={styles.filters} onSubmit={apply} aria-label="Filter dispatches">
        <TextFilter id="f-node" label="Node ID" value={draft.node} onChange={(node) => edit({ node })} placeholder="any node" />
        <TextFilter id="f-capability" label="Capability" value={draft.capability} onChange={(capability) => edit({ capability })} placeholder="any, e.g. shell.execute" />
        <StateFilter id="f-state" value={draft.state} onChange={(state) => edit({ state })} states={DispatchState} name={dispatchStateName} />
        <div className="field">
          <label htmlFor="f-since">Created</label>
          <select id="f-since" value={draft.since} onChange={(e) => edit({ since: e.target.value })}>
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
  return (
    <table className="table">
      <caption className="visually-hidden">Dispatches, newest first</caption>
      <TableHead columns={["Dispatch", "Capability", "Node", "State", "Created", "By"]} />
      <tbody>
        {rows.map((d) => (
          <tr key={d.id} className={d.id === selected ? styles.selected : undefined}>
            <td>
              <Link to={withParam(params, "id", d.id)} aria-current={d.id === selected ? "true" : undefined}>
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

function DispatchDetail({ id, onClose }: { id: string; onClose: () => void }) {
  // GetDispatch names a missing or malformed id clearly; the watch does the rest.
  const got = useQuery(DispatchService.method.getDispatch, { id }, { refetchInterval: false });
  const watch = useDispatchWatch(id);
  const d = watch.dispatch ?? got.data?.dispatch;
  const heading = useRef<HTMLDivElement>(null);
  useEffect(() => {
    // Braced: scrollIntoView returns a promise in newer browsers, not a cleanup.
    heading.current?.scrollIntoView({ block: "nearest" });
  }, [id]);

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
                  {count(watch.received > d.outputBytes ? watch.received : d.outputBytes, "bytes")} (cap {String(d.maxOutputBytes)})
                  {d.outputTruncated ? <> <Badge tone="warn">truncated at the cap</Badge></> : null}
                  {d.outputLost ? <> <Badge tone="warn">partly lost</Badge> {d.outputLostReason}</> : null}
                </dd>
              </div>
            </dl>
            <div>
              <h3 className="field-hint">Input</h3>
              <pre className={styles.pre} tabIndex={0}>{prettyJSON(d.inputJson || "{}")}</pre>
            </div>
            <BrowserResult id={d.id} capability={d.capability} resultJson={d.resultJson} />
            {d.resultJson ? (
              <div>
                <h3 className="field-hint">Result</h3>
                <pre className={styles.pre} tabIndex={0}>{prettyJSON(d.resultJson)}</pre>
              </div>
            ) : null}
            <div>
              <h3 className="field-hint">
                Output {watch.error ? "(stream broken)" : watch.watching ? (dispatchEnded(d.state) ? "" : "(live)") : "(complete)"}
              </h3>
              <DispatchOutput watch={watch} />
            </div>
            {dispatchEnded(d.state) ? null : (
              <div>
                <CancelDispatch dispatch={d} />
              </div>
            )}
          </div>
        )}
      </Card>
    </div>
  );
}
