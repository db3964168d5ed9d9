package daemon_test

import (
	"fmt"
	"testing"

	"connectrpc.com/connect"
	"github.com/oklog/ulid/v2"

	accessv1 "github.com/palyra/palyra/gen/go/palyra/access/v1"
	agentsv1 "github.com/palyra/palyra/gen/go/palyra/agents/v1"
	"github.com/palyra/palyra/gen/go/palyra/agents/v1/agentsv1connect"
)

// pendingApproval stores a pending approval of a new run's tool-call step and returns
// its id.
//
// A fixture in plain SQL: these tests are about the decisions, so the run and step an
// approval references are written directly (issue 15 leaves moving them to real runs
// open; a real run's ask is TestAskToolWaitsForAHumansDecision in runs_test.go). The run
// is on a live replica, so that the agents' reaper leaves it alone.
func (b *accessBundle) pendingApproval(t *testing.T) string {
	t.Helper()
	run, id := ulid.Make().String(), ulid.Make().String()
	b.sql(t,
		fmt.Sprintf(`insert into agent_runs (id, agent_id, agent_name, agent_revision, agent, input, started_by, replica_id, created_at, deadline)
			values ('%s', 'a', 'ops', 1, '{}', '[]', 'token:runner', (select id from replicas where stopped_at is null order by last_seen_at desc limit 1), now(), now() + interval '1 hour')`, run),
		fmt.Sprintf(`insert into agent_run_steps (run_id, seq, kind, started_at) values ('%s', 1, 'tool_call', now())`, run),
		fmt.Sprintf(`insert into approvals (id, run_id, step_seq, agent_id, agent_name, tool, capability, node_id, input, requested_by, created_at, expire_at)
			values ('%s', '%s', 1, 'a', 'ops', 'shell', 'shell.execute', 'n', '{"argv": ["true"]}', 'token:runner', now(), now() + interval '1 hour')`, id, run))
	return id
}

func (td *testDaemon) approvalsClient(token string) agentsv1connect.ApprovalServiceClient {
	return agentsv1connect.NewApprovalServiceClient(td.client(token), td.baseURL)
}

// TestApprovalsNeedTheirPermissions: an operator reads approvals but cannot decide them
// (approvals.decide is admin's and owner's); an admin decides, on any replica.
func TestApprovalsNeedTheirPermissions(t *testing.T) {
	t.Parallel()
	b := startAccess(t)
	other := b.startReplica(t)
	_, operator := b.createToken(t, &accessv1.CreateTokenRequest{Label: "ops", Role: accessv1.Role_ROLE_OPERATOR})
	adminTok, admin := b.createToken(t, &accessv1.CreateTokenRequest{Label: "boss", Role: accessv1.Role_ROLE_ADMIN})
	id := b.pendingApproval(t)

	list, err := b.approvalsClient(operator).ListApprovals(t.Context(), connect.NewRequest(&agentsv1.ListApprovalsRequest{
		State: agentsv1.ApprovalState_APPROVAL_STATE_PENDING}))
	if err != nil || len(list.Msg.GetApprovals()) != 1 || list.Msg.GetApprovals()[0].GetId() != id {
		t.Fatalf("an operator lists %v, %v", list, err)
	}
	_, err = b.approvalsClient(operator).DecideApproval(t.Context(), connect.NewRequest(&agentsv1.DecideApprovalRequest{Id: id, Approve: true}))
	wantCode(t, "an operator approving", err, connect.CodePermissionDenied)

	res, err := other.approvalsClient(admin).DecideApproval(t.Context(), connect.NewRequest(&agentsv1.DecideApprovalRequest{
		Id: id, Approve: true, Scope: agentsv1.ApprovalScope_APPROVAL_SCOPE_RUN}))
	if err != nil {
		t.Fatal(err)
	}
	if a := res.Msg.GetApproval(); a.GetState() != agentsv1.ApprovalState_APPROVAL_STATE_APPROVED || a.GetDecidedBy() != "token:"+adminTok.GetId() {
		t.Errorf("decided %v", a)
	}
	_, err = b.approvalsClient(admin).DecideApproval(t.Context(), connect.NewRequest(&agentsv1.DecideApprovalRequest{Id: id, Reason: "too late"}))
	wantCode(t, "denying an approved approval", err, connect.CodeFailedPrecondition)
}
