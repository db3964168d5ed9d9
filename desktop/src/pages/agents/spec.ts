// The agent form's model: an AgentSpec as the form edits it (numbers and labels as
// text, each tool's target as a choice), the conversions both ways, and where palyrad's
// field violations of the tools go in it. palyrad checks the spec; the form only turns
// text into fields, and says which text it cannot.
import type { MessageInitShape } from "@bufbuild/protobuf";
import { ToolPolicy, type AgentSchema, type AgentSpec, type AgentSpecSchema } from "../../../../gen/ts/palyra/agents/v1/agents_pb.js";
import type { FieldViolation } from "../../components/fieldViolations.js";
import { isBrowser } from "../browser/profiles.js";

/** Spec is what CreateAgent and UpdateAgent take. */
export type Spec = MessageInitShape<typeof AgentSpecSchema>;
/** AgentInit is a stored agent as a plain object. */
export type AgentInit = MessageInitShape<typeof AgentSchema>;

/** Target is where a tool may run: any node offering it, one node, or a selector. */
export type Target = "any" | "node" | "selector";

/** ToolDraft is one tool of the form. */
export interface ToolDraft {
  /** key identifies the row while it is edited. */
  key: number;
  name: string;
  capability: string;
  target: Target;
  nodeId: string;
  selector: string;
  policy: ToolPolicy;
  description: string;
  /** browserProfile is the profile a browser.* tool browses with; sent only for those. */
  browserProfile: string;
}

/** Draft is the whole form. */
export interface Draft {
  name: string;
  description: string;
  model: string;
  systemPrompt: string;
  /** labels, one key=value a line. */
  labels: string;
  maxSteps: string;
  maxToolCalls: string;
  maxTokens: string;
  /** deadlineSeconds is the wall-clock limit, in seconds. */
  deadlineSeconds: string;
  tools: ToolDraft[];
}

let nextKey = 1;

/** newTool is an empty tool row. */
export function newTool(capability = ""): ToolDraft {
  return { key: nextKey++, name: "", capability, target: "any", nodeId: "", selector: "", policy: ToolPolicy.AUTO, description: "", browserProfile: "" };
}

/** emptyDraft is the form of a new agent. */
export function emptyDraft(): Draft {
  return { name: "", description: "", model: "", systemPrompt: "", labels: "", maxSteps: "", maxToolCalls: "", maxTokens: "", deadlineSeconds: "", tools: [] };
}

/** defaultToolName is the name palyrad gives a tool left unnamed. */
export function defaultToolName(capability: string): string {
  return capability.replaceAll(".", "_");
}

/** fromSpec is the form of a stored definition. */
export function fromSpec(spec: AgentSpec | undefined): Draft {
  if (!spec) return emptyDraft();
  const l = spec.limits;
  return {
    name: spec.name,
    description: spec.description,
    model: spec.model,
    systemPrompt: spec.systemPrompt,
    labels: labelsText(spec.labels),
    maxSteps: l?.maxSteps ? String(l.maxSteps) : "",
    maxToolCalls: l?.maxToolCalls ? String(l.maxToolCalls) : "",
    maxTokens: l?.maxTokens ? String(l.maxTokens) : "",
    deadlineSeconds: l?.deadline ? String(l.deadline.seconds) : "",
    tools: spec.tools.map((t) => ({
      key: nextKey++,
      name: t.name,
      capability: t.capability,
      target: t.target.case === "nodeId" ? "node" : t.target.case === "nodeSelector" && t.target.value !== "" ? "selector" : "any",
      nodeId: t.target.case === "nodeId" ? t.target.value : "",
      selector: t.target.case === "nodeSelector" ? t.target.value : "",
      policy: t.policy,
      description: t.description,
      browserProfile: t.browserProfile,
    })),
  };
}

/** labelsText writes labels as key=value lines, in key order. */
export function labelsText(labels: Record<string, string>): string {
  return Object.entries(labels)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([k, v]) => `${k}=${v}`)
    .join("\n");
}

/** parseLabels reads key=value lines; it throws naming the first line that is not one. */
export function parseLabels(text: string): Record<string, string> {
  const labels: Record<string, string> = {};
  text.split("\n").forEach((line, i) => {
    const l = line.trim();
    if (!l) return;
    const eq = l.indexOf("=");
    if (eq <= 0) throw new Error(`Labels, line ${i + 1}: “${l}” is not key=value.`);
    labels[l.slice(0, eq).trim()] = l.slice(eq + 1).trim();
  });
  return labels;
}

/** whole reads a whole number field ("" is 0, the default); it throws naming the field. */
function whole(text: string, what: string): number {
  const t = text.trim();
  if (t === "") return 0;
  if (!/^\d+$/.test(t)) throw new Error(`${what} must be a whole number.`);
  return Number(t);
}

