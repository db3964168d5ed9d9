package approvals_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/validate"
	"github.com/oklog/ulid/v2"
	"google.golang.org/genproto/googleapis/rpc/errdetails"

	agentsv1 "github.com/palyra/palyra/gen/go/palyra/agents/v1"
	"github.com/palyra/palyra/gen/go/palyra/agents/v1/agentsv1connect"
	"github.com/palyra/palyra/internal/eventually"
	"github.com/palyra/palyra/server/internal/access"
	"github.com/palyra/palyra/server/internal/apiserver"
	"github.com/palyra/palyra/server/internal/approvals"
	"github.com/palyra/palyra/server/internal/audit"
	"github.com/palyra/palyra/server/internal/notify/notifytest"
	"github.com/palyra/palyra/server/internal/store"
	"github.com/palyra/palyra/server/internal/store/storetest"
)

// admin is the principal of every ApprovalService call in the tests.
var admin = &access.Principal{TokenID: "01JTESTADMINTOKEN000000000", User: "alice", Role: access.Admin}

// replica is one palyrad's approvals: the Service with its database, audit log and
// notification listener, serving ApprovalService over HTTP/2 with TLS on loopback.
type replica struct {
	url    string
	store  *store.Store
	svc    *approvals.Service
	client agentsv1connect.ApprovalServiceClient
}

// setup returns a replica on a fresh migrated database whose approvals wait timeout,
// with its Run started.
func setup(t *testing.T, timeout time.Duration) *replica {
	t.Helper()
	return newReplica(t, storetest.URL(t), timeout)
}

// newReplica returns a replica on the database at dbURL, with its Run started.
func newReplica(t *testing.T, dbURL string, timeout time.Duration) *replica {
	t.Helper()
	st, err := store.Open(t.Context(), store.Options{URL: dbURL})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(st.Close)
	svc, err := approvals.New(approvals.Options{
		Store:   st,
		Audit:   audit.New(audit.Options{Store: st, ReplicaID: "test"}),
		Notify:  notifytest.Start(t, dbURL, approvals.Channel),
		Timeout: func() time.Duration { return timeout },
	})
	if err != nil {
		t.Fatal(err)
	}
	background(t, svc.Run)
	mux := http.NewServeMux()
	mux.Handle(agentsv1connect.NewApprovalServiceHandler(svc.Handler(), connect.WithInterceptors(
		principal{}, apiserver.ErrorInterceptor(slog.New(slog.DiscardHandler)), validate.NewInterceptor())))
	srv := httptest.NewUnstartedServer(mux)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	t.Cleanup(svc.Shutdown) // before srv.Close, which waits for the watches
	return &replica{url: dbURL, store: st, svc: svc, client: agentsv1connect.NewApprovalServiceClient(srv.Client(), srv.URL)}
}

// background runs fn in a goroutine until the test ends, and waits for it then.
func background(t *testing.T, fn func(context.Context)) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

// principal authenticates every call as admin, with an audit note, as the access
// interceptor would.
type principal struct{}

func (principal) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		ctx, _ = audit.WithNote(ctx)
		return next(access.WithPrincipal(ctx, admin), req)
	}
}

func (principal) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (principal) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		ctx, _ = audit.WithNote(ctx)
		return next(access.WithPrincipal(ctx, admin), conn)
	}
}

// newRunStep creates a run and its tool-call step seq, which an approval references.
//
// A fixture in plain SQL: the run and step an approval references belong to the agents
// package, which imports this one; a real run's ask is tested in daemon/runs_test.go.
func (r *replica) newRunStep(t *testing.T, runID string, seq int32) {
	t.Helper()
	_, err := r.store.Pool().Exec(t.Context(), `
		insert into agent_runs (id, agent_id, agent_name, agent_revision, agent, input, started_by, replica_id, created_at, deadline)
		values ($1, '01JTESTAGENT00000000000000', 'ops', 1, '{}', '[]', 'token:runner', 'test', now(), now() + interval '1 hour')
		on conflict (id) do nothing`, runID)
	if err != nil {
		t.Fatalf("fixture run: %v", err)
	}
	if _, err := r.store.Pool().Exec(t.Context(), `insert into agent_run_steps (run_id, seq, kind, started_at) values ($1, $2, 'tool_call', now())`,
		runID, seq); err != nil {
		t.Fatalf("fixture step: %v", err)
	}
}

// question is a shell.execute call of run runID's step seq, whose run and step it
// creates.
func (r *replica) question(t *testing.T, runID string, seq int32) approvals.Question {
	t.Helper()
	r.newRunStep(t, runID, seq)
	return approvals.Question{
		RunID: runID, StepSeq: seq, AgentID: "01JTESTAGENT00000000000000", AgentName: "ops",
		Tool: "shell", Capability: "shell.execute", NodeID: "01JTESTNODE000000000000000",
		Input: json.RawMessage(`{"argv": ["uname", "-a"]}`), RequestedBy: "token:runner",
	}
}

