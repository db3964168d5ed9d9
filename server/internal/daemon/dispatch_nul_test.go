package daemon_test

import (
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	nodev1 "github.com/palyra/palyra/gen/go/palyra/node/v1"
)

// TestDispatchInputWithNUL: an input holding \u0000, valid JSON that PostgreSQL's jsonb
// refuses, is InvalidArgument naming the input, through both creating RPCs, and nothing
// is stored; so is a cancel reason with a NUL. A node's result holding one fails its
// dispatch with the reason instead of failing the node's whole report.
func TestDispatchInputWithNUL(t *testing.T) {
	t.Parallel()
	b := startAccess(t)
	dev := b.enroll(t, time.Hour)
	node, _ := attachNode(t, b.testDaemon, dev)
	dc := b.dispatchClient()
	for name, tc := range map[string]struct{ capability, input, where string }{
		"in a value": {"shell.execute", `{"argv":["printf","a\u0000b"]}`, `at "/argv/1"`},
		"in a key":   {"system.info", `{"x\u0000":1}`, `in a key at "/x\x00"`},
	} {
		_, err := dc.CreateDispatch(t.Context(), connect.NewRequest(&controlplanev1.CreateDispatchRequest{
			NodeId: dev.deviceID, Capability: tc.capability, InputJson: tc.input, IdempotencyKey: "nul",
		}))
		wantCode(t, "CreateDispatch, NUL "+name, err, connect.CodeInvalidArgument)
		if want := "input_json holds \\u0000 (a NUL character) " + tc.where; err != nil && !strings.Contains(err.Error(), want) {
			t.Errorf("CreateDispatch, NUL %s: %v does not say %s", name, err, want)
		}
		_, err = dc.ExecuteCapability(t.Context(), connect.NewRequest(&controlplanev1.ExecuteCapabilityRequest{
			NodeId: dev.deviceID, Capability: tc.capability, InputJson: tc.input,
		}))
		wantCode(t, "ExecuteCapability, NUL "+name, err, connect.CodeInvalidArgument)
	}
	// An escaped backslash before u0000 is no NUL.
	d := createDispatch(t, b.testDaemon, &controlplanev1.CreateDispatchRequest{
		NodeId: dev.deviceID, Capability: "shell.execute", InputJson: `{"argv":["echo","\\u0000"]}`,
	})
	list, err := dc.ListDispatches(t.Context(), connect.NewRequest(&controlplanev1.ListDispatchesRequest{}))
	if err != nil || len(list.Msg.GetDispatches()) != 1 {
		t.Errorf("dispatches stored: %v %v, want only the one without NUL", list, err)
	}
	_, err = dc.CancelDispatch(t.Context(), connect.NewRequest(&controlplanev1.CancelDispatchRequest{Id: d.GetId(), Reason: "a\x00b"}))
	wantCode(t, "a cancel reason with a NUL", err, connect.CodeInvalidArgument)

	id := node.nextDispatch().GetDispatchId()
	res := result(id, nodev1.DispatchOutcome_DISPATCH_OUTCOME_SUCCEEDED, 0, 0)
	res.GetResult().ResultJson, res.GetResult().Error = `{"x":"\u0000"}`, "a\x00b"
	node.send(res)
	if ack := node.next().GetResultAck(); ack.GetDispatchId() != id {
		t.Fatalf("no ack for the result: %v", ack)
	}
	if got, _ := getDispatch(t, b.testDaemon, id); got.GetState() != controlplanev1.DispatchState_DISPATCH_STATE_FAILED ||
		!strings.Contains(got.GetError(), "the node's result holds \\u0000") {
		t.Errorf("a result with \\u0000: %v", got)
	}
}
