package dispatch

import (
	"encoding/json"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/palyra/palyra/gen/dbsqlc"
	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	nodev1 "github.com/palyra/palyra/gen/go/palyra/node/v1"
)

// The states of a dispatch as stored (the dispatches_state constraint).
const (
	stateQueued    = "queued"
	stateSent      = "sent"
	stateRunning   = "running"
	stateSucceeded = "succeeded"
	stateFailed    = "failed"
	stateTimedOut  = "timed_out"
	stateCancelled = "cancelled"
)

// stateProtos maps the stored states to the API's.
var stateProtos = map[string]controlplanev1.DispatchState{
	stateQueued:    controlplanev1.DispatchState_DISPATCH_STATE_QUEUED,
	stateSent:      controlplanev1.DispatchState_DISPATCH_STATE_SENT,
	stateRunning:   controlplanev1.DispatchState_DISPATCH_STATE_RUNNING,
	stateSucceeded: controlplanev1.DispatchState_DISPATCH_STATE_SUCCEEDED,
	stateFailed:    controlplanev1.DispatchState_DISPATCH_STATE_FAILED,
	stateTimedOut:  controlplanev1.DispatchState_DISPATCH_STATE_TIMED_OUT,
	stateCancelled: controlplanev1.DispatchState_DISPATCH_STATE_CANCELLED,
}

// stateName is the stored state of an API state; "" for unspecified.
func stateName(s controlplanev1.DispatchState) string {
	for name, p := range stateProtos {
		if p == s {
			return name
		}
	}
	return ""
}

// terminal reports whether a stored state is an end.
func terminal(state string) bool {
	switch state {
	case stateSucceeded, stateFailed, stateTimedOut, stateCancelled:
		return true
	}
	return false
}

// outcomeStates maps the outcomes nodes report to the stored states.
var outcomeStates = map[nodev1.DispatchOutcome]string{
	nodev1.DispatchOutcome_DISPATCH_OUTCOME_SUCCEEDED: stateSucceeded,
	nodev1.DispatchOutcome_DISPATCH_OUTCOME_FAILED:    stateFailed,
	nodev1.DispatchOutcome_DISPATCH_OUTCOME_TIMED_OUT: stateTimedOut,
	nodev1.DispatchOutcome_DISPATCH_OUTCOME_CANCELLED: stateCancelled,
}

// streamNames maps output streams to their stored names.
var streamNames = map[nodev1.OutputStream]string{
	nodev1.OutputStream_OUTPUT_STREAM_STDOUT: "stdout",
	nodev1.OutputStream_OUTPUT_STREAM_STDERR: "stderr",
}

// streamProto is the output stream of a stored name.
func streamProto(name string) nodev1.OutputStream {
	for p, n := range streamNames {
		if n == name {
			return p
		}
	}
	return nodev1.OutputStream_OUTPUT_STREAM_UNSPECIFIED
}

// capability is a capability as stored in devices.capabilities (a JSON array; the
// ListNodes capability filter matches on "name").
type capability struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	InputSchema string `json:"input_schema,omitempty"`
	Available   bool   `json:"available"`
}

// capabilitiesOf is announced capabilities as the daemon keeps them.
func capabilitiesOf(caps []*nodev1.Capability) []capability {
	out := make([]capability, 0, len(caps))
	for _, c := range caps {
		out = append(out, capability{Name: c.GetName(), Description: c.GetDescription(), InputSchema: c.GetInputSchema(), Available: c.GetAvailable()})
	}
	return out
}

// parseCapabilities reads devices.capabilities.
func parseCapabilities(raw []byte) ([]capability, error) {
	var caps []capability
	if err := json.Unmarshal(raw, &caps); err != nil {
		return nil, fmt.Errorf("dispatch: stored capabilities: %w", err)
	}
	return caps, nil
}

// capabilityProtos is stored capabilities as the API shows them.
func capabilityProtos(caps []capability) []*nodev1.Capability {
	out := make([]*nodev1.Capability, 0, len(caps))
	for _, c := range caps {
		out = append(out, &nodev1.Capability{Name: c.Name, Description: c.Description, InputSchema: c.InputSchema, Available: c.Available})
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
func dispatchProto(d dbsqlc.Dispatch) *controlplanev1.Dispatch {
	out := &controlplanev1.Dispatch{
		Id:               d.ID,
		NodeId:           d.DeviceID,
		Capability:       d.Capability,
		InputJson:        string(d.Input),
		State:            stateProtos[d.State],
		CreatedBy:        d.CreatedBy,
		CreateTime:       timestamppb.New(d.CreatedAt),
		Deadline:         timestamppb.New(d.Deadline),
		MaxOutputBytes:   uint64(d.MaxOutputBytes),
		SendTime:         timestamp(d.SentAt),
		StartTime:        timestamp(d.StartedAt),
		FinishTime:       timestamp(d.FinishedAt),
		ResultJson:       string(d.Result),
		Error:            d.Error,
		ExitCode:         d.ExitCode,
		OutputBytes:      uint64(d.OutputBytes),
		OutputTruncated:  d.OutputTruncated,
		CancelTime:       timestamp(d.CancelRequestedAt),
		OutputLost:       d.OutputLostReason != "",
		OutputLostReason: d.OutputLostReason,
	}
	if d.IdempotencyKey != nil {
		out.IdempotencyKey = *d.IdempotencyKey
	}
	return out
}

// outputProto is a chunk of output as the API shows it.
func outputProto(r dbsqlc.DispatchOutput) *controlplanev1.OutputChunk {
	return &controlplanev1.OutputChunk{Stream: streamProto(r.Stream), Offset: uint64(r.Offset), Data: r.Data}
}

// outputProtos is chunks of output as the API shows them.
func outputProtos(rows []dbsqlc.DispatchOutput) []*controlplanev1.OutputChunk {
	out := make([]*controlplanev1.OutputChunk, 0, len(rows))
	for _, r := range rows {
		out = append(out, outputProto(r))
	}
	return out
}

// dispatchMessage is a dispatch as its node receives it.
func dispatchMessage(d dbsqlc.Dispatch) *nodev1.AttachResponse {
	return &nodev1.AttachResponse{Message: &nodev1.AttachResponse_Dispatch{Dispatch: &nodev1.Dispatch{
		DispatchId:     d.ID,
		Capability:     d.Capability,
		InputJson:      string(d.Input),
		Deadline:       timestamppb.New(d.Deadline),
		MaxOutputBytes: uint64(d.MaxOutputBytes),
	}}}
}
