// The agent form, for a new agent and for a new revision of one: the whole definition,
// with a tool picker fed by the capabilities the paired nodes announce (each tool's
// target a node offering it or a label selector, its policy, and a browser tool's
// profile picked from the browser profiles) and a model picker fed by the compat model
// list. palyrad's problems with a tool show on its fields. An edit is saved against the
// revision it began from: a stale one is refused by palyrad (Aborted, ErrorInfo
// STALE_REVISION) and the form then says what changed meanwhile and lets the user save
// over it or take the new revision.
import { useId, useState, type FormEvent, type ReactNode } from "react";
import { Link } from "react-router";
import { createConnectQueryKey, useMutation } from "@connectrpc/connect-query";
import { useQueryClient } from "@tanstack/react-query";
import { AgentService, ToolPolicy, type Agent } from "../../../../gen/ts/palyra/agents/v1/agents_pb.js";
import { Presence } from "../../../../gen/ts/palyra/controlplane/v1/nodes_pb.js";
import { Card } from "../../components/Page.js";
import { ErrorPanel } from "../../components/ErrorPanel.js";
import { Needs } from "../../components/ListBody.js";
import { errorInfo } from "../../components/errorInfo.js";
import { fieldViolations } from "../../components/fieldViolations.js";
import { Problem } from "../../components/Problem.js";
import { StaleConflict, type Conflict } from "../../components/Revisions.js";
import { prettyJSON } from "../../components/prettyJSON.js";
import { count } from "../../components/plural.js";
import { CompatError } from "../compat/CompatError.js";
import { useCatalog, useModels, type CatalogEntry } from "./catalog.js";
import { isBrowser, useInvalidateProfiles, useProfileChoices } from "../browser/profiles.js";
import { defaultToolName, differences, fromSpec, newTool, placeToolViolations, toSpec, type Draft, type ToolDraft, type ToolField, type ToolProblems } from "./spec.js";
import admin from "../admin.module.css";
import styles from "./agents.module.css";

/** STALE_REVISION is the ErrorInfo reason of a stale expected_revision. */
const STALE_REVISION = "STALE_REVISION";
/** MAX_TOOLS is the most tools an agent has (AgentSpec.tools). */
const MAX_TOOLS = 32;

/** Saved is what a save answered. */
export interface Saved {
  agent: Agent;
  warnings: string[];
  created: boolean;
}

/** invalidateAgents reads every agent query again. */
export function useInvalidateAgents() {
  const queryClient = useQueryClient();
  return () => queryClient.invalidateQueries({ queryKey: createConnectQueryKey({ schema: AgentService, cardinality: undefined }) });
}

