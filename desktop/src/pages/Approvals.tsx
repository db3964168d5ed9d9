// Approvals: the tool calls of agents' ask tools that wait for a human, live
// (WatchApprovals): each with the agent, the run and its step, the tool, the capability,
// the node (by name, with its id) and the exact input the node would be given; approve
// (this call, or every call of the tool in the run) or deny with a reason the model is
// told, through the Confirm dialog; without approvals.decide the buttons are not shown.
// One approval (?id=, where the Runs timeline links) is shown above the lists, pending or
// decided. Below: every approval, by state and run, paged.
import { useId, useState } from "react";
import { Link, useSearchParams } from "react-router";
import { Code, ConnectError } from "@connectrpc/connect";
import { useMutation, useQuery } from "@connectrpc/connect-query";
import { useQueryClient } from "@tanstack/react-query";
import { ApprovalScope, ApprovalService, ApprovalState, type Approval } from "../../../gen/ts/palyra/agents/v1/agents_pb.js";
import { usePermission } from "../session.js";
import { Card, Page } from "../components/Page.js";
import { ErrorPanel } from "../components/ErrorPanel.js";
import { RelativeTime } from "../components/RelativeTime.js";
import { Badge, type Tone } from "../components/Badge.js";
import { Confirm } from "../components/Dialog.js";
import { LoadMore, usePagedList } from "../components/paging.js";
import { Loading, TableHead } from "../components/ListBody.js";
import { useChangeStream } from "../components/changeStream.js";
import { NodeName, useNode } from "../components/NodeName.js";
import styles from "./Approvals.module.css";

/** FALLBACK is how often the lists are read again while the stream of changes is down;
 * SAFETY, while it is up (it is the authority on changes). */
const FALLBACK = 2_000;
const SAFETY = 30_000;

export default function Approvals() {
  const live = useApprovalChanges();
  const refresh = live ? SAFETY : FALLBACK;
  const [params, setParams] = useSearchParams();
  const id = params.get("id") ?? "";
  return (
    <Page title="Approvals" description="Tool calls of agents that wait for a human: check the exact input, then approve or deny.">
      {id ? <ApprovalDetail key={id} id={id} refresh={refresh} onClose={() => setParams((p) => (p.delete("id"), p))} /> : null}
      <PendingCard refresh={refresh} live={live} />
      <AllCard refresh={refresh} />
    </Page>
  );
}

/** useApprovalChanges follows WatchApprovals: the approval lists are read again at
 * every event, and poll while the stream is down. */
function useApprovalChanges(): boolean {
  return useChangeStream(ApprovalService, (client, signal) => client.watchApprovals({}, { signal }), (m) => m.event.case === "synced");
}

/** pretty indents JSON text, or returns it as it is. */
function pretty(text: string): string {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
}

function PendingCard({ refresh, live }: { refresh: number; live: boolean }) {
  const list = usePagedList(ApprovalService.method.listApprovals, { state: ApprovalState.PENDING, pageSize: 20 }, (p) => p.approvals, { refetchInterval: refresh });
  return (
    <Card title="Waiting for a decision" aside={<span className="field-hint">{live ? <Badge tone="ok">live</Badge> : "Reconnecting: refreshed every 2 s"}</span>}>
      {list.error ? <ErrorPanel error={list.error} /> : null}
      {!list.data && !list.error ? <p role="status" className="field-hint">Loading…</p> : null}
      <div className={styles.approvals} aria-live="polite">
        {list.rows.map((a) => (
          <ApprovalView key={a.id} approval={a} />
        ))}
      </div>
      {list.data ? <LoadMore list={list} noun="pending approvals" /> : null}
    </Card>
  );
}

/** ApprovalDetail is one approval by its id, pending or decided; an unknown id says so. */
function ApprovalDetail({ id, refresh, onClose }: { id: string; refresh: number; onClose: () => void }) {
  const got = useQuery(ApprovalService.method.getApproval, { id }, { refetchInterval: refresh });
  const a = got.data?.approval;
  const close = (
    <button type="button" className="button button-small" onClick={onClose}>
      Close
    </button>
  );
  let body;
  if (got.error && ConnectError.from(got.error).code === Code.NotFound) {
    body = (
      <p role="alert">
        No approval has the id <code>{id}</code>: it was not found. The lists below show the approvals there are.
      </p>
    );
  } else if (got.error) body = <ErrorPanel error={got.error} />;
  else if (!a) body = <Loading />;
  else body = <ApprovalView approval={a} />;
  return (
    <Card title={`Approval ${id}`} aside={close}>
      {body}
    </Card>
  );
}

