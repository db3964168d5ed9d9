package agents

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/palyra/palyra/gen/dbsqlc"
	agentsv1 "github.com/palyra/palyra/gen/go/palyra/agents/v1"
	"github.com/palyra/palyra/server/internal/errdefs"
)

// withDefaults returns a copy of spec with its limits, tool names and policies filled
// in.
func withDefaults(spec *agentsv1.AgentSpec) *agentsv1.AgentSpec {
	s := proto.Clone(spec).(*agentsv1.AgentSpec)
	if s.Limits == nil {
		s.Limits = &agentsv1.AgentLimits{}
	}
	if s.Limits.MaxSteps == 0 {
		s.Limits.MaxSteps = DefaultMaxSteps
	}
	if s.Limits.MaxToolCalls == 0 {
		s.Limits.MaxToolCalls = DefaultMaxToolCalls
	}
	if s.Limits.Deadline == nil {
		s.Limits.Deadline = durationpb.New(DefaultDeadline)
	}
	for _, t := range s.Tools {
		if t.Name == "" {
			t.Name = strings.ReplaceAll(t.Capability, ".", "_")
		}
		if t.Policy == agentsv1.ToolPolicy_TOOL_POLICY_UNSPECIFIED {
			t.Policy = agentsv1.ToolPolicy_TOOL_POLICY_AUTO
		}
	}
	return s
}

// inputOf is a run's input as its column stores it.
func inputOf(msgs []*agentsv1.RunMessage) ([]byte, error) {
	type message struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	}
	out := make([]message, len(msgs))
	for i, m := range msgs {
		switch m.GetRole() {
		case "system", "user", "assistant":
		default:
			return nil, errdefs.InvalidField(fmt.Sprintf("messages[%d].role", i), "must be system, user or assistant")
		}
		out[i] = message{Role: m.GetRole(), Content: m.GetContent()}
	}
	return json.Marshal(out)
}

// runStates maps the stored states to the API's.
var runStates = map[string]agentsv1.RunState{
	stateRunning:   agentsv1.RunState_RUN_STATE_RUNNING,
	stateWaiting:   agentsv1.RunState_RUN_STATE_WAITING_APPROVAL,
	stateSucceeded: agentsv1.RunState_RUN_STATE_SUCCEEDED,
	stateFailed:    agentsv1.RunState_RUN_STATE_FAILED,
	stateCancelled: agentsv1.RunState_RUN_STATE_CANCELLED,
}

// storedState is the stored state of an API state; "" for unspecified.
func storedState(s agentsv1.RunState) string {
	for k, v := range runStates {
		if v == s {
			return k
		}
	}
	return ""
}

// ts is a time as a timestamp; nil for nil.
func ts(t *time.Time) *timestamppb.Timestamp {
	if t == nil {
		return nil
	}
	return timestamppb.New(*t)
}

// runOf is a stored run in the API's terms.
func runOf(r dbsqlc.AgentRun) (*agentsv1.Run, error) {
	spec := &agentsv1.AgentSpec{}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(r.Agent, spec); err != nil {
		return nil, fmt.Errorf("agents: run %s: its agent: %w", r.ID, err)
	}
	var input []*agentsv1.RunMessage
	if err := json.Unmarshal(r.Input, &input); err != nil {
		return nil, fmt.Errorf("agents: run %s: its input: %w", r.ID, err)
	}
	return &agentsv1.Run{
		Id: r.ID, AgentId: r.AgentID, AgentName: r.AgentName, AgentRevision: r.AgentRevision, Agent: spec,
		State: runStates[r.State], Reason: r.Reason, Input: input, Answer: r.Answer, StartedBy: r.StartedBy,
		ReplicaId: r.ReplicaID, CreateTime: timestamppb.New(r.CreatedAt), Deadline: timestamppb.New(r.Deadline),
		FinishTime: ts(r.FinishedAt), PromptTokens: r.PromptTokens, CompletionTokens: r.CompletionTokens,
		ModelCalls: r.ModelCalls, ToolCalls: r.ToolCalls, CancelTime: ts(r.CancelRequestedAt),
	}, nil
}

// outcomes maps the stored outcomes of tool calls to the API's.
var outcomes = map[string]agentsv1.ToolCallOutcome{
	"succeeded": agentsv1.ToolCallOutcome_TOOL_CALL_OUTCOME_SUCCEEDED,
	"failed":    agentsv1.ToolCallOutcome_TOOL_CALL_OUTCOME_FAILED,
	"denied":    agentsv1.ToolCallOutcome_TOOL_CALL_OUTCOME_DENIED,
	"expired":   agentsv1.ToolCallOutcome_TOOL_CALL_OUTCOME_EXPIRED,
	"refused":   agentsv1.ToolCallOutcome_TOOL_CALL_OUTCOME_REFUSED,
	"cancelled": agentsv1.ToolCallOutcome_TOOL_CALL_OUTCOME_CANCELLED,
}

// The step kinds as stored.
const (
	kindModelCall = "model_call"
	kindToolCall  = "tool_call"
	kindAnswer    = "answer"
)

// stepOf is a stored step in the API's terms.
func stepOf(s dbsqlc.AgentRunStep) *agentsv1.RunStep {
	out := &agentsv1.RunStep{RunId: s.RunID, Seq: s.Seq, StartTime: timestamppb.New(s.StartedAt), FinishTime: ts(s.FinishedAt)}
	switch s.Kind {
	case kindModelCall:
		out.Kind = agentsv1.RunStepKind_RUN_STEP_KIND_MODEL_CALL
		out.Detail = &agentsv1.RunStep_ModelCall{ModelCall: &agentsv1.ModelCall{Model: s.Model, PromptTokens: s.PromptTokens,
			CompletionTokens: s.CompletionTokens, FinishReason: s.FinishReason, Error: s.Error}}
	case kindToolCall:
		out.Kind = agentsv1.RunStepKind_RUN_STEP_KIND_TOOL_CALL
		tc := &agentsv1.ToolCall{Tool: s.Tool, ToolCallId: s.ToolCallID, Capability: s.Capability, NodeId: s.NodeID,
			InputJson: s.Input, Outcome: outcomes[s.Outcome], ResultJson: string(s.Result), Error: s.Error}
		if s.DispatchID != nil {
			tc.DispatchId = *s.DispatchID
		}
		if s.ApprovalID != nil {
			tc.ApprovalId = *s.ApprovalID
		}
		out.Detail = &agentsv1.RunStep_ToolCall{ToolCall: tc}
	case kindAnswer:
		out.Kind = agentsv1.RunStepKind_RUN_STEP_KIND_ANSWER
		out.Detail = &agentsv1.RunStep_Answer{Answer: &agentsv1.Answer{Text: s.Answer}}
	}
	return out
}

// updateParams are the parameters that write step s as it stands.
func updateParams(s dbsqlc.AgentRunStep) dbsqlc.UpdateAgentRunStepParams {
	return dbsqlc.UpdateAgentRunStepParams{
		FinishedAt: s.FinishedAt, PromptTokens: s.PromptTokens, CompletionTokens: s.CompletionTokens,
		FinishReason: s.FinishReason, Capability: s.Capability, NodeID: s.NodeID, DispatchID: s.DispatchID, ApprovalID: s.ApprovalID,
		Outcome: s.Outcome, Result: s.Result, Error: s.Error, Answer: s.Answer, RunID: s.RunID, Seq: s.Seq,
	}
}
