// Package dispatchtest is a fake DispatchService for the tests of the commands that run
// and follow dispatches (palyra nodes invoke, palyra dispatches). It keeps dispatches
// in memory, runs each as the test's Runner says, records what it was asked, and can
// inject the failures that the commands must survive: transport errors on creation and
// in the middle of a watch.
package dispatchtest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	"github.com/palyra/palyra/gen/go/palyra/controlplane/v1/controlplanev1connect"
	nodev1 "github.com/palyra/palyra/gen/go/palyra/node/v1"
)

// Run is what the fake node does with a dispatch.
type Run struct {
	// Output is written in order; the fake sets the offsets.
	Output []Chunk
	// State is the terminal state; unset means succeeded.
	State controlplanev1.DispatchState
	// ExitCode, Error, ResultJSON and Truncated are the result; OutputLost, when set,
	// is why palyrad holds less output than the node reported.
	ExitCode   int32
	Error      string
	ResultJSON string
	Truncated  bool
	OutputLost string
	// Hold keeps the dispatch running (after its output) until it is cancelled.
	Hold bool
	// QueueFor keeps the dispatch queued that long in a watch before it runs.
	QueueFor time.Duration
}

// Chunk is a piece of output on stdout or stderr.
type Chunk struct {
	Stderr bool
	Data   string
}

// Runner decides what a dispatch does.
type Runner func(req *controlplanev1.CreateDispatchRequest) Run

// Calls are the requests the fake received, in order.
type Calls struct {
	Creates  []*controlplanev1.CreateDispatchRequest
	Executes []*controlplanev1.ExecuteCapabilityRequest
	Gets     []*controlplanev1.GetDispatchRequest
	Watches  []*controlplanev1.WatchDispatchRequest
	Cancels  []*controlplanev1.CancelDispatchRequest
	Lists    []*controlplanev1.ListDispatchesRequest
}

// Fake is a DispatchService in memory.
type Fake struct {
	controlplanev1connect.UnimplementedDispatchServiceHandler

	// Now is the clock of the dispatches' times.
	Now time.Time
	// Runner decides what a dispatch does; nil makes it succeed without output.
	Runner Runner
	// FailCreates makes that many creations (CreateDispatch and ExecuteCapability) fail
	// with FailCode; they are recorded all the same.
	FailCreates int
	// FailCode is the code of the failed creations; unset means Unavailable.
	FailCode connect.Code
	// BreakWatchAfter breaks the first watch's connection after it sent that many
	// chunks of output; 0 never breaks it.
	BreakWatchAfter int
	// ReplayOutput makes every watch send the output from the start, whatever its
	// from_offset, as a careless server might after a resumption.
	ReplayOutput bool
	// PageSize is the most dispatches a list returns when it asks for none.
	PageSize int
	// OutputPage is the most chunks of output GetDispatch and ExecuteCapability
	// return at once (more_output says that more follow); 0 returns all.
	OutputPage int
	// Watching receives the id of a dispatch whose watch waits for its end (Hold),
	// once the watch has sent its output; nil sends nothing.
	Watching chan string
	// Executing receives the id of a dispatch that ExecuteCapability waits for (Hold).
	Executing chan string

	mu      sync.Mutex // guards the following
	next    int
	order   []string // ids, oldest first
	disp    map[string]*entry
	byKey   map[string]string // idempotency key → id
	calls   Calls
	breakOK bool // the first watch was broken already
}

var _ controlplanev1connect.DispatchServiceHandler = (*Fake)(nil)

// entry is a dispatch, its output and its run.
type entry struct {
	d         *controlplanev1.Dispatch
	output    []*controlplanev1.OutputChunk
	run       Run
	cancelled chan struct{} // closed when cancelled
}

// Mount serves the fake on mux.
func (f *Fake) Mount(mux *http.ServeMux) {
	mux.Handle(controlplanev1connect.NewDispatchServiceHandler(f))
}