/** ApprovalView is one approval: what was asked, and its decision or the buttons to
 * decide it while it is pending. */
function ApprovalView({ approval: a }: { approval: Approval }) {
  const mayDecide = usePermission("approvals.decide");
  const id = useId();
  const headingId = `${id}-heading`;
  const pending = a.state === ApprovalState.PENDING;
  return (
    <article className={styles.approval} aria-labelledby={headingId}>
      <div className={styles.head}>
        <h3 id={headingId} className={styles.title}>
          {a.agentName} {pending ? "wants" : "asked"} to run <code>{a.tool}</code>
        </h3>
        <Badge tone={stateTone[a.state]}>{stateName(a.state)}</Badge>
      </div>
      <dl className={styles.facts}>
        <div>
          <dt>Capability</dt>
          <dd>
            <code>{a.capability}</code>
          </dd>
        </div>
        <div>
          <dt>Node</dt>
          <dd>
            <NodeName id={a.nodeId} />
          </dd>
        </div>
        <div>
          <dt>Run</dt>
          <dd>
            <Link to={`/runs?id=${a.runId}`}>
              <code>{a.runId}</code>
            </Link>
            , step {a.stepSeq}
          </dd>
        </div>
        <div>
          <dt>Agent</dt>
          <dd>
            {a.agentName} (<code>{a.agentId}</code>), started by {a.requestedBy}
          </dd>
        </div>
        <div>
          <dt>Asked</dt>
          <dd>
            <RelativeTime value={a.createTime} />
            {pending ? (
              <>
                , expires <RelativeTime value={a.expireTime} />
              </>
            ) : null}
          </dd>
        </div>
        {a.decideTime ? (
          <div>
            <dt>Decided</dt>
            <dd>
              {stateName(a.state)}
              {a.scope === ApprovalScope.RUN ? " for the run" : null} by {a.decidedBy}, <RelativeTime value={a.decideTime} />
              {a.reason ? <>: {a.reason}</> : null}
            </dd>
          </div>
        ) : null}
        <div>
          <dt>Approval</dt>
          <dd>
            <Link to={`/approvals?id=${a.id}`}>
              <code>{a.id}</code>
            </Link>
          </dd>
        </div>
      </dl>
      <div>
        <p className={styles.inputLabel} id={`${id}-input`}>
          {pending ? "Input the node would be given" : "Input"}
        </p>
        <pre className={styles.input} aria-labelledby={`${id}-input`} tabIndex={0}>
          {pretty(a.inputJson)}
        </pre>
      </div>
      {!pending ? null : !mayDecide ? (
        <p className="field-hint">
          You need the permission <code>approvals.decide</code> to approve or deny tool calls.
        </p>
      ) : (
        <Decide approval={a} />
      )}
    </article>
  );
}

/** Decide approves or denies a pending approval through the Confirm dialog. */
function Decide({ approval: a }: { approval: Approval }) {
  const id = useId();
  const queryClient = useQueryClient();
  const [dialog, setDialog] = useState<"none" | "approve" | "deny">("none");
  const [scope, setScope] = useState(ApprovalScope.ONCE);
  const decide = useMutation(ApprovalService.method.decideApproval, { onSuccess: () => queryClient.invalidateQueries() });
  const node = useNode(a.nodeId)?.name ?? a.nodeId;
  return (
    <>
      <div className={styles.row}>
        <button type="button" className="button button-primary" onClick={() => setDialog("approve")}>
          Approve…
        </button>
        <button type="button" className="button" onClick={() => setDialog("deny")}>
          Deny…
        </button>
      </div>
      <Confirm
        title={`Approve ${a.tool} on ${node}?`}
        open={dialog === "approve"}
        onClose={() => setDialog("none")}
        action="Approve"
        reason={{ label: "Reason (optional, recorded)" }}
        run={(reason) => decide.mutateAsync({ id: a.id, approve: true, scope, reason })}
      >
        <p>
          The run dispatches <code>{a.capability}</code> to node <NodeName id={a.nodeId} /> with the input shown.
        </p>
        <fieldset className={styles.scopes}>
          <legend>Approve</legend>
          <label>
            <input type="radio" name={`${id}-scope`} checked={scope === ApprovalScope.ONCE} onChange={() => setScope(ApprovalScope.ONCE)} /> this call only
          </label>
          <label>
            <input type="radio" name={`${id}-scope`} checked={scope === ApprovalScope.RUN} onChange={() => setScope(ApprovalScope.RUN)} /> every call of{" "}
            <code>{a.tool}</code> in this run
          </label>
        </fieldset>
      </Confirm>
      <Confirm
        title={`Deny ${a.tool} on ${node}?`}
        open={dialog === "deny"}
        onClose={() => setDialog("none")}
        action="Deny"
        reason={{ label: "Reason (the model is told)", required: true }}
        run={(reason) => decide.mutateAsync({ id: a.id, approve: false, reason })}
      >
        <p>The call is not run; the model is told it was denied, and why.</p>
      </Confirm>
    </>
  );
}