// asked is the end of an Ask.
type asked struct {
	approval *agentsv1.Approval
	err      error
}

// ask runs Ask in a goroutine until ctx ends; it returns the pending approval and
// where the end arrives.
func (r *replica) ask(t *testing.T, ctx context.Context, q approvals.Question) (*agentsv1.Approval, <-chan asked) {
	t.Helper()
	pending := make(chan *agentsv1.Approval, 1)
	done := make(chan asked, 1)
	go func() {
		a, err := r.svc.Ask(ctx, q, func(a *agentsv1.Approval) { pending <- a })
		done <- asked{a, err}
	}()
	select {
	case a := <-pending:
		return a, done
	case end := <-done:
		t.Fatalf("Ask ended before its approval was pending: %v", end.err)
	case <-time.After(eventually.Deadline):
		t.Fatal("no pending approval")
	}
	return nil, nil
}

// wait waits for the end of an Ask.
func wait(t *testing.T, done <-chan asked) asked {
	t.Helper()
	select {
	case end := <-done:
		return end
	case <-time.After(eventually.Deadline):
		t.Fatalf("Ask did not return within %v", eventually.Deadline)
		return asked{}
	}
}

// decide calls DecideApproval.
func (r *replica) decide(t *testing.T, id string, approve bool, scope agentsv1.ApprovalScope, reason string) (*agentsv1.Approval, error) {
	t.Helper()
	res, err := r.client.DecideApproval(t.Context(), connect.NewRequest(&agentsv1.DecideApprovalRequest{
		Id: id, Approve: approve, Scope: scope, Reason: reason}))
	if err != nil {
		return nil, err
	}
	return res.Msg.GetApproval(), nil
}

// get calls GetApproval.
func (r *replica) get(t *testing.T, id string) *agentsv1.Approval {
	t.Helper()
	res, err := r.client.GetApproval(t.Context(), connect.NewRequest(&agentsv1.GetApprovalRequest{Id: id}))
	if err != nil {
		t.Fatalf("get approval %s: %v", id, err)
	}
	return res.Msg.GetApproval()
}