export function AgentEditor({ agent, onSaved, onCancel }: { agent?: Agent; onSaved: (s: Saved) => void; onCancel: () => void }) {
  const id = useId();
  const [draft, setDraft] = useState<Draft>(() => fromSpec(agent?.spec));
  // The revision the edit began from, even if the page reads a newer one meanwhile.
  const [base, setBase] = useState(agent?.revision ?? 0n);
  const [conflict, setConflict] = useState<Conflict>();
  const [error, setError] = useState<unknown>();
  const [toolProblems, setToolProblems] = useState<ToolProblems>(new Map());
  const invalidate = useInvalidateAgents();
  const invalidateProfiles = useInvalidateProfiles();
  const create = useMutation(AgentService.method.createAgent);
  const update = useMutation(AgentService.method.updateAgent);
  const current = useMutation(AgentService.method.getAgent);
  const catalog = useCatalog();
  const models = useModels();
  const busy = create.isPending || update.isPending;
  const set = (patch: Partial<Draft>) => setDraft((d) => ({ ...d, ...patch }));

  async function save(expected: bigint) {
    setError(undefined);
    setToolProblems(new Map());
    let spec;
    try {
      spec = toSpec(draft);
    } catch (err) {
      setError(err);
      return;
    }
    try {
      setConflict(undefined);
      if (!agent) {
        const res = await create.mutateAsync({ spec });
        onSaved({ agent: res.agent!, warnings: res.warnings, created: true });
      } else {
        const res = await update.mutateAsync({ agent: { case: "id", value: agent.id }, spec, expectedRevision: expected });
        onSaved({ agent: res.agent!, warnings: res.warnings, created: false });
      }
      void invalidate();
    } catch (err) {
      const info = errorInfo(err);
      if (agent && info?.reason === STALE_REVISION && info.metadata.current_revision) {
        setConflict({ base: expected, current: BigInt(info.metadata.current_revision) });
        current.mutate({ agent: { case: "id", value: agent.id } });
        void invalidate();
        return;
      }
      const problems = placeToolViolations(fieldViolations(err), draft.tools);
      // A profile palyrad does not know may be gone since the list was read.
      if ([...problems.values()].some((p) => p.browserProfile)) void invalidateProfiles();
      setToolProblems(problems);
      setError(err);
    }
  }

  function submit(e: FormEvent) {
    e.preventDefault();
    void save(base);
  }

  /** takeTheirs drops the edit and starts again from the current revision. */
  function takeTheirs() {
    const a = current.data?.agent;
    if (a) {
      setDraft(fromSpec(a.spec));
      setBase(a.revision);
    }
    setConflict(undefined);
  }

  const theirs = current.data?.agent;
  return (
    <Card title={agent ? `Edit ${agent.spec?.name}` : "Definition"}>
      <form onSubmit={submit} className={admin.stack} aria-label={agent ? `Edit agent ${agent.spec?.name}` : "New agent"}>
        {conflict ? (
          <StaleConflict
            what="agent"
            conflict={conflict}
            theirs={theirs}
            differences={() => differences(theirs?.spec, draft)}
            error={current.error}
            busy={busy}
            onSaveOver={() => void save(conflict.current)}
            onTakeTheirs={takeTheirs}
          />
        ) : null}
        <div className={styles.grid}>
          <div className="field">
            <label htmlFor={`${id}-name`}>Name</label>
            <input id={`${id}-name`} value={draft.name} onChange={(e) => set({ name: e.target.value })} required maxLength={63} spellCheck={false} aria-describedby={`${id}-name-hint`} />
            <p id={`${id}-name-hint`} className="field-hint">
              Lower-case letters, digits and “-”; its model id is <code>agent:{draft.name || "NAME"}</code>.
            </p>
          </div>
          <div className="field">
            <label htmlFor={`${id}-model`}>Model</label>
            {models.models.length > 0 ? (
              <select id={`${id}-model`} value={draft.model} onChange={(e) => set({ model: e.target.value })} required>
                <option value="">Choose a model</option>
                {draft.model && !models.models.some((m) => m.id === draft.model) ? <option value={draft.model}>{draft.model} (not served now)</option> : null}
                {models.models.map((m) => (
                  <option key={m.id} value={m.id}>
                    {m.id} ({m.ownedBy})
                  </option>
                ))}
              </select>
            ) : (
              <input id={`${id}-model`} value={draft.model} onChange={(e) => set({ model: e.target.value })} required maxLength={256} spellCheck={false} />
            )}
            {models.needs ? <Needs permission={models.needs} what="Listing the models needs" /> : null}
            {models.error ? <CompatError error={models.error} title="The models could not be listed" /> : null}
          </div>
        </div>
        <div className="field">
          <label htmlFor={`${id}-description`}>Description</label>
          <input id={`${id}-description`} value={draft.description} onChange={(e) => set({ description: e.target.value })} maxLength={1024} />
        </div>
        <div className="field">
          <label htmlFor={`${id}-prompt`}>System prompt</label>
          <textarea id={`${id}-prompt`} value={draft.systemPrompt} onChange={(e) => set({ systemPrompt: e.target.value })} rows={6} />
        </div>
        <ToolsField tools={draft.tools} onChange={(tools) => set({ tools })} catalog={catalog} problems={toolProblems} />
        <fieldset className={styles.fieldset}>
          <legend>Limits of each run (empty: the default)</legend>
          <div className={styles.grid}>
            <NumberField label="Max steps (model calls)" placeholder="8, at most 64" value={draft.maxSteps} onChange={(maxSteps) => set({ maxSteps })} />
            <NumberField label="Max tool calls" placeholder="16, at most 256" value={draft.maxToolCalls} onChange={(maxToolCalls) => set({ maxToolCalls })} />
            <NumberField label="Max tokens" placeholder="no limit" value={draft.maxTokens} onChange={(maxTokens) => set({ maxTokens })} />
            <NumberField label="Deadline (seconds)" placeholder="300, at most 86400" value={draft.deadlineSeconds} onChange={(deadlineSeconds) => set({ deadlineSeconds })} />
          </div>
        </fieldset>
        <div className="field">
          <label htmlFor={`${id}-labels`}>Labels (one key=value a line)</label>
          <textarea id={`${id}-labels`} value={draft.labels} onChange={(e) => set({ labels: e.target.value })} rows={3} spellCheck={false} />
        </div>
        {agent ? <p className="field-hint">Saved as a new revision against revision {String(base)}; runs already started keep theirs.</p> : null}
        {error ? <ErrorPanel error={error} title="palyrad refused the agent" /> : null}
        <div className={admin.row}>
          <button type="submit" className="button button-primary" disabled={busy} aria-busy={busy}>
            {busy ? "Saving…" : agent ? "Save agent" : "Create agent"}
          </button>
          <button type="button" className="button" onClick={onCancel}>
            Cancel
          </button>
        </div>
      </form>
    </Card>
  );
}