const stateTone: Record<ApprovalState, Tone> = {
  [ApprovalState.UNSPECIFIED]: "neutral",
  [ApprovalState.PENDING]: "warn",
  [ApprovalState.APPROVED]: "ok",
  [ApprovalState.DENIED]: "danger",
  [ApprovalState.EXPIRED]: "neutral",
};

/** stateName turns ApprovalState.APPROVED into "approved". */
function stateName(s: ApprovalState): string {
  return (ApprovalState[s] ?? String(s)).toLowerCase();
}

/** ULID is the form of a run id the filter sends. */
const ULID = /^[0-9A-HJKMNP-TV-Z]{26}$/;

function AllCard({ refresh }: { refresh: number }) {
  const id = useId();
  const [state, setState] = useState(ApprovalState.UNSPECIFIED);
  const [run, setRun] = useState("");
  const runId = run.trim().toUpperCase();
  const runOK = runId === "" || ULID.test(runId);
  const list = usePagedList(ApprovalService.method.listApprovals, { state, runId: runOK ? runId : "", pageSize: 20 }, (p) => p.approvals, { refetchInterval: refresh });
  return (
    <Card
      title="All approvals"
      aside={
        <span className={styles.filter}>
          <label htmlFor={`${id}-state`}>State</label>
          <select id={`${id}-state`} className={styles.field} value={state} onChange={(e) => setState(Number(e.target.value) as ApprovalState)}>
            <option value={ApprovalState.UNSPECIFIED}>all</option>
            {[ApprovalState.PENDING, ApprovalState.APPROVED, ApprovalState.DENIED, ApprovalState.EXPIRED].map((s) => (
              <option key={s} value={s}>
                {stateName(s)}
              </option>
            ))}
          </select>
          <label htmlFor={`${id}-run`}>Run</label>
          <input id={`${id}-run`} className={`${styles.field} ${styles.mono}`} value={run} onChange={(e) => setRun(e.target.value)} placeholder="run id" spellCheck={false} aria-invalid={!runOK} />
        </span>
      }
    >
      {!runOK ? <p className="field-hint">A run id has 26 letters and digits.</p> : null}
      {list.error ? <ErrorPanel error={list.error} /> : null}
      {list.rows.length > 0 ? (
        <table className="table">
          <caption className="visually-hidden">Approvals, newest first</caption>
          <TableHead columns={["Tool", "State", "Agent", "Node", "Run", "Asked", "Decided"]} />
          <tbody>
            {list.rows.map((a) => (
              <tr key={a.id}>
                <td>
                  <Link to={`?id=${a.id}`} aria-label={`Approval ${a.id}: ${a.tool}`}>
                    <code>{a.tool}</code>
                  </Link>{" "}
                  ({a.capability})
                </td>
                <td>
                  <Badge tone={stateTone[a.state]}>{stateName(a.state)}</Badge>
                  {a.scope === ApprovalScope.RUN ? <span className="field-hint"> for the run</span> : null}
                  {a.reason ? <span className="field-hint"> {a.reason}</span> : null}
                </td>
                <td>{a.agentName}</td>
                <td>
                  <NodeName id={a.nodeId} />
                </td>
                <td>
                  <Link to={`/runs?id=${a.runId}`}>
                    <code>{a.runId}</code>
                  </Link>
                </td>
                <td>
                  <RelativeTime value={a.createTime} />
                </td>
                <td>{a.decideTime ? <>{a.decidedBy}, <RelativeTime value={a.decideTime} /></> : "—"}</td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : null}
      {list.data ? <LoadMore list={list} noun="approvals" /> : null}
    </Card>
  );
}
