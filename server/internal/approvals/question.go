// Package approvals is the human decision on the tool calls of agents' ask tools: a call
// waits as a pending approval (ApprovalService lists and watches them, from any replica)
// until an admin or owner approves or denies it, or it expires after
// agents.approval_timeout. A decision is final and audited.
package approvals

import "encoding/json"

// Question is a tool call that waits for a human. Service.Ask records it as a pending
// approval and waits for its decision.
type Question struct {
	// RunID and StepSeq are the run's tool-call step, already stored (an approval
	// references it).
	RunID   string
	StepSeq int32
	// AgentID and AgentName are the run's agent.
	AgentID   string
	AgentName string
	// Tool is the tool's name; Capability and NodeID what the call would run, and where.
	Tool       string
	Capability string
	NodeID     string
	// Input is the exact input the node would be given.
	Input json.RawMessage
	// RequestedBy is the principal that started the run.
	RequestedBy string
}
