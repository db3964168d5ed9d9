package agents

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/palyra/palyra/gen/dbsqlc"
	agentsv1 "github.com/palyra/palyra/gen/go/palyra/agents/v1"
	"github.com/palyra/palyra/server/internal/access"
	"github.com/palyra/palyra/server/internal/approvals"
	"github.com/palyra/palyra/server/internal/audit"
	"github.com/palyra/palyra/server/internal/compat"
	"github.com/palyra/palyra/server/internal/dispatch"
	"github.com/palyra/palyra/server/internal/errdefs"
	"github.com/palyra/palyra/server/internal/notify"
	"github.com/palyra/palyra/server/internal/store"
)

// Runs. A run of an agent is a loop on the replica that started it: a model call (through
// the compat handler: the same providers, the caller's budget and usage) with the
// agent's tools; each tool call the model makes is checked (a known tool, a node the
// tool allows, input the capability's schema takes, the tool's policy, a human's
// approval for ask tools) and then dispatched, durably, with the idempotency key
// run:<run id>:<seq>, on the least busy online node the tool allows; its result, or
// why it was refused, goes back to the model as the tool message; until the model
// answers, a limit is reached or the run is cancelled. Every step is a row of
// agent_run_steps, written as it begins and as it ends; a dispatch and a run's end are
// audited.
//
// A run belongs to its replica: CancelRun on any replica marks it (NOTIFY
// "cancel:<id>" on ChannelRuns), and the replica running it cancels it. A replica that
// stops ends its runs failed; one that dies leaves them to the reaper of any live
// replica, which fails them ("palyrad replica X stopped mid-run") and cancels their
// running dispatches. A failed run is never resumed: before each model call and each
// dispatch the loop checks that its run has not ended, so no tool call runs twice.

// ChannelRuns is the notification channel of runs: the run's id at every change of the
// run or of one of its steps, and "cancel:<id>" when its cancellation is asked for.
const ChannelRuns = "palyra_agent_runs"

// The defaults of a run's limits, and the reaper's pace.
const (
	// DefaultReapEvery is how often the reaper looks for runs whose replica is gone.
	DefaultReapEvery = 5 * time.Second
	// maxToolOutput caps what a tool call's output keeps (the result the model sees).
	maxToolOutput = 1 << 20
	// modelToolOutput is how much of that output the model is given: the last of it,
	// where a program's errors and conclusions usually are.
	modelToolOutput = 32 << 10
	// endTimeout bounds the writes that end a run after its context ended.
	endTimeout = 10 * time.Second
)

// The run states as stored.
const (
	stateRunning   = "running"
	stateWaiting   = "waiting_approval"
	stateSucceeded = "succeeded"
	stateFailed    = "failed"
	stateCancelled = "cancelled"
)

// RunModels makes a run's model calls (compat.Handler).
type RunModels interface {
	Call(ctx context.Context, req *compat.ChatRequest, emit func(chunk []byte) error) (*compat.Completion, error)
}

// RunNodes is what runs ask of the dispatch runtime (dispatch.Service).
type RunNodes interface {
	NodesOffering(ctx context.Context, capability string) ([]dispatch.Node, error)
	InFlight(ctx context.Context, nodes, capabilities []string) (map[string]int, error)
	CheckInput(ctx context.Context, nodeID, capability, input string) error
	Execute(ctx context.Context, r dispatch.Request, named func(id string)) (dispatch.Dispatch, error)
	Cancel(ctx context.Context, id, reason string) (dispatch.Dispatch, error)
	Output(ctx context.Context, id string, from, to, budget int64) ([]dispatch.OutputChunk, int64, error)
}

// Replicas tells the live replicas (masterkey.Service).
type Replicas interface {
	LiveReplicaIDs(ctx context.Context) ([]string, error)
}

// approver asks a human about a tool call of an ask tool (approvals.Service).
type approver interface {
	Ask(ctx context.Context, q approvals.Question, pending func(*agentsv1.Approval)) (*agentsv1.Approval, error)
	EndRun(ctx context.Context, runID, reason string) error
}

