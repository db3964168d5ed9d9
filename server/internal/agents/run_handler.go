package agents

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/palyra/palyra/gen/dbsqlc"
	agentsv1 "github.com/palyra/palyra/gen/go/palyra/agents/v1"
	"github.com/palyra/palyra/server/internal/compat"
	"github.com/palyra/palyra/server/internal/errdefs"
	"github.com/palyra/palyra/server/internal/pagetoken"
)

// RunHandler serves the run RPCs of AgentService: Run, ListRuns, GetRun, WatchRun and
// CancelRun.
type RunHandler struct{ r *Runs }

// NewRunHandler returns the run RPCs of r.
func NewRunHandler(r *Runs) *RunHandler { return &RunHandler{r: r} }

// eventQueue hands a loop's events to a stream without ever blocking the loop.
type eventQueue struct {
	mu     sync.Mutex
	events []*agentsv1.RunResponse
	signal chan struct{}
}

func newEventQueue() *eventQueue { return &eventQueue{signal: make(chan struct{}, 1)} }

// push adds an event.
func (q *eventQueue) push(ev *agentsv1.RunResponse) {
	q.mu.Lock()
	q.events = append(q.events, ev)
	q.mu.Unlock()
	select {
	case q.signal <- struct{}{}:
	default:
	}
}

// next waits for the next events.
func (q *eventQueue) next(ctx context.Context) ([]*agentsv1.RunResponse, error) {
	for {
		q.mu.Lock()
		evs := q.events
		q.events = nil
		q.mu.Unlock()
		if len(evs) > 0 {
			return evs, nil
		}
		select {
		case <-q.signal:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// runInput is a request's messages, then its prompt as a user message.
func runInput(msgs []*agentsv1.RunMessage, prompt string) []*agentsv1.RunMessage {
	out := slices.Clone(msgs)
	if prompt != "" {
		out = append(out, &agentsv1.RunMessage{Role: "user", Content: prompt})
	}
	return out
}

// Run starts a run and streams it; the run goes on when the client goes away.
func (h *RunHandler) Run(ctx context.Context, req *connect.Request[agentsv1.RunRequest], stream *connect.ServerStream[agentsv1.RunResponse]) error {
	q := newEventQueue()
	run, err := h.r.Start(ctx, req.Msg.GetId(), req.Msg.GetName(), runInput(req.Msg.GetMessages(), req.Msg.GetPrompt()), q.push)
	if err != nil {
		return err
	}
	if err := stream.Send(&agentsv1.RunResponse{Event: &agentsv1.RunResponse_Started{Started: run}}); err != nil {
		return err
	}
	for {
		evs, err := q.next(ctx)
		if err != nil {
			return err
		}
		for _, ev := range evs {
			if err := stream.Send(ev); err != nil {
				return err
			}
			if ev.GetFinished() != nil {
				return nil
			}
		}
	}
}

// ListRuns lists runs, newest first.
func (h *RunHandler) ListRuns(ctx context.Context, req *connect.Request[agentsv1.ListRunsRequest]) (*connect.Response[agentsv1.ListRunsResponse], error) {
	limit := int(req.Msg.GetPageSize())
	if limit == 0 {
		limit = 100
	}
	p := dbsqlc.ListAgentRunsParams{AgentID: req.Msg.GetAgentId(), AgentName: req.Msg.GetAgentName(),
		State: storedState(req.Msg.GetState()), PageLimit: int32(limit + 1)}
	if tok := req.Msg.GetPageToken(); tok != "" {
		at, id, err := pagetoken.Decode(tok)
		if err != nil {
			return nil, errdefs.InvalidField("page_token", "is not a token a previous list returned")
		}
		p.AfterCreatedAt, p.AfterID = &at, id
	}
	rows, err := h.r.opts.Store.Q().ListAgentRuns(ctx, p)
	if err != nil {
		return nil, fmt.Errorf("agents: list runs: %w", err)
	}
	rows, next := pagetoken.Page(rows, limit, func(r dbsqlc.AgentRun) (time.Time, string) { return r.CreatedAt, r.ID })
	out := &agentsv1.ListRunsResponse{Runs: make([]*agentsv1.Run, 0, len(rows)), NextPageToken: next}
	for _, row := range rows {
		run, err := runOf(row)
		if err != nil {
			return nil, err
		}
		out.Runs = append(out.Runs, run)
	}
	return connect.NewResponse(out), nil
}

// GetRun returns a run and its steps.
func (h *RunHandler) GetRun(ctx context.Context, req *connect.Request[agentsv1.GetRunRequest]) (*connect.Response[agentsv1.GetRunResponse], error) {
	run, steps, err := h.r.Get(ctx, req.Msg.GetId())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&agentsv1.GetRunResponse{Run: run, Steps: steps}), nil
}

// WatchRun streams a run and its steps, then each change, until the run has ended.
func (h *RunHandler) WatchRun(ctx context.Context, req *connect.Request[agentsv1.WatchRunRequest], stream *connect.ServerStream[agentsv1.WatchRunResponse]) error {
	if h.r.opts.Notify == nil {
		return errdefs.New(errdefs.Unavailable, "watching runs is not available on this palyrad")
	}
	sub, err := h.r.opts.Notify.Subscribe(ChannelRuns)
	if err != nil {
		return fmt.Errorf("agents: watch: %w", err)
	}
	defer sub.Close()
	id := req.Msg.GetId()
	var last *agentsv1.Run
	sent := map[int32]*agentsv1.RunStep{}
	for {
		run, steps, err := h.r.Get(ctx, id)
		if err != nil {
			return err
		}
		if last == nil || !proto.Equal(last, run) {
			if err := stream.Send(&agentsv1.WatchRunResponse{Event: &agentsv1.WatchRunResponse_Run{Run: run}}); err != nil {
				return err
			}
			last = run
		}
		for _, s := range steps {
			if prev := sent[s.GetSeq()]; prev == nil || !proto.Equal(prev, s) {
				if err := stream.Send(&agentsv1.WatchRunResponse{Event: &agentsv1.WatchRunResponse_Step{Step: s}}); err != nil {
					return err
				}
				sent[s.GetSeq()] = s
			}
		}
		if run.GetFinishTime() != nil {
			return nil
		}
		for waiting := true; waiting; {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case ev := <-sub.Events():
				waiting = !ev.Reset && ev.Payload != id
			}
		}
	}
}

// CancelRun asks for a run's cancellation.
func (h *RunHandler) CancelRun(ctx context.Context, req *connect.Request[agentsv1.CancelRunRequest]) (*connect.Response[agentsv1.CancelRunResponse], error) {
	run, err := h.r.Cancel(ctx, req.Msg.GetId(), req.Msg.GetReason())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&agentsv1.CancelRunResponse{Run: run}), nil
}