// audited counts the audit events (in the log or its outbox) of procedure whose
// target begins with "approval:<id>".
func (r *replica) audited(t *testing.T, procedure, id string) int {
	t.Helper()
	var n int
	err := r.store.Pool().QueryRow(t.Context(), `
		select (select count(*) from audit_events where procedure = $1 and target like $2)
		     + (select count(*) from audit_outbox where procedure = $1 and target like $2)`,
		procedure, "approval:"+id+"%").Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func wantCode(t *testing.T, what string, err error, code connect.Code) {
	t.Helper()
	if connect.CodeOf(err) != code {
		t.Fatalf("%s: got %v, want %s", what, err, code)
	}
}

// wantField checks that err names field in a BadRequest detail.
func wantField(t *testing.T, err error, field string) {
	t.Helper()
	var ce *connect.Error
	if !errors.As(err, &ce) {
		t.Fatalf("%v is not a connect error", err)
	}
	for _, d := range ce.Details() {
		v, derr := d.Value()
		if bad, ok := v.(*errdetails.BadRequest); derr == nil && ok {
			for _, fv := range bad.GetFieldViolations() {
				if fv.GetField() == field {
					return
				}
			}
		}
	}
	t.Errorf("%v names no field %q", err, field)
}

func TestAskReturnsWhenApprovedOnAnotherReplica(t *testing.T) {
	t.Parallel()
	a := setup(t, time.Hour)
	b := newReplica(t, a.url, time.Hour)
	runID := ulid.Make().String()
	pending, done := a.ask(t, t.Context(), a.question(t, runID, 1))
	if pending.GetState() != agentsv1.ApprovalState_APPROVAL_STATE_PENDING || pending.GetInputJson() == "" ||
		pending.GetTool() != "shell" || pending.GetNodeId() != "01JTESTNODE000000000000000" || pending.GetRunId() != runID ||
		pending.GetExpireTime().AsTime().Sub(pending.GetCreateTime().AsTime()) != time.Hour {
		t.Fatalf("pending approval %v", pending)
	}
	var input map[string]any
	if err := json.Unmarshal([]byte(pending.GetInputJson()), &input); err != nil || fmt.Sprint(input["argv"]) != "[uname -a]" {
		t.Errorf("input %q", pending.GetInputJson())
	}
	select {
	case end := <-done:
		t.Fatalf("Ask returned undecided: %v %v", end.approval, end.err)
	default:
	}
	// Decided through replica b: only its NOTIFY can tell replica a's Ask (no poll,
	// an hour to expiry).
	decided, err := b.decide(t, pending.GetId(), true, agentsv1.ApprovalScope_APPROVAL_SCOPE_RUN, "looks fine")
	if err != nil {
		t.Fatal(err)
	}
	end := wait(t, done)
	if end.err != nil {
		t.Fatal(end.err)
	}
	got := end.approval
	if got.GetState() != agentsv1.ApprovalState_APPROVAL_STATE_APPROVED || got.GetScope() != agentsv1.ApprovalScope_APPROVAL_SCOPE_RUN ||
		got.GetDecidedBy() != admin.ID() || got.GetReason() != "looks fine" || got.GetDecideTime() == nil {
		t.Errorf("Ask returned %v", got)
	}
	if decided.GetState() != got.GetState() || decided.GetDecidedBy() != got.GetDecidedBy() {
		t.Errorf("DecideApproval answered %v, Ask returned %v", decided, got)
	}
	if n := a.audited(t, "approvals.request", pending.GetId()); n != 1 {
		t.Errorf("%d approvals.request events, want 1", n)
	}
}

func TestAskReturnsWhenDenied(t *testing.T) {
	t.Parallel()
	r := setup(t, time.Hour)
	pending, done := r.ask(t, t.Context(), r.question(t, ulid.Make().String(), 1))

	_, err := r.decide(t, pending.GetId(), false, 0, "  ")
	wantCode(t, "denying without a reason", err, connect.CodeInvalidArgument)
	wantField(t, err, "reason")
	if got := r.get(t, pending.GetId()); got.GetState() != agentsv1.ApprovalState_APPROVAL_STATE_PENDING {
		t.Fatalf("a refused denial changed the approval: %v", got)
	}

	if _, err := r.decide(t, pending.GetId(), false, agentsv1.ApprovalScope_APPROVAL_SCOPE_RUN, "never on prod"); err != nil {
		t.Fatal(err)
	}
	end := wait(t, done)
	if end.err != nil {
		t.Fatal(end.err)
	}
	if got := end.approval; got.GetState() != agentsv1.ApprovalState_APPROVAL_STATE_DENIED || got.GetReason() != "never on prod" ||
		got.GetScope() != agentsv1.ApprovalScope_APPROVAL_SCOPE_UNSPECIFIED {
		t.Errorf("Ask returned %v", got)
	}
}

func TestDecisionsAreFinal(t *testing.T) {
	t.Parallel()
	r := setup(t, time.Hour)
	runID := ulid.Make().String()
	first, done := r.ask(t, t.Context(), r.question(t, runID, 1))
	if _, err := r.decide(t, first.GetId(), true, 0, ""); err != nil {
		t.Fatal(err)
	}
	if got := wait(t, done).approval; got.GetScope() != agentsv1.ApprovalScope_APPROVAL_SCOPE_ONCE {
		t.Errorf("an approval without a scope is %v, want once", got.GetScope())
	}
	for _, approve := range []bool{true, false} {
		_, err := r.decide(t, first.GetId(), approve, 0, "again")
		wantCode(t, fmt.Sprintf("deciding an approved approval (approve %v)", approve), err, connect.CodeFailedPrecondition)
		if !errorContains(err, "approved") {
			t.Errorf("the refusal %v does not name the state", err)
		}
	}
	if got := r.get(t, first.GetId()); got.GetState() != agentsv1.ApprovalState_APPROVAL_STATE_APPROVED || got.GetReason() != "" {
		t.Errorf("a refused decision changed the approval: %v", got)
	}
	_, err := r.decide(t, ulid.Make().String(), true, 0, "")
	wantCode(t, "deciding an unknown approval", err, connect.CodeNotFound)
	_, err = r.decide(t, "not-an-id", true, 0, "")
	wantCode(t, "deciding a malformed id", err, connect.CodeInvalidArgument)
}

func errorContains(err error, s string) bool {
	return err != nil && strings.Contains(err.Error(), s)
}

func TestAskExpires(t *testing.T) {
	t.Parallel()
	r := setup(t, 300*time.Millisecond)
	pending, done := r.ask(t, t.Context(), r.question(t, ulid.Make().String(), 1))
	end := wait(t, done)
	if end.err != nil {
		t.Fatal(end.err)
	}
	if got := end.approval; got.GetState() != agentsv1.ApprovalState_APPROVAL_STATE_EXPIRED ||
		got.GetReason() != "no decision within 300ms" || got.GetDecidedBy() != "system" ||
		got.GetDecideTime().AsTime().Before(got.GetExpireTime().AsTime()) {
		t.Errorf("Ask returned %v", got)
	}
	if n := r.audited(t, "approvals.expire", pending.GetId()); n != 1 {
		t.Errorf("%d approvals.expire events, want 1", n)
	}
	_, err := r.decide(t, pending.GetId(), true, 0, "")
	wantCode(t, "approving an expired approval", err, connect.CodeFailedPrecondition)
	if !errorContains(err, "expired") {
		t.Errorf("the refusal %v does not name the state", err)
	}
}

func TestAskWhoseContextEndsExpiresTheApproval(t *testing.T) {
	t.Parallel()
	r := setup(t, time.Hour)
	ctx, cancel := context.WithCancel(t.Context())
	pending, done := r.ask(t, ctx, r.question(t, ulid.Make().String(), 1))
	cancel()
	if end := wait(t, done); !errors.Is(end.err, context.Canceled) || end.approval != nil {
		t.Fatalf("Ask returned %v, %v; want context.Canceled", end.approval, end.err)
	}
	got := r.get(t, pending.GetId())
	if got.GetState() != agentsv1.ApprovalState_APPROVAL_STATE_EXPIRED || got.GetReason() != approvals.RunEnded {
		t.Errorf("approval after the run ended: %v", got)
	}
	if n := r.audited(t, "approvals.expire", pending.GetId()); n != 1 {
		t.Errorf("%d approvals.expire events, want 1", n)
	}
}

func TestEndRunExpiresItsPendingApprovals(t *testing.T) {
	t.Parallel()
	a := setup(t, time.Hour)
	b := newReplica(t, a.url, time.Hour)
	run, other := ulid.Make().String(), ulid.Make().String()
	first, firstDone := a.ask(t, t.Context(), a.question(t, run, 1))
	second, secondDone := a.ask(t, t.Context(), a.question(t, run, 2))
	untouched, _ := a.ask(t, t.Context(), a.question(t, other, 1))
	// The run is cancelled on replica b.
	if err := b.svc.EndRun(t.Context(), run, "cancelled by alice"); err != nil {
		t.Fatal(err)
	}
	for _, done := range []<-chan asked{firstDone, secondDone} {
		end := wait(t, done)
		if end.err != nil || end.approval.GetState() != agentsv1.ApprovalState_APPROVAL_STATE_EXPIRED || end.approval.GetReason() != "cancelled by alice" {
			t.Errorf("Ask returned %v, %v", end.approval, end.err)
		}
	}
	for _, id := range []string{first.GetId(), second.GetId()} {
		if n := a.audited(t, "approvals.expire", id); n != 1 {
			t.Errorf("%d approvals.expire events of %s, want 1", n, id)
		}
	}
	if got := a.get(t, untouched.GetId()); got.GetState() != agentsv1.ApprovalState_APPROVAL_STATE_PENDING {
		t.Errorf("another run's approval: %v", got)
	}
	// Nothing pending: nothing to do.
	if err := b.svc.EndRun(t.Context(), run, ""); err != nil {
		t.Fatal(err)
	}
}

// TestSweepExpiresApprovalsNobodyWaitsFor: an approval whose Ask died with its replica
// is expired by the sweep of another at its expire time.
func TestSweepExpiresApprovalsNobodyWaitsFor(t *testing.T) {
	t.Parallel()
	r := setup(t, time.Hour)
	runID := ulid.Make().String()
	r.newRunStep(t, runID, 1)
	id := ulid.Make().String()
	// TEST-ONLY FIXTURE: the row a dead replica's Ask left, expiring in a second.
	if _, err := r.store.Pool().Exec(t.Context(), `
		insert into approvals (id, run_id, step_seq, agent_id, agent_name, tool, capability, node_id, input, requested_by, created_at, expire_at)
		values ($1, $2, 1, 'a', 'ops', 'shell', 'shell.execute', 'n', '{}', 'token:runner', now() + interval '1 second' - interval '10 minutes', now() + interval '1 second')`,
		id, runID); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, "the sweep expires the approval", func() bool {
		return r.get(t, id).GetState() == agentsv1.ApprovalState_APPROVAL_STATE_EXPIRED
	})
	if got := r.get(t, id); got.GetReason() != "no decision within 10m" {
		t.Errorf("reason %q", got.GetReason())
	}
	if n := r.audited(t, "approvals.expire", id); n != 1 {
		t.Errorf("%d approvals.expire events, want 1", n)
	}
}

func TestAskRefusesABadQuestion(t *testing.T) {
	t.Parallel()
	r := setup(t, time.Hour)
	q := r.question(t, ulid.Make().String(), 1)
	q.Input = json.RawMessage(`{"argv": [`)
	if _, err := r.svc.Ask(t.Context(), q, nil); err == nil {
		t.Error("Ask accepted input that is not JSON")
	}
	q = r.question(t, ulid.Make().String(), 1)
	q.StepSeq = 0
	if _, err := r.svc.Ask(t.Context(), q, nil); err == nil {
		t.Error("Ask accepted step 0")
	}
}
