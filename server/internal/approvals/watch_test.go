package approvals_test

import (
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/oklog/ulid/v2"

	agentsv1 "github.com/palyra/palyra/gen/go/palyra/agents/v1"
	"github.com/palyra/palyra/internal/eventually"
)

// watch opens WatchApprovals and delivers its events on a channel.
func (r *replica) watch(t *testing.T, runID string) <-chan *agentsv1.WatchApprovalsResponse {
	t.Helper()
	stream, err := r.client.WatchApprovals(t.Context(), connect.NewRequest(&agentsv1.WatchApprovalsRequest{RunId: runID}))
	if err != nil {
		t.Fatal(err)
	}
	out := make(chan *agentsv1.WatchApprovalsResponse, 64)
	go func() {
		defer close(out)
		defer stream.Close()
		for stream.Receive() {
			out <- stream.Msg()
		}
	}()
	return out
}

// next waits for the next event of a watch.
func next(t *testing.T, ch <-chan *agentsv1.WatchApprovalsResponse) *agentsv1.WatchApprovalsResponse {
	t.Helper()
	select {
	case m, ok := <-ch:
		if !ok {
			t.Fatal("the watch ended")
		}
		return m
	case <-time.After(eventually.Deadline):
		t.Fatalf("nothing from the watch within %v", eventually.Deadline)
		return nil
	}
}

// nextOf waits for the next event of a watch about approval id, skipping others.
func nextOf(t *testing.T, ch <-chan *agentsv1.WatchApprovalsResponse, id string) *agentsv1.Approval {
	t.Helper()
	for {
		if a := next(t, ch).GetApproval(); a.GetId() == id {
			return a
		}
	}
}

func TestWatchApprovalsAcrossReplicas(t *testing.T) {
	t.Parallel()
	a := setup(t, time.Hour)
	b := newReplica(t, a.url, time.Hour)
	run := ulid.Make().String()
	before, _ := a.ask(t, t.Context(), a.question(t, run, 1))

	all := b.watch(t, "")
	ofOther := b.watch(t, ulid.Make().String())
	if got := next(t, all).GetApproval(); got.GetId() != before.GetId() || got.GetState() != agentsv1.ApprovalState_APPROVAL_STATE_PENDING {
		t.Fatalf("first event %v, want the pending approval %s", got, before.GetId())
	}
	if !next(t, all).GetSynced() {
		t.Fatal("no synced after the pending approvals")
	}
	if !next(t, ofOther).GetSynced() {
		t.Fatal("a watch of another run got something before synced")
	}

	// Asked on replica a, seen on b's watch; decided on a, seen on b's watch.
	created, done := a.ask(t, t.Context(), a.question(t, run, 2))
	if got := nextOf(t, all, created.GetId()); got.GetState() != agentsv1.ApprovalState_APPROVAL_STATE_PENDING || got.GetInputJson() == "" {
		t.Errorf("new approval %v", got)
	}
	if _, err := a.decide(t, created.GetId(), false, 0, "no"); err != nil {
		t.Fatal(err)
	}
	if got := nextOf(t, all, created.GetId()); got.GetState() != agentsv1.ApprovalState_APPROVAL_STATE_DENIED || got.GetReason() != "no" {
		t.Errorf("decided approval %v", got)
	}
	wait(t, done)
	select {
	case m := <-ofOther:
		t.Errorf("a watch of another run got %v", m)
	default:
	}
}

func TestListApprovals(t *testing.T) {
	t.Parallel()
	r := setup(t, time.Hour)
	runA, runB := ulid.Make().String(), ulid.Make().String()
	a1, _ := r.ask(t, t.Context(), r.question(t, runA, 1))
	a2, done := r.ask(t, t.Context(), r.question(t, runA, 2))
	b1, _ := r.ask(t, t.Context(), r.question(t, runB, 1))
	if _, err := r.decide(t, a2.GetId(), true, agentsv1.ApprovalScope_APPROVAL_SCOPE_ONCE, ""); err != nil {
		t.Fatal(err)
	}
	wait(t, done)
	list := func(req *agentsv1.ListApprovalsRequest) ([]string, string) {
		t.Helper()
		res, err := r.client.ListApprovals(t.Context(), connect.NewRequest(req))
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, a := range res.Msg.GetApprovals() {
			ids = append(ids, a.GetId())
		}
		return ids, res.Msg.GetNextPageToken()
	}
	same := func(what string, got []string, want ...string) {
		t.Helper()
		if len(got) != len(want) {
			t.Errorf("%s: %v, want %v", what, got, want)
			return
		}
		for i := range got {
			if got[i] != want[i] {
				t.Errorf("%s: %v, want %v", what, got, want)
				return
			}
		}
	}
	all, _ := list(&agentsv1.ListApprovalsRequest{})
	same("all, newest first", all, b1.GetId(), a2.GetId(), a1.GetId())
	pending, _ := list(&agentsv1.ListApprovalsRequest{State: agentsv1.ApprovalState_APPROVAL_STATE_PENDING})
	same("pending", pending, b1.GetId(), a1.GetId())
	approved, _ := list(&agentsv1.ListApprovalsRequest{State: agentsv1.ApprovalState_APPROVAL_STATE_APPROVED})
	same("approved", approved, a2.GetId())
	ofA, _ := list(&agentsv1.ListApprovalsRequest{RunId: runA})
	same("of run A", ofA, a2.GetId(), a1.GetId())

	var paged []string
	token := ""
	for range 4 {
		ids, next := list(&agentsv1.ListApprovalsRequest{PageSize: 2, PageToken: token})
		paged = append(paged, ids...)
		if token = next; token == "" {
			break
		}
	}
	same("paged by 2", paged, all...)

	_, err := r.client.ListApprovals(t.Context(), connect.NewRequest(&agentsv1.ListApprovalsRequest{PageToken: "garbage"}))
	wantCode(t, "a malformed page token", err, connect.CodeInvalidArgument)
	_, err = r.client.GetApproval(t.Context(), connect.NewRequest(&agentsv1.GetApprovalRequest{Id: ulid.Make().String()}))
	wantCode(t, "an unknown approval", err, connect.CodeNotFound)
}