// Calls returns a copy of the requests received so far.
func (f *Fake) Calls() Calls {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.calls
	c.Creates = append([]*controlplanev1.CreateDispatchRequest(nil), c.Creates...)
	c.Executes = append([]*controlplanev1.ExecuteCapabilityRequest(nil), c.Executes...)
	c.Gets = append([]*controlplanev1.GetDispatchRequest(nil), c.Gets...)
	c.Watches = append([]*controlplanev1.WatchDispatchRequest(nil), c.Watches...)
	c.Cancels = append([]*controlplanev1.CancelDispatchRequest(nil), c.Cancels...)
	c.Lists = append([]*controlplanev1.ListDispatchesRequest(nil), c.Lists...)
	return c
}

// Add stores a dispatch as it is, with its output, and returns its id (a new one when
// it has none). A dispatch that has not ended stays as it is until it is cancelled.
func (f *Fake) Add(d *controlplanev1.Dispatch, output ...Chunk) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	e := f.addLocked(proto.Clone(d).(*controlplanev1.Dispatch), Run{Output: output, Hold: !terminal(d.GetState())})
	return e.d.GetId()
}

// Dispatch returns a copy of the dispatch id as it is now.
func (f *Fake) Dispatch(id string) *controlplanev1.Dispatch {
	f.mu.Lock()
	defer f.mu.Unlock()
	if e := f.disp[id]; e != nil {
		return proto.Clone(e.d).(*controlplanev1.Dispatch)
	}
	return nil
}

// ID returns the id of the n-th dispatch the fake creates, from 1.
func ID(n int) string { return fmt.Sprintf("01JD60000000000000000000%02d", n) }

// addLocked stores a dispatch with an id of its own and its output.
func (f *Fake) addLocked(d *controlplanev1.Dispatch, run Run) *entry {
	if f.disp == nil {
		f.disp, f.byKey = map[string]*entry{}, map[string]string{}
	}
	if d.GetId() == "" {
		f.next++
		d.Id = ID(f.next)
	}
	e := &entry{d: d, run: run, cancelled: make(chan struct{})}
	var offset uint64
	for _, c := range run.Output {
		stream := nodev1.OutputStream_OUTPUT_STREAM_STDOUT
		if c.Stderr {
			stream = nodev1.OutputStream_OUTPUT_STREAM_STDERR
		}
		e.output = append(e.output, &controlplanev1.OutputChunk{Stream: stream, Offset: offset, Data: []byte(c.Data)})
		offset += uint64(len(c.Data))
	}
	if d.OutputBytes == 0 {
		d.OutputBytes = offset
	}
	f.disp[d.Id] = e
	f.order = append(f.order, d.Id)
	if d.GetIdempotencyKey() != "" {
		f.byKey[d.GetIdempotencyKey()] = d.Id
	}
	return e
}

// create creates a dispatch, or returns the one its idempotency key names. A dispatch
// that is not held ends at once when wait is set (ExecuteCapability); otherwise it runs
// until a watch has sent its output (CreateDispatch).
func (f *Fake) create(req *controlplanev1.CreateDispatchRequest, wait bool) (e *entry, created bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if id, ok := f.byKey[req.GetIdempotencyKey()]; ok && req.GetIdempotencyKey() != "" {
		return f.disp[id], false
	}
	run := Run{}
	if f.Runner != nil {
		run = f.Runner(req)
	}
	maxOut := req.GetMaxOutputBytes()
	if maxOut == 0 {
		maxOut = 1 << 20
	}
	timeout := 60 * time.Second
	if req.GetTimeout() != nil {
		timeout = req.GetTimeout().AsDuration()
	}
	d := &controlplanev1.Dispatch{
		NodeId: req.GetNodeId(), Capability: req.GetCapability(), InputJson: req.GetInputJson(), IdempotencyKey: req.GetIdempotencyKey(),
		CreatedBy: "token:01JD5ZJ8Q0W1X2Y3Z4A5B6C7D8", CreateTime: timestamppb.New(f.Now), Deadline: timestamppb.New(f.Now.Add(timeout)),
		MaxOutputBytes: maxOut, State: controlplanev1.DispatchState_DISPATCH_STATE_RUNNING,
		SendTime: timestamppb.New(f.Now), StartTime: timestamppb.New(f.Now),
	}
	if run.QueueFor > 0 {
		d.State, d.SendTime, d.StartTime = controlplanev1.DispatchState_DISPATCH_STATE_QUEUED, nil, nil
	}
	e = f.addLocked(d, run)
	if wait && !run.Hold && run.QueueFor == 0 {
		f.finishLocked(e)
	}
	return e, true
}