// RunsOptions are the dependencies of Runs.
type RunsOptions struct {
	Store *store.Store
	// Agents are the agents runs run.
	Agents *Agents
	Models RunModels
	Nodes  RunNodes
	// Approvals decides the calls of ask tools; nil refuses them ("approvals are not
	// available").
	Approvals approver
	Audit     *audit.Log
	// Notify listens on ChannelRuns.
	Notify   *notify.Listener
	Replicas Replicas
	// ReplicaID is this replica.
	ReplicaID string
	// ReapEvery is the reaper's pace; zero means DefaultReapEvery.
	ReapEvery time.Duration
	Now       func() time.Time
	Logger    *slog.Logger
}

// Runs starts, runs and watches the runs of agents. It is safe for concurrent use.
type Runs struct {
	opts RunsOptions
	log  *slog.Logger
	sub  *notify.Subscription

	mu sync.Mutex
	// base is the context of the loops: Run's, once it runs; the loops end with it.
	base context.Context
	// local are the runs this replica runs: their cancel functions.
	local map[string]context.CancelCauseFunc
	// stopping refuses new runs once Shutdown was called.
	stopping bool
	loops    sync.WaitGroup
}

// NewRuns returns the runs service; it subscribes to ChannelRuns at once so that no
// cancellation is missed before Run.
func NewRuns(opts RunsOptions) (*Runs, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.ReapEvery == 0 {
		opts.ReapEvery = DefaultReapEvery
	}
	r := &Runs{opts: opts, log: opts.Logger, local: map[string]context.CancelCauseFunc{}}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if opts.Notify != nil {
		sub, err := opts.Notify.Subscribe(ChannelRuns)
		if err != nil {
			return nil, fmt.Errorf("agents: %w", err)
		}
		r.sub = sub
	}
	return r, nil
}

// errCancelled is the cause of a run cancelled by CancelRun; errStopped of one whose
// replica stops.
var (
	errCancelled = errors.New("the run was cancelled")
	errStopped   = errors.New("palyrad stopped")
)

// Run serves cancellations and, every ReapEvery, reaps the runs of dead replicas until
// ctx is done; then
// it ends this replica's runs (failed: the replica stopped mid-run) and returns once
// their loops did.
func (r *Runs) Run(ctx context.Context) {
	r.mu.Lock()
	r.base = ctx
	r.mu.Unlock()
	t := time.NewTicker(r.opts.ReapEvery)
	defer t.Stop()
	var events <-chan notify.Event
	if r.sub != nil {
		defer r.sub.Close()
		events = r.sub.Events()
	}
	for {
		select {
		case <-ctx.Done():
			r.Shutdown()
			r.loops.Wait()
			return
		case <-t.C:
			r.reap(ctx)
		case ev := <-events:
			r.notified(ctx, ev)
		}
	}
}

// Shutdown ends this replica's runs, failed (the replica stopped mid-run), and refuses
// new ones (Unavailable); their loops record their end before Run returns.
func (r *Runs) Shutdown() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stopping = true
	for _, cancel := range r.local {
		cancel(errStopped)
	}
}

// loopContext is the context a run's loop runs in: the service's (so that the replica's
// stop ends it), not the call's, with the caller as principal.
func (r *Runs) loopContext(p *access.Principal) context.Context {
	r.mu.Lock()
	base := r.base
	r.mu.Unlock()
	if base == nil {
		base = context.Background()
	}
	return access.WithPrincipal(base, p)
}

