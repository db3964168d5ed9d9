package dispatch

import (
	"encoding/json"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	nodev1 "github.com/palyra/palyra/gen/go/palyra/node/v1"
)

// stateProtos maps the states to the API's.
var stateProtos = map[State]controlplanev1.DispatchState{
	StateQueued:    controlplanev1.DispatchState_DISPATCH_STATE_QUEUED,
	StateSent:      controlplanev1.DispatchState_DISPATCH_STATE_SENT,
	StateRunning:   controlplanev1.DispatchState_DISPATCH_STATE_RUNNING,
	StateSucceeded: controlplanev1.DispatchState_DISPATCH_STATE_SUCCEEDED,
	StateFailed:    controlplanev1.DispatchState_DISPATCH_STATE_FAILED,
	StateTimedOut:  controlplanev1.DispatchState_DISPATCH_STATE_TIMED_OUT,
	StateCancelled: controlplanev1.DispatchState_DISPATCH_STATE_CANCELLED,
}

// keyOf returns the key m maps to v; the zero key when none does (an unspecified
// value of the API).
func keyOf[K, V comparable](m map[K]V, v V) K {
	for k, mv := range m {
		if mv == v {
			return k
		}
	}
	var zero K
	return zero
}

// outcomeStates maps the outcomes nodes report to the states.
var outcomeStates = map[nodev1.DispatchOutcome]State{
	nodev1.DispatchOutcome_DISPATCH_OUTCOME_SUCCEEDED: StateSucceeded,
	nodev1.DispatchOutcome_DISPATCH_OUTCOME_FAILED:    StateFailed,
	nodev1.DispatchOutcome_DISPATCH_OUTCOME_TIMED_OUT: StateTimedOut,
	nodev1.DispatchOutcome_DISPATCH_OUTCOME_CANCELLED: StateCancelled,
}

// presenceProtos maps the presences to the API's.
var presenceProtos = map[Presence]controlplanev1.Presence{
	PresenceOnline:  controlplanev1.Presence_PRESENCE_ONLINE,
	PresenceStale:   controlplanev1.Presence_PRESENCE_STALE,
	PresenceOffline: controlplanev1.Presence_PRESENCE_OFFLINE,
}

// streamNames maps output streams to their stored names.
var streamNames = map[nodev1.OutputStream]string{
	nodev1.OutputStream_OUTPUT_STREAM_STDOUT: "stdout",
	nodev1.OutputStream_OUTPUT_STREAM_STDERR: "stderr",
}

// capabilitiesOf is announced capabilities as the daemon keeps them.
func capabilitiesOf(caps []*nodev1.Capability) []Capability {
	out := make([]Capability, 0, len(caps))
	for _, c := range caps {
		out = append(out, Capability{Name: c.GetName(), Description: c.GetDescription(), InputSchema: c.GetInputSchema(),
			Available: c.GetAvailable(), Models: c.GetModels()})
	}
	return out
}

// parseCapabilities reads devices.capabilities.
func parseCapabilities(raw []byte) ([]Capability, error) {
	var caps []Capability
	if err := json.Unmarshal(raw, &caps); err != nil {
		return nil, fmt.Errorf("dispatch: stored capabilities: %w", err)
	}
	return caps, nil
}

// capabilityProtos is stored capabilities as the API shows them.
func capabilityProtos(caps []Capability) []*nodev1.Capability {
	out := make([]*nodev1.Capability, 0, len(caps))
	for _, c := range caps {
		out = append(out, &nodev1.Capability{Name: c.Name, Description: c.Description, InputSchema: c.InputSchema,
			Available: c.Available, Models: c.Models})
	}
	return out
}

// labelsJSON is labels as a JSON object ({} when there are none, never null).
func labelsJSON(labels map[string]string) ([]byte, error) {
	if labels == nil {
		labels = map[string]string{}
	}
	return json.Marshal(labels)
}

// parseLabels reads a JSON object of labels (devices.labels, devices.reported_labels).
func parseLabels(raw []byte) (map[string]string, error) {
	labels := map[string]string{}
	if err := json.Unmarshal(raw, &labels); err != nil {
		return nil, fmt.Errorf("dispatch: stored labels: %w", err)
	}
	return labels, nil
}

// timestamp is t as the API shows it; nil for nil.
func timestamp(t *time.Time) *timestamppb.Timestamp {
	if t == nil {
		return nil
	}
	return timestamppb.New(*t)
}

// dispatchProto is a dispatch as the API shows it.
func dispatchProto(d Dispatch) *controlplanev1.Dispatch {
	return &controlplanev1.Dispatch{
		Id:               d.ID,
		NodeId:           d.NodeID,
		Capability:       d.Capability,
		InputJson:        d.Input,
		State:            stateProtos[d.State],
		CreatedBy:        d.CreatedBy,
		CreateTime:       timestamppb.New(d.CreatedAt),
		Deadline:         timestamppb.New(d.Deadline),
		MaxOutputBytes:   uint64(d.MaxOutputBytes),
		SendTime:         timestamp(d.SentAt),
		StartTime:        timestamp(d.StartedAt),
		FinishTime:       timestamp(d.FinishedAt),
		ResultJson:       d.Result,
		Error:            d.Error,
		ExitCode:         d.ExitCode,
		OutputBytes:      uint64(d.OutputBytes),
		OutputTruncated:  d.OutputTruncated,
		CancelTime:       timestamp(d.CancelRequestedAt),
		OutputLost:       d.OutputLostReason != "",
		OutputLostReason: d.OutputLostReason,
		IdempotencyKey:   d.IdempotencyKey,
	}
}

// outputProto is a chunk of output as the API shows it.
func outputProto(r OutputChunk) *controlplanev1.OutputChunk {
	return &controlplanev1.OutputChunk{Stream: keyOf(streamNames, r.Stream), Offset: uint64(r.Offset), Data: r.Data}
}

// outputProtos is chunks of output as the API shows them.
func outputProtos(rows []OutputChunk) []*controlplanev1.OutputChunk {
	out := make([]*controlplanev1.OutputChunk, 0, len(rows))
	for _, r := range rows {
		out = append(out, outputProto(r))
	}
	return out
}

// dispatchMessage is a dispatch as its node receives it.
func dispatchMessage(d Dispatch) *nodev1.AttachResponse {
	return &nodev1.AttachResponse{Message: &nodev1.AttachResponse_Dispatch{Dispatch: &nodev1.Dispatch{
		DispatchId:     d.ID,
		Capability:     d.Capability,
		InputJson:      d.Input,
		Deadline:       timestamppb.New(d.Deadline),
		MaxOutputBytes: uint64(d.MaxOutputBytes),
	}}}
}

// nodeProto is a node as the API shows it.
func nodeProto(n Node) *controlplanev1.Node {
	out := &controlplanev1.Node{
		Id: n.ID, Name: n.Name, Platform: n.Platform, AgentVersion: n.AgentVersion,
		Labels: n.Labels, ReportedLabels: n.ReportedLabels, Capabilities: capabilityProtos(n.Capabilities),
		CreateTime: timestamppb.New(n.CreatedAt), LastSeenTime: timestamp(n.LastSeenAt),
		Presence: presenceProtos[n.Presence], Revoked: n.Revoked, ProtocolVersion: uint32(n.ProtocolVersion),
		AttachedReplica: n.AttachedReplica, EffectiveLabels: n.EffectiveLabels(),
	}
	if !n.CertificateNotAfter.IsZero() {
		out.CertificateExpireTime = timestamppb.New(n.CertificateNotAfter)
	}
	return out
}
