// Agents: the list (by name, filtered by a label selector in the address, the default
// marked), a new agent (?new), and one agent (?agent=NAME): its definition (a browser
// tool's profile linked to its page) and the warnings palyrad gives about it, editing it
// as a new revision, making it the default and deleting it after a confirmation
// (agents.write; hidden without it, and palyrad decides), and running it on a prompt
// (agents.run): the model's text streams in as it comes with each tool call's start and
// end, and the page then lands on the run's timeline.
import { useEffect, useId, useMemo, useRef, useState, type FormEvent } from "react";
import { Link, useLocation, useNavigate, useSearchParams } from "react-router";
import { createClient } from "@connectrpc/connect";
import { useMutation, useQuery, useTransport } from "@connectrpc/connect-query";
import { AgentService, ToolCallOutcome, type Agent, type Approval, type RunStep } from "../../../../gen/ts/palyra/agents/v1/agents_pb.js";
import { usePermission } from "../../session.js";
import { Card, Page } from "../../components/Page.js";
import { ErrorPanel } from "../../components/ErrorPanel.js";
import { RelativeTime } from "../../components/RelativeTime.js";
import { Badge } from "../../components/Badge.js";
import { Labels } from "../../components/Labels.js";
import { Confirm } from "../../components/Dialog.js";
import { RevisionFacts, SavedNotice, WarningsNote, type SavedState } from "../../components/Revisions.js";
import { usePagedList } from "../../components/paging.js";
import { ListBody, Loading, Needs, TableHead } from "../../components/ListBody.js";
import { count } from "../../components/plural.js";
import { NodeName } from "../../components/NodeName.js";
import { AgentEditor, useInvalidateAgents, type Saved } from "./AgentEditor.js";
import { OutcomeBadge } from "./runParts.js";
import { policyName } from "./spec.js";
import { profileLink } from "../browser/profiles.js";
import admin from "../admin.module.css";
import styles from "./agents.module.css";

export default function Agents() {
  const [params] = useSearchParams();
  const name = params.get("agent");
  if (params.has("new")) return <NewAgent />;
  return name ? <AgentDetail name={name} /> : <AgentList />;
}

/** useLandOnSaved goes to a saved agent's page, telling it what the save answered. */
function useLandOnSaved() {
  const navigate = useNavigate();
  return (s: Saved) =>
    navigate(`/agents?agent=${encodeURIComponent(s.agent.spec?.name ?? "")}`, {
      state: { saved: { revision: String(s.agent.revision), warnings: s.warnings, created: s.created } } satisfies SavedState,
    });
}

function NewAgent() {
  const may = usePermission("agents.write");
  const land = useLandOnSaved();
  const navigate = useNavigate();
  return (
    <Page title="New agent" description={<><Link to="/agents">All agents</Link></>}>
      {may ? <AgentEditor onSaved={land} onCancel={() => navigate("/agents")} /> : <Needs permission="agents.write" what="Creating agents needs" />}
    </Page>
  );
}