// Start starts a run of the agent of that id or name (both empty: the default agent) on
// the input messages, as ctx's caller, and returns it; the loop goes on in the
// background, telling event (when not nil) what happens, the finished run last.
func (r *Runs) Start(ctx context.Context, id, name string, input []*agentsv1.RunMessage, event func(*agentsv1.RunResponse)) (*agentsv1.Run, error) {
	p, err := access.Caller(ctx)
	if err != nil {
		return nil, err
	}
	if len(input) == 0 {
		return nil, errdefs.InvalidField("prompt", "a run needs a prompt or messages")
	}
	r.mu.Lock()
	stopping := r.stopping
	r.mu.Unlock()
	if stopping {
		return nil, errdefs.New(errdefs.Unavailable, "palyrad is stopping: start the run on another replica")
	}
	def, err := r.opts.Agents.runnable(ctx, id, name)
	if err != nil {
		return nil, err
	}
	spec := withDefaults(def.Spec)
	specJSON, err := protojson.Marshal(spec)
	if err != nil {
		return nil, fmt.Errorf("agents: run: %w", err)
	}
	inputJSON, err := inputOf(input)
	if err != nil {
		return nil, err
	}
	now := r.opts.Now()
	runID := ulid.Make().String()
	audit.SetTarget(ctx, "run:"+runID+" agent:"+def.Spec.GetName())
	row, err := r.opts.Store.Q().InsertAgentRun(ctx, dbsqlc.InsertAgentRunParams{
		ID: runID, AgentID: def.ID, AgentName: def.Spec.GetName(), AgentRevision: def.Revision, Agent: specJSON,
		Input: inputJSON, StartedBy: p.ID(), ReplicaID: r.opts.ReplicaID, CreatedAt: now,
		Deadline: now.Add(spec.GetLimits().GetDeadline().AsDuration()),
	})
	if err != nil {
		return nil, fmt.Errorf("agents: start a run: %w", err)
	}
	run, err := runOf(row)
	if err != nil {
		return nil, err
	}
	if event == nil {
		event = func(*agentsv1.RunResponse) {}
	}
	lctx, cancel := context.WithCancelCause(r.loopContext(p))
	lctx, cancelDeadline := context.WithDeadline(lctx, row.Deadline)
	r.mu.Lock()
	r.local[runID] = cancel
	r.loops.Add(1)
	if r.stopping {
		cancel(errStopped)
	}
	r.mu.Unlock()
	r.log.Info("agent run started", "run_id", runID, "agent", def.Spec.GetName(), "revision", def.Revision, "started_by", p.ID())
	l := &loop{r: r, run: run, spec: spec, principal: p, event: event, input: input}
	go func() {
		defer r.loops.Done()
		defer func() {
			cancelDeadline()
			cancel(nil)
			r.mu.Lock()
			delete(r.local, runID)
			r.mu.Unlock()
		}()
		l.runLoop(lctx)
	}()
	return run, nil
}

// notified handles a notification of ChannelRuns: a cancellation of a run of this
// replica cancels it; a Reset (notifications may have been lost) looks for them.
func (r *Runs) notified(ctx context.Context, ev notify.Event) {
	if ev.Reset {
		r.mu.Lock()
		ids := make([]string, 0, len(r.local))
		for id := range r.local {
			ids = append(ids, id)
		}
		r.mu.Unlock()
		for _, id := range ids {
			row, err := r.opts.Store.Q().GetAgentRun(ctx, id)
			if err == nil && row.CancelRequestedAt != nil {
				r.cancelLocal(id)
			}
		}
		return
	}
	if id, ok := strings.CutPrefix(ev.Payload, "cancel:"); ok {
		r.cancelLocal(id)
	}
}

// cancelLocal cancels run id if this replica runs it.
func (r *Runs) cancelLocal(id string) {
	r.mu.Lock()
	cancel := r.local[id]
	r.mu.Unlock()
	if cancel != nil {
		cancel(errCancelled)
	}
}