function NumberField({ label, placeholder, value, onChange }: { label: string; placeholder: string; value: string; onChange: (v: string) => void }) {
  const id = useId();
  return (
    <div className="field">
      <label htmlFor={id}>{label}</label>
      <input id={id} value={value} onChange={(e) => onChange(e.target.value.replace(/\D/g, ""))} inputMode="numeric" placeholder={placeholder} />
    </div>
  );
}

/** OTHER is the picker's choice of a capability no node announces. */
const OTHER = "\u0000other";

function ToolsField({ tools, onChange, catalog, problems }: { tools: ToolDraft[]; onChange: (t: ToolDraft[]) => void; catalog: ReturnType<typeof useCatalog>; problems: ToolProblems }) {
  const edit = (key: number, patch: Partial<ToolDraft>) => onChange(tools.map((t) => (t.key === key ? { ...t, ...patch } : t)));
  return (
    <fieldset className={styles.fieldset}>
      <legend>Tools ({count(tools.length, "tools")})</legend>
      <p className="field-hint">
        Each tool is a capability of the paired nodes, offered to the model as a function whose parameters are the capability's input schema.
      </p>
      {catalog.needs ? <Needs permission={catalog.needs} what="Picking from the nodes' capabilities needs" /> : null}
      {catalog.error ? <ErrorPanel error={catalog.error} title="The nodes' capabilities could not be read" /> : null}
      {tools.map((t, i) => (
        <ToolRow key={t.key} n={i + 1} tool={t} catalog={catalog} problems={problems.get(t.key) ?? {}} onChange={(p) => edit(t.key, p)} onRemove={() => onChange(tools.filter((x) => x.key !== t.key))} />
      ))}
      <div>
        <button type="button" className="button" disabled={tools.length >= MAX_TOOLS} onClick={() => onChange([...tools, newTool(catalog.entries[0]?.name ?? "")])}>
          Add a tool
        </button>
      </div>
    </fieldset>
  );
}