// AgentNames implements compat.Agents.
func (r *Runs) AgentNames(ctx context.Context) ([]string, error) {
	return r.opts.Agents.names(ctx)
}

// RunAgent implements compat.Agents: a run of the agent on msgs, to its end.
func (r *Runs) RunAgent(ctx context.Context, name string, msgs []compat.Message, event func(compat.AgentEvent)) (compat.AgentAnswer, error) {
	input := make([]*agentsv1.RunMessage, len(msgs))
	for i, m := range msgs {
		input[i] = &agentsv1.RunMessage{Role: m.Role, Content: m.Text}
	}
	q := newEventQueue()
	run, err := r.Start(ctx, "", name, input, q.push)
	if err != nil {
		return compat.AgentAnswer{}, err
	}
	for {
		evs, err := q.next(ctx)
		if err != nil {
			return compat.AgentAnswer{}, err
		}
		for _, ev := range evs {
			if f := ev.GetFinished(); f != nil {
				if f.GetState() != agentsv1.RunState_RUN_STATE_SUCCEEDED {
					return compat.AgentAnswer{}, runFailed(f)
				}
				return compat.AgentAnswer{RunID: run.GetId(), Text: f.GetAnswer(),
					Usage: compat.Usage{PromptTokens: f.GetPromptTokens(), CompletionTokens: f.GetCompletionTokens()}}, nil
			}
			if event != nil {
				if e, ok := compatEvent(ev); ok {
					e.RunID = run.GetId()
					event(e)
				}
			}
		}
	}
}

// runFailed is the error of a run that did not succeed.
func runFailed(run *agentsv1.Run) error {
	kind := errdefs.Unavailable
	if run.GetState() == agentsv1.RunState_RUN_STATE_CANCELLED {
		kind = errdefs.Aborted
	}
	return errdefs.New(kind, "agent run %s %s: %s", run.GetId(), stateWord(run.GetState()), run.GetReason())
}

// stateWord is a run state as a word: "failed".
func stateWord(s agentsv1.RunState) string {
	for k, v := range runStates {
		if v == s {
			return k
		}
	}
	return "unknown"
}

// compatEvent is a run event as the compat API streams it: text, or a Palyra event.
func compatEvent(ev *agentsv1.RunResponse) (compat.AgentEvent, bool) {
	switch e := ev.GetEvent().(type) {
	case *agentsv1.RunResponse_TextDelta:
		return compat.AgentEvent{Text: e.TextDelta.GetText()}, true
	case *agentsv1.RunResponse_ToolCallStarted:
		return palyraEvent("tool_call_started", e.ToolCallStarted)
	case *agentsv1.RunResponse_ToolCallFinished:
		return palyraEvent("tool_call_finished", e.ToolCallFinished)
	case *agentsv1.RunResponse_ApprovalPending:
		return palyraEvent("approval_pending", e.ApprovalPending)
	}
	return compat.AgentEvent{}, false
}

// palyraEvent is {"type": kind, kind: the message as protojson}.
func palyraEvent(kind string, m proto.Message) (compat.AgentEvent, bool) {
	b, err := protojson.Marshal(m)
	if err != nil {
		return compat.AgentEvent{}, false
	}
	return compat.AgentEvent{Palyra: []byte(`{"type":"` + kind + `","` + kind + `":` + string(b) + `}`)}, true
}