// Cancel asks for a run's cancellation on behalf of ctx's caller, who needs agents.write
// for another's run; the replica running it ends it. A run that has ended is
// FailedPrecondition naming its state.
func (r *Runs) Cancel(ctx context.Context, id, reason string) (*agentsv1.Run, error) {
	p, err := access.Caller(ctx)
	if err != nil {
		return nil, err
	}
	audit.SetTarget(ctx, "run:"+id)
	row, err := r.opts.Store.Q().GetAgentRun(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, errdefs.New(errdefs.NotFound, "run %s does not exist", id)
	}
	if err != nil {
		return nil, fmt.Errorf("agents: cancel run %s: %w", id, err)
	}
	if row.StartedBy != p.ID() && !p.Permissions.Has(access.AgentsWrite) {
		return nil, errdefs.New(errdefs.PermissionDenied, "run %s was started by %s: cancelling another's run needs the permission %s, which %s lacks",
			id, row.StartedBy, access.AgentsWrite, p.ID())
	}
	if row.FinishedAt != nil {
		return nil, errdefs.New(errdefs.FailedPrecondition, "run %s has ended: it is %s", id, row.State)
	}
	if reason == "" {
		reason = "cancelled by " + p.ID()
	}
	row, err = r.opts.Store.Q().RequestAgentRunCancel(ctx, dbsqlc.RequestAgentRunCancelParams{Now: r.opts.Now(), Reason: reason, ID: id})
	if errors.Is(err, store.ErrNotFound) {
		row, err = r.opts.Store.Q().GetAgentRun(ctx, id)
		if err == nil {
			return nil, errdefs.New(errdefs.FailedPrecondition, "run %s has ended: it is %s", id, row.State)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("agents: cancel run %s: %w", id, err)
	}
	r.cancelLocal(id) // at once when it runs here; elsewhere the notification tells its replica
	r.log.Info("agent run cancellation asked for", "run_id", id, "by", p.ID())
	return runOf(row)
}

// Get returns a run and its steps.
func (r *Runs) Get(ctx context.Context, id string) (*agentsv1.Run, []*agentsv1.RunStep, error) {
	row, err := r.opts.Store.Q().GetAgentRun(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil, errdefs.New(errdefs.NotFound, "run %s does not exist", id)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("agents: run %s: %w", id, err)
	}
	run, err := runOf(row)
	if err != nil {
		return nil, nil, err
	}
	rows, err := r.opts.Store.Q().ListAgentRunSteps(ctx, id)
	if err != nil {
		return nil, nil, fmt.Errorf("agents: run %s: %w", id, err)
	}
	steps := make([]*agentsv1.RunStep, len(rows))
	for i, s := range rows {
		steps[i] = stepOf(s)
	}
	return run, steps, nil
}

// finish ends a run (unless it ended) and audits its end in the same transaction; the
// steps that had not ended end cancelled, their dispatches cancelled, and the run's
// pending approvals expire.
func (r *Runs) finish(ctx context.Context, runID, principal, state, reason, answer string) (*agentsv1.Run, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), endTimeout)
	defer cancel()
	now := r.opts.Now()
	var (
		row    dbsqlc.AgentRun
		steps  []dbsqlc.AgentRunStep
		staged []audit.Record
	)
	err := r.opts.Store.InTx(ctx, func(tx *store.Tx) error {
		var err error
		row, err = tx.Q().FinishAgentRun(ctx, dbsqlc.FinishAgentRunParams{State: state, Reason: reason, Answer: answer, Now: now, ID: runID})
		if err != nil {
			return err
		}
		if steps, err = tx.Q().EndUnfinishedAgentRunSteps(ctx, dbsqlc.EndUnfinishedAgentRunStepsParams{Now: now, Error: "the run ended: " + endText(state, reason), RunID: runID}); err != nil {
			return err
		}
		if r.opts.Audit != nil {
			staged, err = r.opts.Audit.Stage(ctx, tx, audit.Event{Time: now, Principal: principal, Procedure: "agents.run.finish",
				Target: "run:" + runID + " state:" + state, Outcome: audit.Success, Code: "ok"})
		}
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		row, err = r.opts.Store.Q().GetAgentRun(ctx, runID) // it had ended (the reaper's, say)
		if err != nil {
			return nil, fmt.Errorf("agents: end run %s: %w", runID, err)
		}
		return runOf(row)
	}
	if err != nil {
		return nil, fmt.Errorf("agents: end run %s: %w", runID, err)
	}
	r.afterEnd(ctx, runID, reason, steps, staged)
	r.log.Info("agent run ended", "run_id", runID, "state", state, "reason", reason)
	return runOf(row)
}

