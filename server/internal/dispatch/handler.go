package dispatch

import (
	"context"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	"github.com/palyra/palyra/gen/go/palyra/controlplane/v1/controlplanev1connect"
	"github.com/palyra/palyra/server/internal/access"
	"github.com/palyra/palyra/server/internal/audit"
	"github.com/palyra/palyra/server/internal/errdefs"
)

// Handler serves DispatchService.
type Handler struct {
	s *Service
}

var _ controlplanev1connect.DispatchServiceHandler = (*Handler)(nil)

// Handler returns the DispatchService handler.
func (s *Service) Handler() *Handler { return &Handler{s: s} }

// CreateDispatch queues a dispatch.
func (h *Handler) CreateDispatch(ctx context.Context, req *connect.Request[controlplanev1.CreateDispatchRequest]) (*connect.Response[controlplanev1.CreateDispatchResponse], error) {
	m := req.Msg
	r, err := request(ctx, m.GetNodeId(), m.GetCapability(), m.GetInputJson(), m.GetTimeout().AsDuration(), m.GetMaxOutputBytes(), m.GetIdempotencyKey())
	if err != nil {
		return nil, err
	}
	d, created, err := h.s.Create(ctx, r)
	if err != nil {
		return nil, err
	}
	audit.SetTarget(ctx, "dispatch:"+d.ID)
	return connect.NewResponse(&controlplanev1.CreateDispatchResponse{Dispatch: dispatchProto(d), Created: created}), nil
}

// ExecuteCapability creates a dispatch and waits for its end.
func (h *Handler) ExecuteCapability(ctx context.Context, req *connect.Request[controlplanev1.ExecuteCapabilityRequest]) (*connect.Response[controlplanev1.ExecuteCapabilityResponse], error) {
	m := req.Msg
	// The output comes back in one response: at most half a message.
	limit := int64(h.s.opts.MaxMessageBytes / 2)
	if h.s.opts.MaxMessageBytes > 0 && m.GetMaxOutputBytes() > uint64(limit) {
		return nil, errInvalid("max_output_bytes %d is more than this daemon returns in one response (%d): use CreateDispatch and WatchDispatch",
			m.GetMaxOutputBytes(), limit)
	}
	r, err := request(ctx, m.GetNodeId(), m.GetCapability(), m.GetInputJson(), m.GetTimeout().AsDuration(), m.GetMaxOutputBytes(), m.GetIdempotencyKey())
	if err != nil {
		return nil, err
	}
	if r.MaxOutputBytes == 0 {
		r.MaxOutputBytes = min(DefaultMaxOutputBytes, limit)
	}
	d, err := h.s.Execute(ctx, r, func(id string) { audit.SetTarget(ctx, "dispatch:"+id) })
	if err != nil {
		return nil, err
	}
	res := &controlplanev1.ExecuteCapabilityResponse{Dispatch: dispatchProto(d)}
	budget := h.outputBudget(res, 0)
	out, next, known := knownOutput(d, budget)
	if !known {
		if out, next, err = h.s.Output(ctx, d.ID, 0, d.OutputStored, budget); err != nil {
			return nil, err
		}
	}
	res.Output, res.NextOutputOffset, res.MoreOutput = outputProtos(out), uint64(next), next < d.OutputStored
	return connect.NewResponse(res), nil
}

// outputBudget is how much output (with rowOverhead per chunk) fits in res, a
// response without its output yet, within the message limit; at most page when page
// is not zero.
func (h *Handler) outputBudget(res proto.Message, page uint32) int64 {
	const framing = 1 << 10 // the response's own fields and envelope, with room to spare
	budget := int64(DefaultMaxOutputBytes)
	if h.s.opts.MaxMessageBytes > 0 {
		budget = int64(h.s.opts.MaxMessageBytes - proto.Size(res) - framing)
	}
	if page > 0 {
		budget = min(budget, int64(page))
	}
	return max(budget, minPage)
}

// request is the Request of a create call, created by the calling principal.
func request(ctx context.Context, node, capability, input string, timeout time.Duration, maxOutput uint64, key string) (Request, error) {
	by, err := access.Caller(ctx)
	if err != nil {
		return Request{}, err
	}
	return Request{
		NodeID: node, Capability: capability, Input: input, Timeout: timeout,
		MaxOutputBytes: int64(maxOutput), IdempotencyKey: key, CreatedBy: by.ID(),
	}, nil
}

