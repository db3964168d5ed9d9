// Pieces of runs shared by the Agents and Runs pages: a run's state as a badge, a tool
// call's outcome, and whether a run has ended.
import { RunState, ToolCallOutcome } from "../../../../gen/ts/palyra/agents/v1/agents_pb.js";
import { Badge, type Tone } from "../../components/Badge.js";

const stateTones: Record<RunState, Tone> = {
  [RunState.UNSPECIFIED]: "neutral",
  [RunState.RUNNING]: "warn",
  [RunState.WAITING_APPROVAL]: "warn",
  [RunState.SUCCEEDED]: "ok",
  [RunState.FAILED]: "danger",
  [RunState.CANCELLED]: "neutral",
};

/** runStateName turns RunState.WAITING_APPROVAL into "waiting approval". */
export function runStateName(s: RunState): string {
  return (RunState[s] ?? String(s)).toLowerCase().replaceAll("_", " ");
}

/** runEnded says whether a state is final. */
export function runEnded(s: RunState): boolean {
  return s >= RunState.SUCCEEDED;
}

export function RunStateBadge({ state }: { state: RunState }) {
  return <Badge tone={stateTones[state]}>{runStateName(state)}</Badge>;
}

const outcomeTones: Record<ToolCallOutcome, Tone> = {
  [ToolCallOutcome.UNSPECIFIED]: "warn",
  [ToolCallOutcome.SUCCEEDED]: "ok",
  [ToolCallOutcome.FAILED]: "danger",
  [ToolCallOutcome.DENIED]: "danger",
  [ToolCallOutcome.EXPIRED]: "danger",
  [ToolCallOutcome.REFUSED]: "danger",
  [ToolCallOutcome.CANCELLED]: "neutral",
};

/** OutcomeBadge is a tool call's outcome; "running" until it has one. */
export function OutcomeBadge({ outcome }: { outcome: ToolCallOutcome }) {
  const name = outcome === ToolCallOutcome.UNSPECIFIED ? "running" : (ToolCallOutcome[outcome] ?? String(outcome)).toLowerCase();
  return <Badge tone={outcomeTones[outcome]}>{name}</Badge>;
}