// afterEnd does what follows a run's end: its dispatches that had not ended are
// cancelled, its pending approvals expire, and its audit events are published.
func (r *Runs) afterEnd(ctx context.Context, runID, reason string, steps []dbsqlc.AgentRunStep, staged []audit.Record) {
	for _, s := range steps {
		if s.DispatchID == nil {
			continue
		}
		if _, err := r.opts.Nodes.Cancel(ctx, *s.DispatchID, "agent run "+runID+" ended: "+reason); err != nil && errdefs.KindOf(err) != errdefs.FailedPrecondition {
			r.log.Warn("agents: the dispatch of an ended run not cancelled", "run_id", runID, "dispatch_id", *s.DispatchID, "err", err)
		}
	}
	if r.opts.Approvals != nil {
		if err := r.opts.Approvals.EndRun(ctx, runID, "the run ended"); err != nil {
			r.log.Warn("agents: the pending approvals of an ended run not expired", "run_id", runID, "err", err)
		}
	}
	if r.opts.Audit != nil && len(staged) > 0 {
		if err := r.opts.Audit.Publish(ctx, staged); err != nil {
			r.log.Warn("agents: audit events of a run's end not published (the drainer will)", "run_id", runID, "err", err)
		}
	}
}

// reap fails the runs whose replica is no longer live.
func (r *Runs) reap(ctx context.Context) {
	if r.opts.Replicas == nil {
		return
	}
	live, err := r.opts.Replicas.LiveReplicaIDs(ctx)
	if err != nil {
		if ctx.Err() == nil {
			r.log.Warn("agents: the live replicas not read; runs not reaped", "err", err)
		}
		return
	}
	live = append(live, r.opts.ReplicaID)
	now := r.opts.Now()
	var runs []dbsqlc.AgentRun
	type ended struct {
		steps  []dbsqlc.AgentRunStep
		staged []audit.Record
	}
	var ends []ended
	err = r.opts.Store.InTx(ctx, func(tx *store.Tx) error {
		var err error
		ends = nil
		if runs, err = tx.Q().FailOrphanedAgentRuns(ctx, dbsqlc.FailOrphanedAgentRunsParams{Now: now, LiveReplicas: live}); err != nil {
			return err
		}
		for _, run := range runs {
			var e ended
			if e.steps, err = tx.Q().EndUnfinishedAgentRunSteps(ctx, dbsqlc.EndUnfinishedAgentRunStepsParams{Now: now,
				Error: "the run ended: " + run.Reason, RunID: run.ID}); err != nil {
				return err
			}
			if r.opts.Audit != nil {
				if e.staged, err = r.opts.Audit.Stage(ctx, tx, audit.Event{Time: now, Principal: "system", Procedure: "agents.run.reap",
					Target: "run:" + run.ID + " replica:" + run.ReplicaID, Outcome: audit.Success, Code: "ok"}); err != nil {
					return err
				}
			}
			ends = append(ends, e)
		}
		return nil
	})
	if err != nil {
		if ctx.Err() == nil {
			r.log.Warn("agents: runs of stopped replicas not reaped", "err", err)
		}
		return
	}
	for i, run := range runs {
		r.log.Warn("agent run failed: its replica stopped mid-run", "run_id", run.ID, "replica_id", run.ReplicaID)
		r.afterEnd(ctx, run.ID, run.Reason, ends[i].steps, ends[i].staged)
	}
}

// endText is a run's end as a phrase: "cancelled: why".
func endText(state, reason string) string {
	if reason == "" {
		return state
	}
	return state + ": " + reason
}

// runnable returns the agent of that id or name to run; both empty: the default agent
// (FailedPrecondition when there is none).
func (a *Agents) runnable(ctx context.Context, id, name string) (Agent, error) {
	if id == "" && name == "" {
		return a.Default(ctx)
	}
	ref := Ref{ID: id, Name: name}
	if err := ref.check(); err != nil {
		return Agent{}, err
	}
	ag, err := getAgent(ctx, a.store.Q(), ref)
	if err != nil {
		return Agent{}, wrapErr("get", err)
	}
	return ag, nil
}

// names lists the agents' names, sorted.
func (a *Agents) names(ctx context.Context) ([]string, error) {
	var out []string
	token := ""
	for {
		page, next, err := a.List(ctx, "", maxPageSize, token)
		if err != nil {
			return nil, err
		}
		for _, ag := range page {
			out = append(out, ag.Spec.GetName())
		}
		if next == "" {
			return out, nil
		}
		token = next
	}
}
