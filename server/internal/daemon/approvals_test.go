package daemon_test

import (
	"strings"
	"testing"

	"connectrpc.com/connect"

	accessv1 "github.com/palyra/palyra/gen/go/palyra/access/v1"
	agentsv1 "github.com/palyra/palyra/gen/go/palyra/agents/v1"
	"github.com/palyra/palyra/gen/go/palyra/agents/v1/agentsv1connect"
)

func (td *testDaemon) approvalsClient(token string) agentsv1connect.ApprovalServiceClient {
	return agentsv1connect.NewApprovalServiceClient(td.client(token), td.baseURL)
}

// TestApprovalsNeedTheirPermissions: an operator reads a real run's pending approval but
// cannot decide it (approvals.decide is admin's and owner's); an admin decides it on
// another replica than the run's, and the run, told, goes on there.
func TestApprovalsNeedTheirPermissions(t *testing.T) {
	t.Parallel()
	b := startRuns(t, toolThenAnswer("shell_execute", `{"argv": ["uptime"]}`))
	other := b.startReplica(t)
	_, operator := b.createToken(t, &accessv1.CreateTokenRequest{Label: "ops", Role: accessv1.Role_ROLE_OPERATOR})
	adminTok, admin := b.createToken(t, &accessv1.CreateTokenRequest{Label: "boss", Role: accessv1.Role_ROLE_ADMIN})
	asking := b.startAskingRun(t, "asker")
	id := asking.approval.GetId()

	list, err := b.approvalsClient(operator).ListApprovals(t.Context(), connect.NewRequest(&agentsv1.ListApprovalsRequest{
		State: agentsv1.ApprovalState_APPROVAL_STATE_PENDING}))
	if err != nil || len(list.Msg.GetApprovals()) != 1 || list.Msg.GetApprovals()[0].GetId() != id {
		t.Fatalf("an operator lists %v, %v", list, err)
	}
	_, err = b.approvalsClient(operator).DecideApproval(t.Context(), connect.NewRequest(&agentsv1.DecideApprovalRequest{Id: id, Approve: true}))
	wantCode(t, "an operator approving", err, connect.CodePermissionDenied)
	if n := dispatchCount(t, b.testDaemon, asking.dev.deviceID); n != 0 {
		t.Fatalf("%d dispatches after the operator's refused approval", n)
	}

	res, err := other.approvalsClient(admin).DecideApproval(t.Context(), connect.NewRequest(&agentsv1.DecideApprovalRequest{
		Id: id, Approve: true, Scope: agentsv1.ApprovalScope_APPROVAL_SCOPE_RUN}))
	if err != nil {
		t.Fatal(err)
	}
	if a := res.Msg.GetApproval(); a.GetState() != agentsv1.ApprovalState_APPROVAL_STATE_APPROVED || a.GetDecidedBy() != "token:"+adminTok.GetId() {
		t.Errorf("decided %v", a)
	}
	d := answerDispatch(t, asking.node, `{"exit_code":0}`)
	run, _ := finished(t, asking.events)
	if run.GetState() != agentsv1.RunState_RUN_STATE_SUCCEEDED || !strings.Contains(run.GetAnswer(), `"exit_code":0`) || run.GetReplicaId() != b.cfg.ReplicaID {
		t.Errorf("the approved run: %v", run)
	}
	_, steps := getRun(t, b.testDaemon, run.GetId())
	if calls := toolSteps(steps); len(calls) != 1 || calls[0].GetApprovalId() != id || calls[0].GetDispatchId() != d.GetDispatchId() {
		t.Errorf("tool calls: %v", calls)
	}
	_, err = b.approvalsClient(admin).DecideApproval(t.Context(), connect.NewRequest(&agentsv1.DecideApprovalRequest{Id: id, Reason: "too late"}))
	wantCode(t, "denying an approved approval", err, connect.CodeFailedPrecondition)
}