// finishLocked ends a dispatch as its run says.
func (f *Fake) finishLocked(e *entry) {
	d := e.d
	d.State = e.run.State
	if d.State == controlplanev1.DispatchState_DISPATCH_STATE_UNSPECIFIED {
		d.State = controlplanev1.DispatchState_DISPATCH_STATE_SUCCEEDED
	}
	if d.StartTime == nil {
		d.SendTime, d.StartTime = timestamppb.New(f.Now), timestamppb.New(f.Now)
	}
	d.FinishTime = timestamppb.New(f.Now.Add(1500 * time.Millisecond))
	d.ExitCode, d.Error, d.ResultJson, d.OutputTruncated = e.run.ExitCode, e.run.Error, e.run.ResultJSON, e.run.Truncated
	if e.run.Truncated {
		d.OutputBytes = 3 * d.GetMaxOutputBytes()
	}
	d.OutputLost, d.OutputLostReason = e.run.OutputLost != "", e.run.OutputLost
}

// snapshot returns a copy of a dispatch and of its output from offset on.
func (f *Fake) snapshot(id string, from uint64) (*controlplanev1.Dispatch, []*controlplanev1.OutputChunk, *entry) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e := f.disp[id]
	if e == nil {
		return nil, nil, nil
	}
	var out []*controlplanev1.OutputChunk
	for _, c := range e.output {
		if c.GetOffset()+uint64(len(c.GetData())) > from {
			out = append(out, proto.Clone(c).(*controlplanev1.OutputChunk))
		}
	}
	return proto.Clone(e.d).(*controlplanev1.Dispatch), out, e
}

func (f *Fake) failCreate() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.FailCreates > 0 {
		f.FailCreates--
		if f.FailCode != 0 {
			return connect.NewError(f.FailCode, errors.New("refused by the fake"))
		}
		return connect.NewError(connect.CodeUnavailable, errors.New("replica shutting down"))
	}
	return nil
}

func notFound(id string) error {
	return connect.NewError(connect.CodeNotFound, fmt.Errorf("dispatch %s not found", id))
}

// CreateDispatch implements DispatchServiceHandler.
func (f *Fake) CreateDispatch(_ context.Context, req *connect.Request[controlplanev1.CreateDispatchRequest]) (*connect.Response[controlplanev1.CreateDispatchResponse], error) {
	f.mu.Lock()
	f.calls.Creates = append(f.calls.Creates, req.Msg)
	f.mu.Unlock()
	if err := f.failCreate(); err != nil {
		return nil, err
	}
	e, created := f.create(req.Msg, false)
	d, _, _ := f.snapshot(e.d.GetId(), 0)
	if created {
		d.State, d.SendTime, d.StartTime = controlplanev1.DispatchState_DISPATCH_STATE_QUEUED, nil, nil
	}
	return connect.NewResponse(&controlplanev1.CreateDispatchResponse{Dispatch: d, Created: created}), nil
}

// ExecuteCapability implements DispatchServiceHandler.
func (f *Fake) ExecuteCapability(ctx context.Context, req *connect.Request[controlplanev1.ExecuteCapabilityRequest]) (*connect.Response[controlplanev1.ExecuteCapabilityResponse], error) {
	f.mu.Lock()
	f.calls.Executes = append(f.calls.Executes, req.Msg)
	f.mu.Unlock()
	if err := f.failCreate(); err != nil {
		return nil, err
	}
	m := req.Msg
	e, _ := f.create(&controlplanev1.CreateDispatchRequest{
		NodeId: m.GetNodeId(), Capability: m.GetCapability(), InputJson: m.GetInputJson(), Timeout: m.GetTimeout(),
		MaxOutputBytes: m.GetMaxOutputBytes(), IdempotencyKey: m.GetIdempotencyKey(),
	}, true)
	if e.run.Hold {
		if f.Executing != nil {
			select {
			case f.Executing <- e.d.GetId():
			case <-ctx.Done():
				return nil, connect.NewError(connect.CodeCanceled, ctx.Err())
			}
		}
		select {
		case <-e.cancelled:
		case <-ctx.Done():
			return nil, connect.NewError(connect.CodeCanceled, ctx.Err())
		}
	}
	d, out, _ := f.snapshot(e.d.GetId(), 0)
	out, next, more := f.page(out, 0)
	return connect.NewResponse(&controlplanev1.ExecuteCapabilityResponse{Dispatch: d, Output: out, NextOutputOffset: next, MoreOutput: more}), nil
}

