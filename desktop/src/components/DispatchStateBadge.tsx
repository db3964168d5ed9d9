// The state of a dispatch as a badge: its name ("timed out") in the tone of its outcome.
import { DispatchState } from "../../../gen/ts/palyra/controlplane/v1/dispatch_pb.js";
import { Badge, type Tone } from "./Badge.js";

const tones: Record<DispatchState, Tone> = {
  [DispatchState.UNSPECIFIED]: "neutral",
  [DispatchState.QUEUED]: "neutral",
  [DispatchState.SENT]: "neutral",
  [DispatchState.RUNNING]: "warn",
  [DispatchState.SUCCEEDED]: "ok",
  [DispatchState.FAILED]: "danger",
  [DispatchState.TIMED_OUT]: "danger",
  [DispatchState.CANCELLED]: "neutral",
};

/** dispatchStateName turns DispatchState.TIMED_OUT into "timed out". */
export function dispatchStateName(s: DispatchState): string {
  return (DispatchState[s] ?? String(s)).toLowerCase().replaceAll("_", " ");
}

/** dispatchEnded says whether a state is terminal. */
export function dispatchEnded(s: DispatchState): boolean {
  return s >= DispatchState.SUCCEEDED;
}

export function DispatchStateBadge({ state }: { state: DispatchState }) {
  return <Badge tone={tones[state]}>{dispatchStateName(state)}</Badge>;
}