// GetDispatch returns a dispatch, and a page of its output when asked.
func (h *Handler) GetDispatch(ctx context.Context, req *connect.Request[controlplanev1.GetDispatchRequest]) (*connect.Response[controlplanev1.GetDispatchResponse], error) {
	d, err := h.s.Get(ctx, req.Msg.GetId())
	if err != nil {
		return nil, err
	}
	res := &controlplanev1.GetDispatchResponse{Dispatch: dispatchProto(d)}
	if req.Msg.GetIncludeOutput() {
		from := int64(min(req.Msg.GetOutputOffset(), 1<<62))
		out, next, err := h.s.Output(ctx, d.ID, from, d.OutputStored, h.outputBudget(res, req.Msg.GetOutputPageBytes()))
		if err != nil {
			return nil, err
		}
		res.Output, res.NextOutputOffset, res.MoreOutput = outputProtos(out), uint64(next), next < d.OutputStored
	}
	return connect.NewResponse(res), nil
}

// WatchDispatch streams a dispatch until it ends.
func (h *Handler) WatchDispatch(ctx context.Context, req *connect.Request[controlplanev1.WatchDispatchRequest], stream *connect.ServerStream[controlplanev1.WatchDispatchResponse]) error {
	from := req.Msg.GetFromOffset()
	if from > 1<<62 {
		return errInvalid("from_offset %d is beyond any output", from)
	}
	return h.s.Watch(ctx, req.Msg.GetId(), int64(from),
		func(d Dispatch) error {
			return stream.Send(&controlplanev1.WatchDispatchResponse{Event: &controlplanev1.WatchDispatchResponse_Dispatch{Dispatch: dispatchProto(d)}})
		},
		func(o OutputChunk) error {
			return stream.Send(&controlplanev1.WatchDispatchResponse{Event: &controlplanev1.WatchDispatchResponse_Output{Output: outputProto(o)}})
		})
}

// CancelDispatch cancels a dispatch.
func (h *Handler) CancelDispatch(ctx context.Context, req *connect.Request[controlplanev1.CancelDispatchRequest]) (*connect.Response[controlplanev1.CancelDispatchResponse], error) {
	audit.SetTarget(ctx, "dispatch:"+req.Msg.GetId())
	d, err := h.s.Cancel(ctx, req.Msg.GetId(), req.Msg.GetReason())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&controlplanev1.CancelDispatchResponse{Dispatch: dispatchProto(d)}), nil
}

// ListDispatches lists dispatches, newest first.
func (h *Handler) ListDispatches(ctx context.Context, req *connect.Request[controlplanev1.ListDispatchesRequest]) (*connect.Response[controlplanev1.ListDispatchesResponse], error) {
	m := req.Msg
	f := Filter{
		NodeID: m.GetNodeId(), State: keyOf(stateProtos, m.GetState()), Capability: m.GetCapability(),
		PageSize: int(m.GetPageSize()), PageToken: m.GetPageToken(),
	}
	var err error
	if f.CreatedSince, err = timeBound("create_time_after", m.GetCreateTimeAfter()); err != nil {
		return nil, err
	}
	if f.CreatedBefore, err = timeBound("create_time_before", m.GetCreateTimeBefore()); err != nil {
		return nil, err
	}
	rows, next, err := h.s.List(ctx, f)
	if err != nil {
		return nil, err
	}
	res := &controlplanev1.ListDispatchesResponse{NextPageToken: next}
	for _, d := range rows {
		res.Dispatches = append(res.Dispatches, dispatchProto(d))
	}
	return connect.NewResponse(res), nil
}

// timeBound is a request's optional time bound: nil when unset, Invalid naming field
// when it is not a valid timestamp.
func timeBound(field string, ts *timestamppb.Timestamp) (*time.Time, error) {
	if ts == nil {
		return nil, nil
	}
	if err := ts.CheckValid(); err != nil {
		return nil, errdefs.InvalidField(field, "not a valid time: %v", err)
	}
	at := ts.AsTime()
	return &at, nil
}