// page returns the first OutputPage chunks of out, which begins at from, the offset
// after them, and whether more follow.
func (f *Fake) page(out []*controlplanev1.OutputChunk, from uint64) ([]*controlplanev1.OutputChunk, uint64, bool) {
	f.mu.Lock()
	n := f.OutputPage
	f.mu.Unlock()
	more := n > 0 && len(out) > n
	if more {
		out = out[:n]
	}
	if len(out) > 0 {
		last := out[len(out)-1]
		from = last.GetOffset() + uint64(len(last.GetData()))
	}
	return out, from, more
}

// GetDispatch implements DispatchServiceHandler.
func (f *Fake) GetDispatch(_ context.Context, req *connect.Request[controlplanev1.GetDispatchRequest]) (*connect.Response[controlplanev1.GetDispatchResponse], error) {
	f.mu.Lock()
	f.calls.Gets = append(f.calls.Gets, req.Msg)
	f.mu.Unlock()
	from := req.Msg.GetOutputOffset()
	d, out, _ := f.snapshot(req.Msg.GetId(), from)
	if d == nil {
		return nil, notFound(req.Msg.GetId())
	}
	res := &controlplanev1.GetDispatchResponse{Dispatch: d}
	if req.Msg.GetIncludeOutput() {
		if len(out) > 0 && out[0].GetOffset() < from { // cut where the page begins
			out[0].Data, out[0].Offset = out[0].GetData()[from-out[0].GetOffset():], from
		}
		res.Output, res.NextOutputOffset, res.MoreOutput = f.page(out, from)
	}
	return connect.NewResponse(res), nil
}

