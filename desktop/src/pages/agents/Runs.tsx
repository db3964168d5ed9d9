// Runs: the runs of the agents, newest first, filtered by agent and state (both in the
// address), page by page; and one run (?id=) with its live timeline (WatchRun): each
// model call with its tokens, each tool call with its node, input, outcome, dispatch
// (linked to the Dispatches page) and approval (a browser call's page and screenshot
// shown), and the answer; cancelling it asks first.
import { useEffect, useMemo, useState } from "react";
import { Link, useSearchParams } from "react-router";
import { createClient } from "@connectrpc/connect";
import { createConnectQueryKey, useMutation, useQuery, useTransport } from "@connectrpc/connect-query";
import { useQueryClient } from "@tanstack/react-query";
import { AgentService, RunState, RunStepKind, type Run, type RunStep } from "../../../../gen/ts/palyra/agents/v1/agents_pb.js";
import { usePermission, useSession } from "../../session.js";
import { Card, Page } from "../../components/Page.js";
import { ErrorPanel } from "../../components/ErrorPanel.js";
import { RelativeTime } from "../../components/RelativeTime.js";
import { Badge } from "../../components/Badge.js";
import { Confirm } from "../../components/Dialog.js";
import { usePagedList } from "../../components/paging.js";
import { ListBody, Loading, TableHead } from "../../components/ListBody.js";
import { prettyJSON } from "../../components/prettyJSON.js";
import { followWatch } from "../../components/followWatch.js";
import { StateFilter, TextFilter, useAddressFilter, withParam } from "../../components/AddressFilter.js";
import { count } from "../../components/plural.js";
import { NodeName } from "../../components/NodeName.js";
import { OutcomeBadge, RunStateBadge, runEnded, runStateName } from "./runParts.js";
import { BrowserResult } from "../../components/BrowserResult.js";
import admin from "../admin.module.css";
import styles from "./agents.module.css";

const PAGE_SIZE = 50;

export default function Runs() {
  const [params, setParams] = useSearchParams();
  const id = params.get("id") ?? "";
  return (
    <Page title="Runs" description={<>Runs of the <Link to="/agents">agents</Link>, newest first.</>}>
      {id ? <RunDetail key={id} id={id} onClose={() => setParams((p) => (p.delete("id"), p))} /> : null}
      <RunList />
    </Page>
  );
}