/** toSpec is the definition a form holds; it throws on text it cannot read. */
export function toSpec(d: Draft): Spec {
  const deadline = whole(d.deadlineSeconds, "Deadline");
  return {
    name: d.name.trim(),
    description: d.description.trim(),
    model: d.model.trim(),
    systemPrompt: d.systemPrompt,
    labels: parseLabels(d.labels),
    limits: {
      maxSteps: whole(d.maxSteps, "Max steps"),
      maxToolCalls: whole(d.maxToolCalls, "Max tool calls"),
      maxTokens: BigInt(whole(d.maxTokens, "Max tokens")),
      deadline: deadline ? { seconds: BigInt(deadline) } : undefined,
    },
    tools: d.tools.map((t) => ({
      name: t.name.trim(),
      capability: t.capability.trim(),
      policy: t.policy,
      description: t.description.trim(),
      browserProfile: isBrowser(t.capability.trim()) ? t.browserProfile : "",
      target:
        t.target === "node"
          ? { case: "nodeId" as const, value: t.nodeId }
          : t.target === "selector"
            ? { case: "nodeSelector" as const, value: t.selector.trim() }
            : { case: undefined },
    })),
  };
}

/** policyName turns ToolPolicy.ASK into "ask". */
export function policyName(p: ToolPolicy): string {
  return p === ToolPolicy.UNSPECIFIED ? "auto" : (ToolPolicy[p] ?? String(p)).toLowerCase();
}

/** differences names the parts of a form that differ from a stored definition, as
 * "field: theirs → yours" lines, for the conflict of a stale edit. */
export function differences(current: AgentSpec | undefined, mine: Draft): string[] {
  const theirs = fromSpec(current);
  const out: string[] = [];
  const fields: [keyof Draft, string][] = [
    ["name", "Name"],
    ["description", "Description"],
    ["model", "Model"],
    ["systemPrompt", "System prompt"],
    ["labels", "Labels"],
    ["maxSteps", "Max steps"],
    ["maxToolCalls", "Max tool calls"],
    ["maxTokens", "Max tokens"],
    ["deadlineSeconds", "Deadline (s)"],
  ];
  const short = (s: string) => (s.length > 60 ? `${s.slice(0, 57)}…` : s) || "(empty)";
  for (const [k, label] of fields) {
    const a = String(theirs[k]).trim();
    const b = String(mine[k]).trim();
    if (a !== b) out.push(`${label}: ${short(a)} → ${short(b)}`);
  }
  const where = (t: ToolDraft) => (t.target === "node" ? `node ${t.nodeId}` : t.target === "selector" && t.selector.trim() ? `nodes ${t.selector.trim()}` : "any node");
  const profile = (t: ToolDraft) => (isBrowser(t.capability) ? ` with profile ${t.browserProfile || "(none)"}` : "");
  const tools = (d: Draft) => d.tools.map((t) => `${t.name || defaultToolName(t.capability)} (${t.capability}${profile(t)} on ${where(t)}, ${policyName(t.policy)})`).join(", ") || "none";
  if (tools(theirs) !== tools(mine)) out.push(`Tools: ${tools(theirs)} → ${tools(mine)}`);
  return out;
}

/** ToolField is a part of a tool row a problem can be shown on. */
export type ToolField = "capability" | "name" | "policy" | "nodeId" | "selector" | "description" | "browserProfile";

/** toolFields maps the proto names of Tool's fields to the row's. */
const toolFields: Record<string, ToolField> = {
  capability: "capability",
  name: "name",
  policy: "policy",
  node_id: "nodeId",
  node_selector: "selector",
  description: "description",
  browser_profile: "browserProfile",
};

/** ToolProblems are palyrad's field violations of the tools, by row key and field. */
export type ToolProblems = Map<number, Partial<Record<ToolField, string>>>;

/** placeToolViolations puts each violation "spec.tools[i].FIELD" on that field of the row
 * sent at index i (the rows are sent in order); the others are not the tools'. */
export function placeToolViolations(vs: FieldViolation[], tools: ToolDraft[]): ToolProblems {
  const out: ToolProblems = new Map();
  for (const v of vs) {
    const m = /^spec\.tools\[(\d+)\]\.(\w+)$/.exec(v.field);
    const row = m ? tools[Number(m[1])] : undefined;
    const f = m ? toolFields[m[2]] : undefined;
    if (!row || !f) continue;
    const on = out.get(row.key) ?? {};
    on[f] = on[f] ? `${on[f]} ${v.description}` : v.description;
    out.set(row.key, on);
  }
  return out;
}