// WatchDispatch implements DispatchServiceHandler: the dispatch as it is, then (after
// QueueFor, in the queued state) running, its output from the offset asked for, and
// its end (after a wait for its cancellation when it is held).
func (f *Fake) WatchDispatch(ctx context.Context, req *connect.Request[controlplanev1.WatchDispatchRequest], stream *connect.ServerStream[controlplanev1.WatchDispatchResponse]) error {
	f.mu.Lock()
	f.calls.Watches = append(f.calls.Watches, req.Msg)
	breakAfter := 0
	if f.BreakWatchAfter > 0 && !f.breakOK {
		breakAfter, f.breakOK = f.BreakWatchAfter, true
	}
	replay := f.ReplayOutput
	f.mu.Unlock()
	from := req.Msg.GetFromOffset()
	if replay {
		from = 0
	}
	d, out, e := f.snapshot(req.Msg.GetId(), from)
	if d == nil {
		return notFound(req.Msg.GetId())
	}
	send := func(d *controlplanev1.Dispatch) error {
		return stream.Send(&controlplanev1.WatchDispatchResponse{Event: &controlplanev1.WatchDispatchResponse_Dispatch{Dispatch: d}})
	}
	if err := send(d); err != nil {
		return err
	}
	if d.GetState() == controlplanev1.DispatchState_DISPATCH_STATE_QUEUED && e.run.QueueFor > 0 {
		select {
		case <-time.After(e.run.QueueFor):
		case <-e.cancelled:
		case <-ctx.Done():
			return ctx.Err()
		}
		f.mu.Lock()
		if e.d.GetState() == controlplanev1.DispatchState_DISPATCH_STATE_QUEUED {
			e.d.State, e.d.SendTime, e.d.StartTime = controlplanev1.DispatchState_DISPATCH_STATE_RUNNING, timestamppb.New(f.Now), timestamppb.New(f.Now)
		}
		f.mu.Unlock()
		if d, _, _ = f.snapshot(d.GetId(), 0); d.GetState() == controlplanev1.DispatchState_DISPATCH_STATE_RUNNING {
			if err := send(d); err != nil {
				return err
			}
		}
	}
	for i, c := range out {
		if breakAfter > 0 && i == breakAfter {
			// Cut the connection as a failing proxy or replica would: the client sees
			// a reset stream, not an answer.
			panic(http.ErrAbortHandler)
		}
		if err := stream.Send(&controlplanev1.WatchDispatchResponse{Event: &controlplanev1.WatchDispatchResponse_Output{Output: c}}); err != nil {
			return err
		}
	}
	if e.run.Hold {
		if f.Watching != nil && !terminal(d.GetState()) {
			select {
			case f.Watching <- d.GetId():
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		select {
		case <-e.cancelled:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	f.mu.Lock()
	if !terminal(e.d.GetState()) {
		f.finishLocked(e) // its output has been sent
	}
	f.mu.Unlock()
	d, _, _ = f.snapshot(d.GetId(), 0)
	return send(d)
}

// CancelDispatch implements DispatchServiceHandler: a dispatch that has not ended is
// cancelled at once; one that has is FailedPrecondition.
func (f *Fake) CancelDispatch(_ context.Context, req *connect.Request[controlplanev1.CancelDispatchRequest]) (*connect.Response[controlplanev1.CancelDispatchResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls.Cancels = append(f.calls.Cancels, req.Msg)
	e := f.disp[req.Msg.GetId()]
	switch {
	case e == nil:
		return nil, notFound(req.Msg.GetId())
	case terminal(e.d.GetState()):
		return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("dispatch %s has already ended (%s)", e.d.GetId(), e.d.GetState()))
	}
	e.d.State, e.d.Error = controlplanev1.DispatchState_DISPATCH_STATE_CANCELLED, "cancelled: "+req.Msg.GetReason()
	e.d.CancelTime, e.d.FinishTime = timestamppb.New(f.Now), timestamppb.New(f.Now)
	close(e.cancelled)
	return connect.NewResponse(&controlplanev1.CancelDispatchResponse{Dispatch: proto.Clone(e.d).(*controlplanev1.Dispatch)}), nil
}

// ListDispatches implements DispatchServiceHandler: newest first, filtered, in pages
// whose token is the index of the next dispatch.
func (f *Fake) ListDispatches(_ context.Context, req *connect.Request[controlplanev1.ListDispatchesRequest]) (*connect.Response[controlplanev1.ListDispatchesResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls.Lists = append(f.calls.Lists, req.Msg)
	m := req.Msg
	var match []*controlplanev1.Dispatch
	for i := len(f.order) - 1; i >= 0; i-- {
		d := f.disp[f.order[i]].d
		at := d.GetCreateTime().AsTime()
		if (m.GetNodeId() == "" || d.GetNodeId() == m.GetNodeId()) && (m.GetCapability() == "" || d.GetCapability() == m.GetCapability()) &&
			(m.GetState() == 0 || d.GetState() == m.GetState()) &&
			(m.CreateTimeAfter == nil || !at.Before(m.GetCreateTimeAfter().AsTime())) &&
			(m.CreateTimeBefore == nil || at.Before(m.GetCreateTimeBefore().AsTime())) {
			match = append(match, proto.Clone(d).(*controlplanev1.Dispatch))
		}
	}
	size := int(m.GetPageSize())
	if size == 0 {
		size = f.PageSize
	}
	if size == 0 {
		size = 100
	}
	start := 0
	if m.GetPageToken() != "" {
		if _, err := fmt.Sscanf(m.GetPageToken(), "p%d", &start); err != nil || start > len(match) {
			return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("bad page token"))
		}
	}
	end := min(start+size, len(match))
	res := &controlplanev1.ListDispatchesResponse{Dispatches: match[start:end]}
	if end < len(match) {
		res.NextPageToken = fmt.Sprintf("p%d", end)
	}
	return connect.NewResponse(res), nil
}

func terminal(s controlplanev1.DispatchState) bool {
	return s >= controlplanev1.DispatchState_DISPATCH_STATE_SUCCEEDED
}
