package daemon_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	"github.com/palyra/palyra/gen/go/palyra/controlplane/v1/controlplanev1connect"
	nodev1 "github.com/palyra/palyra/gen/go/palyra/node/v1"
	"github.com/palyra/palyra/server/internal/audit"
)

// answerEach has n answer every dispatch it is sent, until its stream ends: accepted,
// the dispatch's id as its output, and a success.
func answerEach(n *testNode) {
	for {
		select {
		case m := <-n.recv:
			d := m.GetDispatch()
			if d == nil {
				continue
			}
			id := d.GetDispatchId()
			for _, msg := range []*nodev1.AttachRequest{
				accepted(id), output(id, 0, id), result(id, nodev1.DispatchOutcome_DISPATCH_OUTCOME_SUCCEEDED, 0, uint64(len(id))),
			} {
				if n.stream.Send(msg) != nil {
					return
				}
			}
		case <-n.end:
			return
		}
	}
}

// TestConcurrentDispatchesCommitTogether makes many dispatch calls at once, so that the
// replica writes their inserts, the nodes' reports and the audit events in shared
// transactions (store.Grouped): every ExecuteCapability gets its own dispatch's answer,
// the calls repeating an idempotency key get the first call's dispatch, and every call
// has its event in an audit log that verifies.
func TestConcurrentDispatchesCommitTogether(t *testing.T) {
	t.Parallel()
	b := startAccess(t)
	const nodes, executes, keys = 3, 30, 12
	devs := make([]*enrolled, nodes)
	for i := range devs {
		devs[i] = b.enroll(t, time.Hour)
		node, _ := attachNode(t, b.testDaemon, devs[i])
		go answerEach(node)
	}
	// A node that attached once and left: what is created for it stays queued.
	queue := b.enroll(t, time.Hour)
	gone, _ := attachNode(t, b.testDaemon, queue)
	gone.close()

	dc := b.dispatchClient()
	var wg sync.WaitGroup
	errs := make(chan error, executes+2*keys)
	ids, created := make([]string, 2*keys), make([]bool, 2*keys)
	for i := range executes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := dc.ExecuteCapability(t.Context(), connect.NewRequest(&controlplanev1.ExecuteCapabilityRequest{
				NodeId: devs[i%nodes].deviceID, Capability: "shell.execute", InputJson: fmt.Sprintf(`{"argv":["run","%d"]}`, i),
				Timeout: durationpb.New(20 * time.Second),
			}))
			if err != nil {
				errs <- fmt.Errorf("execute %d: %w", i, err)
				return
			}
			d := res.Msg.GetDispatch()
			if d.GetState() != controlplanev1.DispatchState_DISPATCH_STATE_SUCCEEDED || joined(res.Msg.GetOutput()) != d.GetId() {
				errs <- fmt.Errorf("execute %d: %v with output %q", i, d, joined(res.Msg.GetOutput()))
			}
		}()
	}
	for i := range 2 * keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := dc.CreateDispatch(t.Context(), connect.NewRequest(&controlplanev1.CreateDispatchRequest{
				NodeId: queue.deviceID, Capability: "system.info", IdempotencyKey: fmt.Sprint("key-", i%keys),
				Timeout: durationpb.New(time.Hour),
			}))
			if err != nil {
				errs <- fmt.Errorf("create %d: %w", i, err)
				return
			}
			ids[i], created[i] = res.Msg.GetDispatch().GetId(), res.Msg.GetCreated()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	for k := range keys {
		if ids[k] != ids[k+keys] || created[k] == created[k+keys] {
			t.Errorf("key-%d: dispatches %s (created %v) and %s (created %v), want one created and the same for both",
				k, ids[k], created[k], ids[k+keys], created[k+keys])
		}
	}
	queued, err := dc.ListDispatches(t.Context(), connect.NewRequest(&controlplanev1.ListDispatchesRequest{NodeId: queue.deviceID}))
	if err != nil || len(queued.Msg.GetDispatches()) != keys {
		t.Errorf("dispatches queued: %d (%v), want %d", len(queued.Msg.GetDispatches()), err, keys)
	}

	counts := map[string]int{}
	for _, r := range auditLog(t, b.dbURL) {
		if r.Outcome == audit.Success {
			counts[r.Procedure]++
		}
	}
	if got := counts[controlplanev1connect.DispatchServiceExecuteCapabilityProcedure]; got != executes {
		t.Errorf("ExecuteCapability events: %d, want %d", got, executes)
	}
	if got := counts[controlplanev1connect.DispatchServiceCreateDispatchProcedure]; got != 2*keys {
		t.Errorf("CreateDispatch events: %d, want %d", got, 2*keys)
	}
}