function ToolRow({
  n,
  tool: t,
  catalog,
  problems,
  onChange,
  onRemove,
}: {
  n: number;
  tool: ToolDraft;
  catalog: ReturnType<typeof useCatalog>;
  problems: Partial<Record<ToolField, string>>;
  onChange: (p: Partial<ToolDraft>) => void;
  onRemove: () => void;
}) {
  const id = useId();
  // A browser tool's profile stays while its capability stays a browser one.
  const setCapability = (capability: string, patch: Partial<ToolDraft> = {}) => onChange({ capability, browserProfile: isBrowser(capability) ? t.browserProfile : "", ...patch });
  /** invalid marks a field palyrad named, describing it by its problem. */
  const invalid = (f: ToolField) => ({ "aria-invalid": problems[f] !== undefined, "aria-describedby": problems[f] ? `${id}-${f}-problem` : undefined });
  const problem = (f: ToolField) => <Problem id={`${id}-${f}-problem`} text={problems[f]} />;
  const entry: CatalogEntry | undefined = catalog.entries.find((e) => e.name === t.capability);
  const [other, setOther] = useState(() => t.capability !== "" && !entry && catalog.entries.length > 0);
  const picking = catalog.entries.length > 0 && !other && (entry !== undefined || t.capability === "");
  const offering = entry?.nodes ?? [];
  const name = t.name || defaultToolName(t.capability);
  return (
    <div className={styles.tool} role="group" aria-label={`Tool ${n}: ${name || "new"}`}>
      <div className={styles.grid}>
        <div className="field">
          <label htmlFor={`${id}-cap`}>Capability</label>
          {picking ? (
            <select
              id={`${id}-cap`}
              value={t.capability}
              onChange={(e) => {
                if (e.target.value === OTHER) {
                  setOther(true);
                  setCapability("");
                } else setCapability(e.target.value, { nodeId: "" });
              }}
              required
              {...invalid("capability")}
            >
              <option value="">Choose a capability</option>
              {catalog.entries.map((e) => (
                <option key={e.name} value={e.name}>
                  {e.name} ({e.online > 0 ? `${count(e.online, "online nodes")}` : "no online node"})
                </option>
              ))}
              <option value={OTHER}>Another capability…</option>
            </select>
          ) : (
            <input id={`${id}-cap`} value={t.capability} onChange={(e) => setCapability(e.target.value)} required placeholder="e.g. shell.execute" spellCheck={false} {...invalid("capability")} />
          )}
          {entry ? <p className="field-hint">{entry.description}</p> : t.capability ? <p className="field-hint">No paired node announces it.</p> : null}
          {problem("capability")}
        </div>
        {isBrowser(t.capability) ? <ProfileField value={t.browserProfile} onChange={(browserProfile) => onChange({ browserProfile })} problem={problems.browserProfile} /> : null}
        <div className="field">
          <label htmlFor={`${id}-name`}>Function name</label>
          <input id={`${id}-name`} value={t.name} onChange={(e) => onChange({ name: e.target.value })} placeholder={defaultToolName(t.capability) || "from the capability"} maxLength={64} spellCheck={false} {...invalid("name")} />
          {problem("name")}
        </div>
        <div className="field">
          <label htmlFor={`${id}-policy`}>Policy</label>
          <select id={`${id}-policy`} value={t.policy === ToolPolicy.UNSPECIFIED ? ToolPolicy.AUTO : t.policy} onChange={(e) => onChange({ policy: Number(e.target.value) as ToolPolicy })} {...invalid("policy")}>
            <option value={ToolPolicy.AUTO}>auto: run at once</option>
            <option value={ToolPolicy.ASK}>ask: a human approves each call</option>
            <option value={ToolPolicy.DENY}>deny: refuse every call</option>
          </select>
          {problem("policy")}
        </div>
        <div className="field">
          <label htmlFor={`${id}-target`}>Runs on</label>
          <select id={`${id}-target`} value={t.target} onChange={(e) => onChange({ target: e.target.value as ToolDraft["target"] })}>
            <option value="any">any node offering it</option>
            <option value="node">one node</option>
            <option value="selector">nodes matching a label selector</option>
          </select>
        </div>
        {t.target === "node" ? (
          <div className="field">
            <label htmlFor={`${id}-node`}>Node</label>
            {offering.length > 0 || catalog.nodes.length > 0 ? (
              <select id={`${id}-node`} value={t.nodeId} onChange={(e) => onChange({ nodeId: e.target.value })} required {...invalid("nodeId")}>
                <option value="">Choose a node</option>
                {t.nodeId && !catalog.nodes.some((x) => x.id === t.nodeId) ? <option value={t.nodeId}>{t.nodeId}</option> : null}
                {(offering.length > 0 ? offering : catalog.nodes).map((x) => (
                  <option key={x.id} value={x.id}>
                    {x.name} ({x.presence === Presence.ONLINE ? "online" : "not online"}, {x.id})
                  </option>
                ))}
              </select>
            ) : (
              <input id={`${id}-node`} value={t.nodeId} onChange={(e) => onChange({ nodeId: e.target.value.trim() })} required placeholder="node id" spellCheck={false} {...invalid("nodeId")} />
            )}
            {problem("nodeId")}
          </div>
        ) : null}
        {t.target === "selector" ? (
          <div className="field">
            <label htmlFor={`${id}-selector`}>Label selector</label>
            <input id={`${id}-selector`} value={t.selector} onChange={(e) => onChange({ selector: e.target.value })} placeholder="e.g. env=prod,zone in (a,b)" spellCheck={false} {...invalid("selector")} />
            {problem("selector")}
          </div>
        ) : null}
      </div>
      <div className="field">
        <label htmlFor={`${id}-description`}>Description for the model</label>
        <input id={`${id}-description`} value={t.description} onChange={(e) => onChange({ description: e.target.value })} placeholder={entry?.description || "the capability's own"} maxLength={4096} {...invalid("description")} />
        {problem("description")}
      </div>
      <div className={admin.row}>
        {entry?.inputSchema ? (
          <details>
            <summary>Parameters offered to the model</summary>
            <pre className={admin.pre} tabIndex={0}>
              {prettyJSON(entry.inputSchema)}
            </pre>
          </details>
        ) : null}
        {other && catalog.entries.length > 0 ? (
          <button type="button" className="button button-small" onClick={() => (setOther(false), setCapability(""))}>
            Pick from the nodes' capabilities
          </button>
        ) : null}
        <button type="button" className="button button-small" onClick={onRemove} aria-label={`Remove tool ${name || n}`}>
          Remove
        </button>
      </div>
    </div>
  );
}