function AgentList() {
  const id = useId();
  const may = usePermission("agents.write");
  const [params, setParams] = useSearchParams();
  const selector = params.get("selector") ?? "";
  const [draft, setDraft] = useState(selector);
  const list = usePagedList(AgentService.method.listAgents, { labelSelector: selector, pageSize: 50 }, (p) => p.agents);
  function apply(e: FormEvent) {
    e.preventDefault();
    setParams((p) => (draft.trim() ? p.set("selector", draft.trim()) : p.delete("selector"), p));
  }
  return (
    <Page
      title="Agents"
      description={<>Named models with instructions whose tools are the nodes' capabilities. Their runs are on the <Link to="/runs">Runs</Link> page.</>}
      actions={
        may ? (
          <Link className="button button-primary" to="/agents?new">
            New agent
          </Link>
        ) : null
      }
    >
      <Card title="All agents">
        <form className={admin.filters} onSubmit={apply} aria-label="Filter agents">
          <div className="field">
            <label htmlFor={`${id}-selector`}>Label selector</label>
            <input id={`${id}-selector`} value={draft} onChange={(e) => setDraft(e.target.value)} placeholder="e.g. team=ops" spellCheck={false} />
          </div>
          <button type="submit" className="button">
            Filter
          </button>
        </form>
        {!may ? <p className="field-hint">Creating and changing agents needs the permission <code>agents.write</code>.</p> : null}
        <ListBody list={list} noun="agents">
          {(rows) => (
            <table className="table">
              <caption className="visually-hidden">Agents, by name</caption>
              <TableHead columns={["Agent", "Model", "Tools", "Labels", "Revision"]} />
              <tbody>
                {rows.map((a) => (
                  <tr key={a.id}>
                    <td>
                      <Link to={`/agents?agent=${encodeURIComponent(a.spec?.name ?? "")}`}>{a.spec?.name}</Link>
                      {a.isDefault ? <> <Badge tone="ok">default</Badge></> : null}
                      {a.spec?.description ? <div className={admin.muted}>{a.spec.description}</div> : null}
                    </td>
                    <td>
                      <code>{a.spec?.model}</code>
                    </td>
                    <td>{a.spec?.tools.map((t) => t.name).join(", ") || "none"}</td>
                    <td>
                      <Labels labels={a.spec?.labels ?? {}} none="none" />
                    </td>
                    <td>
                      {String(a.revision)}, <RelativeTime value={a.updateTime} />
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </ListBody>
      </Card>
    </Page>
  );
}

function AgentDetail({ name }: { name: string }) {
  const mayWrite = usePermission("agents.write");
  const mayRun = usePermission("agents.run");
  const mayBrowser = usePermission("browser.read");
  const location = useLocation();
  const navigate = useNavigate();
  const land = useLandOnSaved();
  const invalidate = useInvalidateAgents();
  const got = useQuery(AgentService.method.getAgent, { agent: { case: "name", value: name } });
  const [editing, setEditing] = useState(false);
  const [confirm, setConfirm] = useState<"none" | "delete" | "default">("none");
  const remove = useMutation(AgentService.method.deleteAgent);
  const setDefault = useMutation(AgentService.method.setDefaultAgent);
  const saved = (location.state as SavedState | null)?.saved;
  const a = got.data?.agent;
  const spec = a?.spec;
  useEffect(() => setEditing(false), [name]);

  return (
    <Page
      title={`Agent ${name}`}
      description={
        <>
          <Link to="/agents">All agents</Link> · <Link to={`/runs?agent=${encodeURIComponent(name)}`}>Runs of {name}</Link>
        </>
      }
      actions={
        a && mayWrite && !editing ? (
          <>
            <button type="button" className="button" onClick={() => setEditing(true)}>
              Edit
            </button>
            {a.isDefault ? null : (
              <button type="button" className="button" onClick={() => setConfirm("default")}>
                Make default…
              </button>
            )}
            <button type="button" className="button button-danger" onClick={() => setConfirm("delete")}>
              Delete…
            </button>
          </>
        ) : null
      }
    >
      {saved && a && String(a.revision) === saved.revision ? <SavedNotice saved={saved} created="Agent created" /> : null}
      {got.error ? <ErrorPanel error={got.error} title="The agent could not be read" /> : null}
      {!a && !got.error ? <Loading /> : null}
      {a && editing ? (
        <AgentEditor
          agent={a}
          onSaved={(s) => {
            setEditing(false);
            land(s);
          }}
          onCancel={() => setEditing(false)}
        />
      ) : null}
      {a && spec && !editing ? (
        <>
          {got.data && !saved ? <WarningsNote warnings={got.data.warnings} /> : null}
          <Card title="Definition" aside={a.isDefault ? <Badge tone="ok">default</Badge> : undefined}>
            <dl className={admin.facts}>
              <div>
                <dt>Model</dt>
                <dd>
                  <code>{spec.model}</code>; served as <code>agent:{spec.name}</code>
                  {a.isDefault ? <> and <code>agent:</code></> : null}
                </dd>
              </div>
              <div>
                <dt>Description</dt>
                <dd>{spec.description || <span className={admin.muted}>none</span>}</dd>
              </div>
              <div>
                <dt>Limits</dt>
                <dd>
                  {count(spec.limits?.maxSteps ?? 0, "steps")}, {count(spec.limits?.maxToolCalls ?? 0, "tool calls")},{" "}
                  {spec.limits?.maxTokens ? count(spec.limits.maxTokens, "tokens") : "no token limit"}, deadline {String(spec.limits?.deadline?.seconds ?? 0n)} s
                </dd>
              </div>
              <RevisionFacts labels={spec.labels} of={a} />
            </dl>
            <h3 className={`field-hint ${styles.subhead}`}>System prompt</h3>
            <pre className={admin.pre}>{spec.systemPrompt || "(none)"}</pre>
          </Card>
          <Card title="Tools">
            {spec.tools.length === 0 ? (
              <p className="field-hint">No tools: the model only answers.</p>
            ) : (
              <table className="table">
                <caption className="visually-hidden">Tools of the agent</caption>
                <TableHead columns={["Function", "Capability", "Runs on", "Policy", "Description"]} />
                <tbody>
                  {spec.tools.map((t) => (
                    <tr key={t.name}>
                      <td>
                        <code>{t.name}</code>
                      </td>
                      <td>
                        <code>{t.capability}</code>
                        {t.browserProfile ? (
                          <div>
                            profile {mayBrowser ? <Link to={profileLink(t.browserProfile)}>{t.browserProfile}</Link> : <code>{t.browserProfile}</code>}
                          </div>
                        ) : null}
                      </td>
                      <td>
                        {t.target.case === "nodeId" ? (
                          <>
                            node <Link to={`/nodes?node=${t.target.value}`}><code>{t.target.value}</code></Link>
                          </>
                        ) : t.target.case === "nodeSelector" && t.target.value ? (
                          <>
                            nodes matching <code>{t.target.value}</code>
                          </>
                        ) : (
                          "any node offering it"
                        )}
                      </td>
                      <td>
                        <Badge tone={policyName(t.policy) === "auto" ? "neutral" : "warn"}>{policyName(t.policy)}</Badge>
                      </td>
                      <td>{t.description || <span className={admin.muted}>the capability's own</span>}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            )}
          </Card>
          {mayRun ? <RunAgent agent={a} /> : <Card title="Run"><Needs permission="agents.run" what="Running agents needs" /></Card>}
        </>
      ) : null}
      <Confirm
        title={`Delete agent ${name}?`}
        open={confirm === "delete"}
        onClose={() => setConfirm("none")}
        action="Delete agent"
        run={async () => {
          await remove.mutateAsync({ agent: { case: "id", value: a!.id }, expectedRevision: a!.revision });
          await invalidate();
          navigate("/agents");
        }}
      >
        <p>
          <code>agent:{name}</code> stops being served{a?.isDefault ? ", and no agent is the default any more" : ""}. Its runs stay, with the definition they ran.
          Refused if the agent changed since revision {String(a?.revision)}.
        </p>
      </Confirm>
      <Confirm
        title={`Make ${name} the default agent?`}
        open={confirm === "default"}
        onClose={() => setConfirm("none")}
        action="Make default"
        run={async () => {
          await setDefault.mutateAsync({ agent: { case: "id", value: a!.id } });
          await invalidate();
        }}
      >
        <p>
          The model <code>agent:</code> then runs {name}, instead of the agent that is the default now, if any.
        </p>
      </Confirm>
    </Page>
  );
}

/** ToolEvent is a tool call seen in the stream. */
interface ToolEvent {
  step: RunStep;
  /** approval is the one the call waits for, which names its node before the step does. */
  approval?: Approval;
}

function RunAgent({ agent }: { agent: Agent }) {
  const id = useId();
  const transport = useTransport();
  const client = useMemo(() => createClient(AgentService, transport), [transport]);
  const navigate = useNavigate();
  const [prompt, setPrompt] = useState("");
  const [runId, setRunId] = useState<string>();
  const [text, setText] = useState("");
  const [tools, setTools] = useState<Map<number, ToolEvent>>(new Map());
  const [error, setError] = useState<unknown>();
  const [busy, setBusy] = useState(false);
  const abort = useRef<AbortController>(undefined);
  useEffect(() => () => abort.current?.abort(), []);

  async function submit(e: FormEvent) {
    e.preventDefault();
    abort.current?.abort();
    const ac = (abort.current = new AbortController());
    setBusy(true);
    setError(undefined);
    setRunId(undefined);
    setText("");
    setTools(new Map());
    let lastSeq = 0;
    try {
      for await (const ev of client.run({ agent: { case: "id", value: agent.id }, prompt }, { signal: ac.signal })) {
        const e = ev.event;
        switch (e.case) {
          case "started":
            setRunId(e.value.id);
            break;
          case "textDelta":
            // The text of the latest model call: an earlier call's text led to tool calls.
            if (e.value.seq !== lastSeq) {
              lastSeq = e.value.seq;
              setText(e.value.text);
            } else setText((t) => t + e.value.text);
            break;
          case "toolCallStarted":
          case "toolCallFinished": {
            const step = e.value;
            setTools((m) => new Map(m).set(step.seq, { ...m.get(step.seq), step }));
            break;
          }
          case "approvalPending": {
            const ap = e.value;
            setTools((m) => {
              const cur = m.get(ap.stepSeq);
              return cur ? new Map(m).set(ap.stepSeq, { ...cur, approval: ap }) : m;
            });
            break;
          }
          case "finished":
            navigate(`/runs?id=${e.value.id}`);
            return;
        }
      }
    } catch (err) {
      if (!ac.signal.aborted) setError(err);
    } finally {
      if (!ac.signal.aborted) setBusy(false);
    }
  }

  return (
    <Card title="Run">
      <form onSubmit={submit} className={admin.stack} aria-label={`Run ${agent.spec?.name}`}>
        <div className="field">
          <label htmlFor={`${id}-prompt`}>Prompt</label>
          <textarea id={`${id}-prompt`} value={prompt} onChange={(e) => setPrompt(e.target.value)} rows={3} required />
        </div>
        <div className={admin.row}>
          <button type="submit" className="button button-primary" disabled={busy || !prompt.trim()} aria-busy={busy}>
            {busy ? "Running…" : "Run"}
          </button>
          {runId ? (
            <span className="field-hint">
              Run <Link to={`/runs?id=${runId}`}><code>{runId}</code></Link>: it goes on if you leave this page; its timeline opens when it ends.
            </span>
          ) : null}
        </div>
      </form>
      {error ? <ErrorPanel error={error} title="The run failed to start or its stream broke" /> : null}
      {runId ? (
        <div className={admin.stack} aria-live="polite">
          {[...tools.values()].map(({ step, approval }) => {
            if (step.detail.case !== "toolCall") return null;
            const call = step.detail.value;
            const nodeId = call.nodeId || approval?.nodeId;
            return (
              <p key={step.seq} className={styles.stepHead}>
                Tool <code>{call.tool}</code>
                {nodeId ? <> on node <NodeName id={nodeId} /></> : null} <OutcomeBadge outcome={call.outcome} />
                {approval && call.outcome === ToolCallOutcome.UNSPECIFIED ? (
                  <>
                    {" "}waiting for <Link to={`/approvals?id=${approval.id}`}>approval</Link>
                  </>
                ) : null}
              </p>
            );
          })}
          {text ? <p className={styles.answer}>{text}</p> : null}
        </div>
      ) : null}
    </Card>
  );
}
