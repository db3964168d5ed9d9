package approvals

import (
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/palyra/palyra/gen/dbsqlc"
	agentsv1 "github.com/palyra/palyra/gen/go/palyra/agents/v1"
)

// approvalProto is the API's view of a row.
func approvalProto(r dbsqlc.Approval) *agentsv1.Approval {
	out := &agentsv1.Approval{
		Id:          r.ID,
		RunId:       r.RunID,
		StepSeq:     r.StepSeq,
		AgentId:     r.AgentID,
		AgentName:   r.AgentName,
		Tool:        r.Tool,
		Capability:  r.Capability,
		NodeId:      r.NodeID,
		InputJson:   string(r.Input),
		State:       stateProto(r.State),
		RequestedBy: r.RequestedBy,
		CreateTime:  timestamppb.New(r.CreatedAt),
		ExpireTime:  timestamppb.New(r.ExpireAt),
		DecidedBy:   r.DecidedBy,
		Reason:      r.Reason,
		Scope:       scopeProto(r.Scope),
	}
	if r.DecidedAt != nil {
		out.DecideTime = timestamppb.New(*r.DecidedAt)
	}
	return out
}

// stateProto maps a stored state to the API's.
func stateProto(s string) agentsv1.ApprovalState {
	switch s {
	case statePending:
		return agentsv1.ApprovalState_APPROVAL_STATE_PENDING
	case stateApproved:
		return agentsv1.ApprovalState_APPROVAL_STATE_APPROVED
	case stateDenied:
		return agentsv1.ApprovalState_APPROVAL_STATE_DENIED
	case stateExpired:
		return agentsv1.ApprovalState_APPROVAL_STATE_EXPIRED
	}
	return agentsv1.ApprovalState_APPROVAL_STATE_UNSPECIFIED
}

// stateFilter maps the API's state filter to the stored state ("" for all).
func stateFilter(s agentsv1.ApprovalState) string {
	switch s {
	case agentsv1.ApprovalState_APPROVAL_STATE_PENDING:
		return statePending
	case agentsv1.ApprovalState_APPROVAL_STATE_APPROVED:
		return stateApproved
	case agentsv1.ApprovalState_APPROVAL_STATE_DENIED:
		return stateDenied
	case agentsv1.ApprovalState_APPROVAL_STATE_EXPIRED:
		return stateExpired
	}
	return ""
}

// scopeProto maps a stored scope to the API's.
func scopeProto(s string) agentsv1.ApprovalScope {
	switch s {
	case scopeOnce:
		return agentsv1.ApprovalScope_APPROVAL_SCOPE_ONCE
	case scopeRun:
		return agentsv1.ApprovalScope_APPROVAL_SCOPE_RUN
	}
	return agentsv1.ApprovalScope_APPROVAL_SCOPE_UNSPECIFIED
}