/** ProfileField picks the browser profile a browser tool browses with, among those
 * palyrad lists, each with the domains it may visit; without browser.read (or when
 * they cannot be listed) it takes the profile's name as text. */
function ProfileField({ value, onChange, problem }: { value: string; onChange: (v: string) => void; problem?: string }) {
  const id = useId();
  const { profiles, error, needs } = useProfileChoices(true);
  const chosen = profiles?.find((p) => p.spec?.name === value);
  const describedBy = `${id}-hint${problem ? ` ${id}-problem` : ""}`;
  const invalid = { "aria-invalid": problem !== undefined, "aria-describedby": describedBy };
  let hint: ReactNode = <>Every call of the tool browses with it; the model cannot choose another.</>;
  if (needs) hint = <>Choosing among the browser profiles needs the permission <code>{needs}</code>: name the profile the tool browses with.</>;
  else if (chosen) hint = <>It may visit {chosen.spec?.allowedDomains.join(", ")}; every call of the tool browses with it.</>;
  else if (value && profiles) hint = <>palyrad lists no browser profile “{value}”: the tool's calls are refused until it exists.</>;
  else if (profiles?.length === 0) hint = <>There is no browser profile yet: create one on the <Link to="/browser">Browser profiles</Link> page.</>;
  return (
    <div className="field">
      <label htmlFor={id}>Browser profile</label>
      {!needs && !error ? (
        <select id={id} value={value} onChange={(e) => onChange(e.target.value)} required {...invalid}>
          <option value="">{profiles ? "Choose a profile" : "Loading the profiles…"}</option>
          {value && !chosen ? <option value={value}>{profiles ? `${value} (no such profile)` : value}</option> : null}
          {profiles?.map((p) => (
            <option key={p.id} value={p.spec?.name}>
              {p.spec?.name}
            </option>
          ))}
        </select>
      ) : (
        <input id={id} value={value} onChange={(e) => onChange(e.target.value.trim())} required maxLength={63} placeholder="the profile's name" spellCheck={false} {...invalid} />
      )}
      <p id={`${id}-hint`} className="field-hint">
        {hint}
      </p>
      {error ? <ErrorPanel error={error} title="The browser profiles could not be listed" /> : null}
      <Problem id={`${id}-problem`} text={problem} />
    </div>
  );
}