function RunList() {
  const { params, filter, draft, edit, apply } = useAddressFilter(["agent", "state"]);
  const state = RunState[filter.state as keyof typeof RunState] ?? RunState.UNSPECIFIED;
  const list = usePagedList(AgentService.method.listRuns, { agentName: filter.agent, state, pageSize: PAGE_SIZE }, (p) => p.runs, { refetchInterval: 5_000 });
  const selected = params.get("id") ?? "";
  return (
    <Card title="All runs">
      <form className={admin.filters} onSubmit={apply} aria-label="Filter runs">
        <TextFilter id="runs-agent" label="Agent" value={draft.agent} onChange={(agent) => edit({ agent })} placeholder="any agent" />
        <StateFilter id="runs-state" value={draft.state} onChange={(state) => edit({ state })} states={RunState} name={runStateName} />
        <button type="submit" className="button">
          Apply filters
        </button>
      </form>
      <ListBody list={list} noun="runs">
        {(rows) => (
          <table className="table">
            <caption className="visually-hidden">Runs, newest first</caption>
            <TableHead columns={["Run", "Agent", "State", "Started", "Steps", "Tokens", "By"]} />
            <tbody>
              {rows.map((r) => (
                <tr key={r.id} className={r.id === selected ? admin.selected : undefined}>
                  <td>
                    <Link to={withParam(params, "id", r.id)} aria-current={r.id === selected ? "true" : undefined}>
                      <code>{r.id}</code>
                    </Link>
                  </td>
                  <td>
                    <Link to={`/agents?agent=${encodeURIComponent(r.agentName)}`}>{r.agentName}</Link>{" "}
                    <span className={admin.muted}>rev. {String(r.agentRevision)}</span>
                  </td>
                  <td>
                    <RunStateBadge state={r.state} />
                    {r.cancelTime && !runEnded(r.state) ? <> <Badge tone="warn">cancelling</Badge></> : null}
                    {r.reason ? <div className={admin.muted}>{r.reason}</div> : null}
                  </td>
                  <td>
                    <RelativeTime value={r.createTime} />
                  </td>
                  <td>
                    {count(r.modelCalls, "model calls")}, {count(r.toolCalls, "tool calls")}
                  </td>
                  <td>{String(r.promptTokens + r.completionTokens)}</td>
                  <td>{r.startedBy}</td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </ListBody>
    </Card>
  );
}

/** useRunWatch follows a run with WatchRun: the run and its steps (by seq) as they
 * change; a stream broken before the run ends is opened again (it starts over with the
 * steps so far), with backoff, until followWatch gives up and its error is shown. */
function useRunWatch(id: string) {
  const transport = useTransport();
  const client = useMemo(() => createClient(AgentService, transport), [transport]);
  const [run, setRun] = useState<Run>();
  const [steps, setSteps] = useState<Map<number, RunStep>>(new Map());
  const [error, setError] = useState<unknown>();
  const [watching, setWatching] = useState(true);
  useEffect(() => {
    const abort = new AbortController();
    let ended = false;
    void followWatch(abort.signal, "run", () => ended, async (received) => {
      for await (const ev of client.watchRun({ id }, { signal: abort.signal })) {
        received();
        setError(undefined);
        if (ev.event.case === "run") {
          ended = runEnded(ev.event.value.state);
          setRun(ev.event.value);
        } else if (ev.event.case === "step") {
          const s = ev.event.value;
          setSteps((prev) => new Map(prev).set(s.seq, s));
        }
      }
    }).then((err) => {
      if (abort.signal.aborted) return;
      if (err) setError(err);
      setWatching(false);
    });
    return () => abort.abort();
  }, [client, id]);
  const ordered = [...steps.values()].sort((a, b) => a.seq - b.seq);
  return { run, steps: ordered, error, watching };
}

function RunDetail({ id, onClose }: { id: string; onClose: () => void }) {
  // GetRun names a missing or malformed id clearly; the watch does the rest.
  const got = useQuery(AgentService.method.getRun, { id }, { refetchInterval: false });
  const watch = useRunWatch(id);
  // The list below follows the state of the run shown at once, not at its next poll.
  const queryClient = useQueryClient();
  const watched = watch.run?.state;
  useEffect(() => {
    if (watched !== undefined) void queryClient.invalidateQueries({ queryKey: createConnectQueryKey({ schema: AgentService.method.listRuns, cardinality: undefined }) });
  }, [watched, queryClient]);
  const run = watch.run ?? got.data?.run;
  const steps = watch.steps.length > 0 ? watch.steps : (got.data?.steps ?? []);
  const close = (
    <button type="button" className="button button-small" onClick={onClose}>
      Close
    </button>
  );
  return (
    <Card title={`Run ${id}`} aside={close}>
      {got.error ? (
        <ErrorPanel error={got.error} />
      ) : !run ? (
        <Loading />
      ) : (
        <div className={admin.stack}>
          <RunFacts run={run} />
          {run.input.length > 0 ? (
            <div>
              <h3 className="field-hint">Input</h3>
              {run.input.map((m, i) => (
                <p key={i} className={styles.answer}>
                  <strong>{m.role}:</strong> {m.content}
                </p>
              ))}
            </div>
          ) : null}
          <div>
            <h3 className="field-hint">
              Timeline {watch.error ? "(stream broken)" : watch.watching && !runEnded(run.state) ? "(live)" : ""}
            </h3>
            {watch.error ? <ErrorPanel error={watch.error} title="The run's stream broke" /> : null}
            <Timeline steps={steps} />
          </div>
          {runEnded(run.state) ? null : <CancelRun run={run} />}
        </div>
      )}
    </Card>
  );
}

function RunFacts({ run }: { run: Run }) {
  return (
    <dl className={admin.facts}>
      <div>
        <dt>State</dt>
        <dd aria-live="polite" aria-label="Run state">
          <RunStateBadge state={run.state} />
          {run.cancelTime && !runEnded(run.state) ? <> cancellation asked <RelativeTime value={run.cancelTime} /></> : null}
          {run.reason ? <span className={run.state === RunState.FAILED ? admin.error : undefined}> {run.reason}</span> : null}
        </dd>
      </div>
      <div>
        <dt>Agent</dt>
        <dd>
          <Link to={`/agents?agent=${encodeURIComponent(run.agentName)}`}>{run.agentName}</Link> at revision {String(run.agentRevision)}, model{" "}
          <code>{run.agent?.model}</code>
        </dd>
      </div>
      <div>
        <dt>Started</dt>
        <dd>
          <RelativeTime value={run.createTime} /> by {run.startedBy}
          {run.replicaId ? <> on replica <code>{run.replicaId}</code></> : null}
        </dd>
      </div>
      <div>
        <dt>{runEnded(run.state) ? "Finished" : "Deadline"}</dt>
        <dd>{runEnded(run.state) ? <RelativeTime value={run.finishTime} /> : <RelativeTime value={run.deadline} />}</dd>
      </div>
      <div>
        <dt>Usage</dt>
        <dd>
          {count(run.modelCalls, "model calls")}, {count(run.toolCalls, "tool calls")}; {String(run.promptTokens)} prompt + {String(run.completionTokens)} completion ={" "}
          {count(run.promptTokens + run.completionTokens, "tokens")}
        </dd>
      </div>
    </dl>
  );
}

/** Timeline lists a run's steps. */
export function Timeline({ steps }: { steps: RunStep[] }) {
  if (steps.length === 0) return <p className="field-hint">No steps yet.</p>;
  return (
    <ol className={styles.timeline} aria-label="Timeline">
      {steps.map((s) => (
        <Step key={s.seq} step={s} />
      ))}
    </ol>
  );
}

function Step({ step: s }: { step: RunStep }) {
  const d = s.detail;
  const bad = (d.case === "toolCall" && d.value.error !== "") || (d.case === "modelCall" && d.value.error !== "");
  const tone = !s.finishTime ? styles.stepLive : bad ? styles.stepBad : styles.stepOk;
  const when = (
    <span className="field-hint">
      <RelativeTime value={s.startTime} />
    </span>
  );
  let body;
  switch (d.case) {
    case "modelCall": {
      const m = d.value;
      body = (
        <>
          <div className={styles.stepHead}>
            <strong>Model call</strong> <code>{m.model}</code> {when}
          </div>
          <p className="field-hint">
            {s.finishTime ? (
              <>
                {String(m.promptTokens)} prompt + {String(m.completionTokens)} completion tokens{m.finishReason ? <>, finished: {m.finishReason}</> : null}
              </>
            ) : (
              "Waiting for the model…"
            )}
          </p>
          {m.error ? <p className={admin.error}>{m.error}</p> : null}
        </>
      );
      break;
    }
    case "toolCall": {
      const t = d.value;
      body = (
        <>
          <div className={styles.stepHead}>
            <strong>Tool call</strong> <code>{t.tool}</code>
            {t.capability ? <> runs <code>{t.capability}</code></> : null}
            {t.nodeId ? (
              <>
                {" "}on node <NodeName id={t.nodeId} />
              </>
            ) : null}{" "}
            <OutcomeBadge outcome={t.outcome} /> {when}
          </div>
          <div className={admin.row}>
            {t.dispatchId ? (
              <span>
                Dispatch <Link to={`/dispatches?id=${t.dispatchId}`}><code>{t.dispatchId}</code></Link>
              </span>
            ) : null}
            {t.approvalId ? (
              <span>
                Approval <Link to={`/approvals?id=${t.approvalId}`}><code>{t.approvalId}</code></Link>
              </span>
            ) : null}
          </div>
          <details open={!s.finishTime}>
            <summary>Input</summary>
            <pre className={admin.pre} tabIndex={0}>{prettyJSON(t.inputJson || "{}")}</pre>
          </details>
          {t.dispatchId && t.resultJson ? <BrowserResult id={t.dispatchId} capability={t.capability} resultJson={t.resultJson} /> : null}
          {t.resultJson ? (
            <details>
              <summary>Result</summary>
              <pre className={admin.pre} tabIndex={0}>{prettyJSON(t.resultJson)}</pre>
            </details>
          ) : null}
          {t.error ? <p className={admin.error}>{t.error}</p> : null}
        </>
      );
      break;
    }
    case "answer":
      body = (
        <>
          <div className={styles.stepHead}>
            <strong>Answer</strong> {when}
          </div>
          <p className={styles.answer} aria-label="Answer">
            {d.value.text}
          </p>
        </>
      );
      break;
    default:
      body = (
        <div className={styles.stepHead}>
          <strong>{RunStepKind[s.kind]?.toLowerCase() ?? "step"}</strong> {when}
        </div>
      );
  }
  return (
    <li className={`${styles.step} ${tone}`} aria-label={`Step ${s.seq}`}>
      {body}
    </li>
  );
}

/** CancelRun cancels a run after a confirmation; the principal may cancel its own runs
 * with agents.run, another's with agents.write too (palyrad decides). */
function CancelRun({ run }: { run: Run }) {
  const mayRun = usePermission("agents.run");
  const mayWrite = usePermission("agents.write");
  const { state } = useSession();
  const me = state.kind === "signedIn" ? state.session.principal?.id : undefined;
  const [open, setOpen] = useState(false);
  const cancel = useMutation(AgentService.method.cancelRun);
  if (!mayRun || (!mayWrite && me !== undefined && me !== run.startedBy)) return null;
  if (run.cancelTime) return <p className="field-hint">Cancellation asked; the replica running it stops it.</p>;
  return (
    <div>
      <button type="button" className="button button-danger" onClick={() => setOpen(true)}>
        Cancel run
      </button>
      <Confirm title="Cancel this run?" open={open} onClose={() => setOpen(false)} action="Cancel run" reason={{ label: "Reason (recorded)" }} run={(reason) => cancel.mutateAsync({ id: run.id, reason })}>
        <p>
          The run of <strong>{run.agentName}</strong> stops, and its running dispatch is cancelled on its node.
        </p>
      </Confirm>
    </div>
  );
}
