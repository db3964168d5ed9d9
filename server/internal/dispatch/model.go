package dispatch

import (
	"time"

	"github.com/palyra/palyra/server/internal/labels"
)

// State is the state of a dispatch: queued → sent → running → one of the terminal
// states.
type State string

// The states of a dispatch (as stored: the dispatches_state constraint).
const (
	StateQueued    State = "queued"
	StateSent      State = "sent"
	StateRunning   State = "running"
	StateSucceeded State = "succeeded"
	StateFailed    State = "failed"
	StateTimedOut  State = "timed_out"
	StateCancelled State = "cancelled"
)

// Terminal reports whether the state is an end.
func (s State) Terminal() bool {
	switch s {
	case StateSucceeded, StateFailed, StateTimedOut, StateCancelled:
		return true
	}
	return false
}

// Dispatch is a capability call to a node, as it stands.
type Dispatch struct {
	ID         string
	NodeID     string
	Capability string
	// Input is the input as compact JSON text.
	Input string
	State State
	// IdempotencyKey is the key it was created with; "" for none.
	IdempotencyKey string
	// CreatedBy is the principal that created it.
	CreatedBy      string
	CreatedAt      time.Time
	Deadline       time.Time
	MaxOutputBytes int64
	// SentAt, StartedAt, FinishedAt and CancelRequestedAt are nil until then.
	SentAt, StartedAt, FinishedAt, CancelRequestedAt *time.Time
	CancelReason                                     string
	// Result is the node's result as JSON text; "" for none.
	Result   string
	Error    string
	ExitCode int32
	// OutputBytes is how much output the node produced; OutputStored how much of it is
	// stored (within MaxOutputBytes); OutputTruncated says some was dropped.
	OutputBytes     int64
	OutputStored    int64
	OutputTruncated bool
	// OutputLostReason says why output the node produced was lost; "" when none was.
	OutputLostReason string

	// output is the whole of the stored output, as the session that ended the dispatch
	// on this replica wrote it, handed to the waiters with the ended row (hub.end) when
	// it is small; nil when it must be read.
	output []OutputChunk
}

// OutputChunk is a piece of a dispatch's output.
type OutputChunk struct {
	DispatchID string
	Offset     int64
	// Stream is "stdout" or "stderr".
	Stream string
	Data   []byte
}

// Presence is whether a node is attached and heard from.
type Presence string

// The presences: offline without a session; with one, online while its last activity
// is within three heartbeat intervals, stale within ten, else offline.
const (
	PresenceOnline  Presence = "online"
	PresenceStale   Presence = "stale"
	PresenceOffline Presence = "offline"
)

// Capability is a capability a node announced (stored in devices.capabilities, a JSON
// array; the ListNodes capability filter matches on "name").
type Capability struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	InputSchema string `json:"input_schema,omitempty"`
	Available   bool   `json:"available"`
	// Models are the models it serves (llm.chat, llm.embed); nil for other capabilities.
	Models []string `json:"models,omitempty"`
}

// Node is a paired device as a node: what it announced and its presence.
type Node struct {
	ID, Name, Platform, AgentVersion string
	// Labels are the device's own (given by an administrator); ReportedLabels those its
	// node announced. EffectiveLabels merges them, the given winning.
	Labels, ReportedLabels map[string]string
	Capabilities           []Capability
	CreatedAt              time.Time
	// LastSeenAt is nil until it first attached.
	LastSeenAt      *time.Time
	Presence        Presence
	Revoked         bool
	ProtocolVersion int32
	// AttachedReplica is the replica holding its session; "" when offline.
	AttachedReplica string
	// CertificateNotAfter is the expiry of its newest valid certificate; zero for none.
	CertificateNotAfter time.Time
}

// EffectiveLabels are the labels selectors match (labels.Effective): ReportedLabels
// overridden by Labels.
func (n Node) EffectiveLabels() map[string]string {
	return labels.Effective(n.Labels, n.ReportedLabels)
}

// NodeFilter selects nodes to list.
type NodeFilter struct {
	IncludeRevoked bool
	// Capability, Labels and Presence select; empty selects all.
	Capability string
	Labels     map[string]string
	Presence   Presence
	// PageSize is the most nodes to return; zero means 100.
	PageSize int
	// PageToken is the next-page token of the previous page; empty for the first.
	PageToken string
}
