package daemon_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5"
	"github.com/oklog/ulid/v2"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	accessv1 "github.com/palyra/palyra/gen/go/palyra/access/v1"
	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	"github.com/palyra/palyra/gen/go/palyra/controlplane/v1/controlplanev1connect"
	nodev1 "github.com/palyra/palyra/gen/go/palyra/node/v1"
	"github.com/palyra/palyra/gen/go/palyra/node/v1/nodev1connect"
	"github.com/palyra/palyra/internal/eventually"
	"github.com/palyra/palyra/server/internal/identity"
	"github.com/palyra/palyra/server/internal/store/storetest"
)

// argvSchema is the input schema of the test nodes' shell.execute.
const argvSchema = `{"type":"object","required":["argv"],"properties":{"argv":{"type":"array","minItems":1,"items":{"type":"string"}}},"additionalProperties":false}`

// testCapabilities are what the test nodes announce.
func testCapabilities() []*nodev1.Capability {
	return []*nodev1.Capability{
		{Name: "shell.execute", Description: "runs a command", InputSchema: argvSchema, Available: true},
		{Name: "system.info", Description: "describes the host", Available: true},
		{Name: "filesystem.read", Description: "reads files", Available: false},
	}
}

// testNode speaks the Attach protocol by hand, so that tests control every message.
type testNode struct {
	t      *testing.T
	stream *connect.BidiStreamForClient[nodev1.AttachRequest, nodev1.AttachResponse]
	cancel context.CancelFunc
	recv   chan *nodev1.AttachResponse
	// end receives the error that ended the stream (nil for a clean end).
	end chan error
}

// openAttach opens an Attach stream to td with dev's certificate and sends first.
func openAttach(t *testing.T, td *testDaemon, dev *enrolled, first *nodev1.AttachRequest, opts ...connect.ClientOption) *testNode {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	client := nodev1connect.NewNodeServiceClient(td.mtls(dev.cert), td.baseURL, opts...)
	n := &testNode{t: t, stream: client.Attach(ctx), cancel: cancel, recv: make(chan *nodev1.AttachResponse, 256), end: make(chan error, 1)}
	t.Cleanup(n.close)
	if err := n.stream.Send(first); err != nil && !errors.Is(err, io.EOF) {
		t.Fatalf("send the first message: %v", err)
	}
	go func() {
		for {
			m, err := n.stream.Receive()
			if err != nil {
				if errors.Is(err, io.EOF) {
					err = nil
				}
				n.end <- err
				return
			}
			n.recv <- m
		}
	}()
	return n
}

// helloFor is the hello of dev.
func helloFor(dev *enrolled) *nodev1.AttachRequest {
	return &nodev1.AttachRequest{Message: &nodev1.AttachRequest_Hello{Hello: &nodev1.Hello{
		DeviceId: dev.deviceID, Platform: "linux/amd64", AgentVersion: "test-1", ProtocolVersions: []uint32{1},
		Capabilities: testCapabilities(), Labels: map[string]string{"region": "eu-west"},
	}}}
}

// attachNode attaches dev and returns the node once it is welcomed.
func attachNode(t *testing.T, td *testDaemon, dev *enrolled) (*testNode, *nodev1.Welcome) {
	t.Helper()
	n := openAttach(t, td, dev, helloFor(dev))
	w := n.next().GetWelcome()
	if w == nil {
		t.Fatal("the first message down is not a welcome")
	}
	return n, w
}

func (n *testNode) close() {
	n.cancel()
	_ = n.stream.CloseRequest()
}

func (n *testNode) send(m *nodev1.AttachRequest) {
	n.t.Helper()
	if err := n.stream.Send(m); err != nil {
		n.t.Fatalf("send %v: %v", m, err)
	}
}

// next returns the next message down, failing when the stream ends or none comes.
func (n *testNode) next() *nodev1.AttachResponse {
	n.t.Helper()
	select {
	case m := <-n.recv:
		return m
	case err := <-n.end:
		n.t.Fatalf("the stream ended while a message was expected: %v", err)
	case <-time.After(eventually.Deadline):
		n.t.Fatalf("no message down within %v", eventually.Deadline)
	}
	return nil
}

// nextDispatch skips to the next Dispatch message.
func (n *testNode) nextDispatch() *nodev1.Dispatch {
	n.t.Helper()
	for {
		if d := n.next().GetDispatch(); d != nil {
			return d
		}
	}
}

// ended waits for the end of the stream and returns its error.
func (n *testNode) ended() error {
	n.t.Helper()
	deadline := time.After(eventually.Deadline)
	for {
		select {
		case <-n.recv:
		case err := <-n.end:
			return err
		case <-deadline:
			n.t.Fatalf("the stream did not end within %v", eventually.Deadline)
			return nil
		}
	}
}

func accepted(id string) *nodev1.AttachRequest {
	return &nodev1.AttachRequest{Message: &nodev1.AttachRequest_Accepted{Accepted: &nodev1.DispatchAccepted{DispatchId: id}}}
}

func output(id string, offset uint64, data string) *nodev1.AttachRequest {
	return &nodev1.AttachRequest{Message: &nodev1.AttachRequest_Output{Output: &nodev1.DispatchOutput{
		DispatchId: id, Stream: nodev1.OutputStream_OUTPUT_STREAM_STDOUT, Offset: offset, Data: []byte(data),
	}}}
}

func result(id string, outcome nodev1.DispatchOutcome, exit int32, outputBytes uint64) *nodev1.AttachRequest {
	return &nodev1.AttachRequest{Message: &nodev1.AttachRequest_Result{Result: &nodev1.DispatchResult{
		DispatchId: id, Outcome: outcome, ExitCode: exit, OutputBytes: outputBytes, FinishTime: timestamppb.Now(),
		ResultJson: fmt.Sprintf(`{"exit_code":%d}`, exit),
	}}}
}

// dispatchClient is a DispatchService client with the owner's token.
func (td *testDaemon) dispatchClient() controlplanev1connect.DispatchServiceClient {
	return controlplanev1connect.NewDispatchServiceClient(td.h2, td.baseURL)
}

func (td *testDaemon) nodesClient() controlplanev1connect.NodeInventoryServiceClient {
	return controlplanev1connect.NewNodeInventoryServiceClient(td.h2, td.baseURL)
}

func createDispatch(t *testing.T, td *testDaemon, req *controlplanev1.CreateDispatchRequest) *controlplanev1.Dispatch {
	t.Helper()
	res, err := td.dispatchClient().CreateDispatch(t.Context(), connect.NewRequest(req))
	if err != nil {
		t.Fatalf("create dispatch: %v", err)
	}
	return res.Msg.GetDispatch()
}

func getDispatch(t *testing.T, td *testDaemon, id string) (*controlplanev1.Dispatch, []*controlplanev1.OutputChunk) {
	t.Helper()
	res, err := td.dispatchClient().GetDispatch(t.Context(), connect.NewRequest(&controlplanev1.GetDispatchRequest{Id: id, IncludeOutput: true}))
	if err != nil {
		t.Fatalf("get dispatch %s: %v", id, err)
	}
	return res.Msg.GetDispatch(), res.Msg.GetOutput()
}

// waitState waits until the dispatch is in state.
func waitState(t *testing.T, td *testDaemon, id string, state controlplanev1.DispatchState) *controlplanev1.Dispatch {
	t.Helper()
	var d *controlplanev1.Dispatch
	eventually.NoError(t, fmt.Sprintf("dispatch %s %s", id, state), func() error {
		if d, _ = getDispatch(t, td, id); d.GetState() != state {
			return fmt.Errorf("it is %s (error %q)", d.GetState(), d.GetError())
		}
		return nil
	})
	return d
}

func joined(chunks []*controlplanev1.OutputChunk) string {
	var b strings.Builder
	for _, c := range chunks {
		b.Write(c.GetData())
	}
	return b.String()
}

func TestDispatchToAnAttachedNode(t *testing.T) {
	t.Parallel()
	b := startAccess(t)
	dev := b.enroll(t, time.Hour)
	node, welcome := attachNode(t, b.testDaemon, dev)
	if welcome.GetProtocolVersion() != 1 || welcome.GetSessionId() == "" || welcome.GetHeartbeatInterval().AsDuration() != 15*time.Second {
		t.Errorf("welcome: %v", welcome)
	}

	got, err := b.nodesClient().GetNode(t.Context(), connect.NewRequest(&controlplanev1.GetNodeRequest{Id: dev.deviceID}))
	if err != nil {
		t.Fatal(err)
	}
	n := got.Msg.GetNode()
	if n.GetPresence() != controlplanev1.Presence_PRESENCE_ONLINE || len(n.GetCapabilities()) != 3 ||
		n.GetReportedLabels()["region"] != "eu-west" || n.GetAgentVersion() != "test-1" || n.GetProtocolVersion() != 1 ||
		n.GetAttachedReplica() != b.cfg.ReplicaID || n.GetCertificateExpireTime() == nil {
		t.Errorf("node: %v", n)
	}
	list, err := b.nodesClient().ListNodes(t.Context(), connect.NewRequest(&controlplanev1.ListNodesRequest{
		Presence: controlplanev1.Presence_PRESENCE_ONLINE, Capability: "shell.execute", Labels: map[string]string{"region": "eu-west"},
	}))
	if err != nil || len(list.Msg.GetNodes()) != 1 {
		t.Errorf("list online nodes with shell.execute in eu-west: %v %v", list, err)
	}
	for name, req := range map[string]*controlplanev1.ListNodesRequest{
		"offline":      {Presence: controlplanev1.Presence_PRESENCE_OFFLINE},
		"capability":   {Capability: "browser.open"},
		"label":        {Labels: map[string]string{"region": "us-east"}},
		"label absent": {Labels: map[string]string{"rack": "7"}},
	} {
		list, err := b.nodesClient().ListNodes(t.Context(), connect.NewRequest(req))
		if err != nil || len(list.Msg.GetNodes()) != 0 {
			t.Errorf("list nodes (%s): %v %v", name, list, err)
		}
	}

	// Refusals, each with its code; nothing is queued by them.
	dc := b.dispatchClient()
	for name, tc := range map[string]struct {
		req  *controlplanev1.CreateDispatchRequest
		code connect.Code
	}{
		"unknown node":          {&controlplanev1.CreateDispatchRequest{NodeId: ulid.Make().String(), Capability: "shell.execute"}, connect.CodeNotFound},
		"capability not known":  {&controlplanev1.CreateDispatchRequest{NodeId: dev.deviceID, Capability: "browser.open"}, connect.CodeFailedPrecondition},
		"capability off":        {&controlplanev1.CreateDispatchRequest{NodeId: dev.deviceID, Capability: "filesystem.read"}, connect.CodeFailedPrecondition},
		"schema violation":      {&controlplanev1.CreateDispatchRequest{NodeId: dev.deviceID, Capability: "shell.execute", InputJson: `{"argv":"echo hi"}`}, connect.CodeInvalidArgument},
		"missing required":      {&controlplanev1.CreateDispatchRequest{NodeId: dev.deviceID, Capability: "shell.execute"}, connect.CodeInvalidArgument},
		"not JSON":              {&controlplanev1.CreateDispatchRequest{NodeId: dev.deviceID, Capability: "system.info", InputJson: `{argv:`}, connect.CodeInvalidArgument},
		"malformed node id":     {&controlplanev1.CreateDispatchRequest{NodeId: "nope", Capability: "system.info"}, connect.CodeInvalidArgument},
		"timeout beyond a day":  {&controlplanev1.CreateDispatchRequest{NodeId: dev.deviceID, Capability: "system.info", Timeout: durationpb.New(25 * time.Hour)}, connect.CodeInvalidArgument},
		"output cap too large":  {&controlplanev1.CreateDispatchRequest{NodeId: dev.deviceID, Capability: "system.info", MaxOutputBytes: 1 << 30}, connect.CodeInvalidArgument},
		"idempotency key chars": {&controlplanev1.CreateDispatchRequest{NodeId: dev.deviceID, Capability: "system.info", IdempotencyKey: "a b"}, connect.CodeInvalidArgument},
	} {
		_, err := dc.CreateDispatch(t.Context(), connect.NewRequest(tc.req))
		wantCode(t, name, err, tc.code)
	}
	if list, err := dc.ListDispatches(t.Context(), connect.NewRequest(&controlplanev1.ListDispatchesRequest{})); err != nil || len(list.Msg.GetDispatches()) != 0 {
		t.Fatalf("refused dispatches were queued: %v %v", list, err)
	}

	d := createDispatch(t, b.testDaemon, &controlplanev1.CreateDispatchRequest{
		NodeId: dev.deviceID, Capability: "shell.execute", InputJson: `{"argv": ["echo", "hi"]}`,
		MaxOutputBytes: 8, IdempotencyKey: "run-1",
	})
	// The node is attached to the replica creating the dispatch: it is stored as sent
	// on the node's session and handed to it, without waiting in the queue.
	if d.GetState() != controlplanev1.DispatchState_DISPATCH_STATE_SENT || d.GetSendTime() == nil || d.GetCreatedBy() == "" {
		t.Errorf("created: %v", d)
	}
	again, err := dc.CreateDispatch(t.Context(), connect.NewRequest(&controlplanev1.CreateDispatchRequest{
		NodeId: dev.deviceID, Capability: "shell.execute", InputJson: `{"argv":["echo","hi"]}`, MaxOutputBytes: 8, IdempotencyKey: "run-1",
	}))
	if err != nil || again.Msg.GetCreated() || again.Msg.GetDispatch().GetId() != d.GetId() {
		t.Errorf("repeat with the same key: %v %v", again, err)
	}
	_, err = dc.CreateDispatch(t.Context(), connect.NewRequest(&controlplanev1.CreateDispatchRequest{
		NodeId: dev.deviceID, Capability: "shell.execute", InputJson: `{"argv":["rm","-rf","/"]}`, IdempotencyKey: "run-1",
	}))
	wantCode(t, "the same key for another request", err, connect.CodeAlreadyExists)

	got2 := node.nextDispatch()
	if got2.GetDispatchId() != d.GetId() || got2.GetCapability() != "shell.execute" || got2.GetMaxOutputBytes() != 8 ||
		got2.GetInputJson() != `{"argv": ["echo", "hi"]}` || !got2.GetDeadline().AsTime().Equal(d.GetDeadline().AsTime()) {
		t.Errorf("dispatch down: %v", got2)
	}
	waitState(t, b.testDaemon, d.GetId(), controlplanev1.DispatchState_DISPATCH_STATE_SENT)
	node.send(accepted(d.GetId()))
	waitState(t, b.testDaemon, d.GetId(), controlplanev1.DispatchState_DISPATCH_STATE_RUNNING)
	node.send(output(d.GetId(), 0, "hello "))
	node.send(output(d.GetId(), 6, "world\n")) // beyond the cap of 8 from byte 8
	node.send(output(d.GetId(), 6, "world\n")) // a repeat is ignored
	node.send(result(d.GetId(), nodev1.DispatchOutcome_DISPATCH_OUTCOME_SUCCEEDED, 0, 12))
	if ack := node.next().GetResultAck(); ack.GetDispatchId() != d.GetId() {
		t.Fatalf("no ack for the result: %v", ack)
	}
	end, out := getDispatch(t, b.testDaemon, d.GetId())
	if end.GetState() != controlplanev1.DispatchState_DISPATCH_STATE_SUCCEEDED || !end.GetOutputTruncated() ||
		end.GetOutputBytes() != 12 || end.GetResultJson() != `{"exit_code": 0}` || end.GetFinishTime() == nil || end.GetStartTime() == nil {
		t.Errorf("ended: %v", end)
	}
	if joined(out) != "hello wo" {
		t.Errorf("output kept %q, want the first 8 bytes", joined(out))
	}
	// A result sent again (a node that missed the ack) is acknowledged and changes nothing.
	node.send(result(d.GetId(), nodev1.DispatchOutcome_DISPATCH_OUTCOME_FAILED, 1, 0))
	if ack := node.next().GetResultAck(); ack.GetDispatchId() != d.GetId() {
		t.Fatalf("no ack for the repeated result: %v", ack)
	}
	if again, _ := getDispatch(t, b.testDaemon, d.GetId()); again.GetState() != controlplanev1.DispatchState_DISPATCH_STATE_SUCCEEDED {
		t.Errorf("a repeated result changed the dispatch: %v", again)
	}
	_, err = dc.CancelDispatch(t.Context(), connect.NewRequest(&controlplanev1.CancelDispatchRequest{Id: d.GetId()}))
	wantCode(t, "cancel an ended dispatch", err, connect.CodeFailedPrecondition)
	_, err = dc.CancelDispatch(t.Context(), connect.NewRequest(&controlplanev1.CancelDispatchRequest{Id: ulid.Make().String()}))
	wantCode(t, "cancel an unknown dispatch", err, connect.CodeNotFound)
	_, err = dc.GetDispatch(t.Context(), connect.NewRequest(&controlplanev1.GetDispatchRequest{Id: ulid.Make().String()}))
	wantCode(t, "get an unknown dispatch", err, connect.CodeNotFound)

	// A watch of an ended dispatch replays its output and its end.
	watch, err := dc.WatchDispatch(t.Context(), connect.NewRequest(&controlplanev1.WatchDispatchRequest{Id: d.GetId(), FromOffset: 2}))
	if err != nil {
		t.Fatal(err)
	}
	var watched strings.Builder
	var last *controlplanev1.Dispatch
	for watch.Receive() {
		if o := watch.Msg().GetOutput(); o != nil {
			watched.Write(o.GetData())
		}
		if d := watch.Msg().GetDispatch(); d != nil {
			last = d
		}
	}
	if err := watch.Err(); err != nil || watched.String() != "llo wo" || last.GetState() != controlplanev1.DispatchState_DISPATCH_STATE_SUCCEEDED {
		t.Errorf("watch from offset 2: %q %v %v", watched.String(), last, err)
	}

	// The node's messages are counted by kind.
	b.wantMetrics(t,
		`palyra_node_messages_total{kind="accepted"} 1`,
		`palyra_node_messages_total{kind="output"} 3`,
		`palyra_node_messages_total{kind="result"} 2`,
		`palyra_dispatches_ended_total{by="node",state="succeeded"} 1`,
	)
}

// TestAttachOverGRPC runs a node's stream with the gRPC protocol (as a grpc-go node
// would) and the Connect protocol side by side: a dispatch round trip on each.
func TestAttachOverGRPC(t *testing.T) {
	t.Parallel()
	b := startAccess(t)
	for name, opts := range map[string][]connect.ClientOption{
		"grpc":    {connect.WithGRPC()},
		"connect": nil,
	} {
		t.Run(name, func(t *testing.T) {
			dev := b.enroll(t, time.Hour)
			node := openAttach(t, b.testDaemon, dev, helloFor(dev), opts...)
			if w := node.next().GetWelcome(); w.GetProtocolVersion() != 1 {
				t.Fatalf("welcome %v", w)
			}
			d := createDispatch(t, b.testDaemon, &controlplanev1.CreateDispatchRequest{NodeId: dev.deviceID, Capability: "system.info"})
			if got := node.nextDispatch(); got.GetDispatchId() != d.GetId() {
				t.Fatalf("dispatch %v, want %s", got, d.GetId())
			}
			node.send(accepted(d.GetId()))
			node.send(output(d.GetId(), 0, "over "+name+"\n"))
			node.send(result(d.GetId(), nodev1.DispatchOutcome_DISPATCH_OUTCOME_SUCCEEDED, 0, uint64(len("over "+name+"\n"))))
			if ack := node.next().GetResultAck(); ack.GetDispatchId() != d.GetId() {
				t.Fatalf("ack %v", ack)
			}
			got, out := getDispatch(t, b.testDaemon, d.GetId())
			if got.GetState() != controlplanev1.DispatchState_DISPATCH_STATE_SUCCEEDED || joined(out) != "over "+name+"\n" {
				t.Errorf("dispatch %v, output %q", got.GetState(), joined(out))
			}
		})
	}
}

func TestExecuteCapabilityWaitsForTheResult(t *testing.T) {
	t.Parallel()
	b := startAccess(t)
	dev := b.enroll(t, time.Hour)
	node, _ := attachNode(t, b.testDaemon, dev)
	go func() {
		d := node.nextDispatch()
		node.send(accepted(d.GetDispatchId()))
		node.send(output(d.GetDispatchId(), 0, "hi\n"))
		node.send(result(d.GetDispatchId(), nodev1.DispatchOutcome_DISPATCH_OUTCOME_SUCCEEDED, 0, 3))
	}()
	began := time.Now()
	res, err := b.dispatchClient().ExecuteCapability(t.Context(), connect.NewRequest(&controlplanev1.ExecuteCapabilityRequest{
		NodeId: dev.deviceID, Capability: "shell.execute", InputJson: `{"argv":["echo","hi"]}`, Timeout: durationpb.New(20 * time.Second),
	}))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ExecuteCapability returned after %v", time.Since(began))
	if res.Msg.GetDispatch().GetState() != controlplanev1.DispatchState_DISPATCH_STATE_SUCCEEDED || joined(res.Msg.GetOutput()) != "hi\n" {
		t.Errorf("execute: %v", res.Msg)
	}
	_, err = b.dispatchClient().ExecuteCapability(t.Context(), connect.NewRequest(&controlplanev1.ExecuteCapabilityRequest{
		NodeId: dev.deviceID, Capability: "system.info", MaxOutputBytes: 16 << 20,
	}))
	wantCode(t, "an output cap beyond one response", err, connect.CodeInvalidArgument)
}

func TestDispatchWaitsForAnOfflineNodeAndSurvivesReconnects(t *testing.T) {
	t.Parallel()
	b := startAccess(t)
	dev := b.enroll(t, time.Hour)
	_, err := b.dispatchClient().CreateDispatch(t.Context(), connect.NewRequest(&controlplanev1.CreateDispatchRequest{NodeId: dev.deviceID, Capability: "system.info"}))
	wantCode(t, "a node that never attached", err, connect.CodeFailedPrecondition)

	first, _ := attachNode(t, b.testDaemon, dev)
	first.close()
	if err := first.ended(); err != nil && connect.CodeOf(err) != connect.CodeCanceled {
		t.Fatalf("closing the stream: %v", err)
	}
	waitPresence(t, b.testDaemon, dev.deviceID, controlplanev1.Presence_PRESENCE_OFFLINE)

	// Queued while the node is offline, in order.
	var ids []string
	for range 3 {
		ids = append(ids, createDispatch(t, b.testDaemon, &controlplanev1.CreateDispatchRequest{NodeId: dev.deviceID, Capability: "system.info"}).GetId())
	}
	second, _ := attachNode(t, b.testDaemon, dev)
	for _, want := range ids {
		if got := second.nextDispatch().GetDispatchId(); got != want {
			t.Fatalf("delivered %s, want %s (in creation order)", got, want)
		}
	}
	second.send(accepted(ids[0]))
	waitState(t, b.testDaemon, ids[0], controlplanev1.DispatchState_DISPATCH_STATE_RUNNING)
	// The node loses its stream before reporting anything.
	second.close()
	_ = second.ended()

	// The next session gets every unfinished dispatch again (the node dedups by id),
	// and results from its spool are persisted and acknowledged.
	third, _ := attachNode(t, b.testDaemon, dev)
	third.send(result(ids[0], nodev1.DispatchOutcome_DISPATCH_OUTCOME_SUCCEEDED, 0, 0))
	seen := map[string]bool{}
	acked := false
	for !acked || len(seen) < 3 {
		m := third.next()
		if d := m.GetDispatch(); d != nil {
			seen[d.GetDispatchId()] = true
		}
		if a := m.GetResultAck(); a != nil && a.GetDispatchId() == ids[0] {
			acked = true
		}
	}
	waitState(t, b.testDaemon, ids[0], controlplanev1.DispatchState_DISPATCH_STATE_SUCCEEDED)
	for _, id := range ids[1:] {
		third.send(result(id, nodev1.DispatchOutcome_DISPATCH_OUTCOME_FAILED, 2, 0))
		waitState(t, b.testDaemon, id, controlplanev1.DispatchState_DISPATCH_STATE_FAILED)
	}
}

func waitPresence(t *testing.T, td *testDaemon, id string, want controlplanev1.Presence) {
	t.Helper()
	eventually.NoError(t, fmt.Sprintf("node %s %s", id, want), func() error {
		res, err := td.nodesClient().GetNode(t.Context(), connect.NewRequest(&controlplanev1.GetNodeRequest{Id: id}))
		if err != nil {
			t.Fatal(err)
		}
		if p := res.Msg.GetNode().GetPresence(); p != want {
			return fmt.Errorf("it is %s", p)
		}
		return nil
	})
}

// TestListsPage pages through nodes and dispatches: every item once, newest first, and
// a malformed page token refused.
func TestListsPage(t *testing.T) {
	t.Parallel()
	b := startAccess(t)
	var devs []*enrolled
	for range 3 {
		devs = append(devs, b.enroll(t, time.Hour))
	}
	attachNode(t, b.testDaemon, devs[0])
	for range 5 {
		createDispatch(t, b.testDaemon, &controlplanev1.CreateDispatchRequest{NodeId: devs[0].deviceID, Capability: "system.info"})
	}

	var nodes []string
	token := ""
	for pages := 1; ; pages++ {
		res, err := b.nodesClient().ListNodes(t.Context(), connect.NewRequest(&controlplanev1.ListNodesRequest{PageSize: 2, PageToken: token}))
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range res.Msg.GetNodes() {
			nodes = append(nodes, n.GetId())
		}
		if token = res.Msg.GetNextPageToken(); token == "" {
			if pages != 2 {
				t.Errorf("3 nodes in %d pages of 2", pages)
			}
			break
		}
	}
	if want := []string{devs[2].deviceID, devs[1].deviceID, devs[0].deviceID}; !slices.Equal(nodes, want) {
		t.Errorf("nodes %v, want newest first %v", nodes, want)
	}

	seen := map[string]bool{}
	token = ""
	for pages := 1; ; pages++ {
		res, err := b.dispatchClient().ListDispatches(t.Context(), connect.NewRequest(&controlplanev1.ListDispatchesRequest{
			NodeId: devs[0].deviceID, PageSize: 2, PageToken: token,
		}))
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range res.Msg.GetDispatches() {
			if seen[d.GetId()] {
				t.Errorf("dispatch %s listed twice", d.GetId())
			}
			seen[d.GetId()] = true
		}
		if token = res.Msg.GetNextPageToken(); token == "" {
			if pages != 3 {
				t.Errorf("5 dispatches in %d pages of 2", pages)
			}
			break
		}
	}
	if len(seen) != 5 {
		t.Errorf("%d dispatches listed, want 5", len(seen))
	}
	_, err := b.nodesClient().ListNodes(t.Context(), connect.NewRequest(&controlplanev1.ListNodesRequest{PageToken: "not-a-token"}))
	wantCode(t, "a malformed page token", err, connect.CodeInvalidArgument)
	_, err = b.dispatchClient().ListDispatches(t.Context(), connect.NewRequest(&controlplanev1.ListDispatchesRequest{PageToken: "not-a-token"}))
	wantCode(t, "a malformed page token", err, connect.CodeInvalidArgument)
}

// TestListDispatchesByCreationTime: create_time_after and create_time_before select
// [after, before) exactly (to the microsecond PostgreSQL keeps), pages stay whole across
// the window's edges, and a window that is empty or a time that is not one is refused
// naming its field.
func TestListDispatchesByCreationTime(t *testing.T) {
	t.Parallel()
	b := startAccess(t)
	dev := b.enroll(t, time.Hour)
	attachNode(t, b.testDaemon, dev)
	dc := b.dispatchClient()
	for range 6 {
		createDispatch(t, b.testDaemon, &controlplanev1.CreateDispatchRequest{NodeId: dev.deviceID, Capability: "system.info"})
	}
	// list pages through req with pages of one, returning the ids and the page count.
	list := func(req *controlplanev1.ListDispatchesRequest) ([]string, int) {
		t.Helper()
		var ids []string
		pages := 0
		for {
			pages++
			res, err := dc.ListDispatches(t.Context(), connect.NewRequest(req))
			if err != nil {
				t.Fatalf("list %v: %v", req, err)
			}
			for _, d := range res.Msg.GetDispatches() {
				ids = append(ids, d.GetId())
			}
			if req.PageToken = res.Msg.GetNextPageToken(); req.PageToken == "" {
				return ids, pages
			}
		}
	}
	res, err := dc.ListDispatches(t.Context(), connect.NewRequest(&controlplanev1.ListDispatchesRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	all := res.Msg.GetDispatches() // newest first
	if len(all) != 6 {
		t.Fatalf("%d dispatches, want 6", len(all))
	}
	// within is what [after, before) must select: all's ids created in it, newest first.
	within := func(after, before *timestamppb.Timestamp) []string {
		var ids []string
		for _, d := range all {
			at := d.GetCreateTime().AsTime()
			if (after == nil || !at.Before(after.AsTime())) && (before == nil || at.Before(before.AsTime())) {
				ids = append(ids, d.GetId())
			}
		}
		return ids
	}
	after, before := all[4].GetCreateTime(), all[1].GetCreateTime() // the 2nd to 4th oldest
	justAfter := timestamppb.New(after.AsTime().Add(time.Nanosecond))
	for name, tc := range map[string]struct{ after, before *timestamppb.Timestamp }{
		"window":             {after, before},
		"from a creation on": {after: after},
		"until a creation":   {before: before},
		"a nanosecond later": {justAfter, before},
		"all":                {timestamppb.New(all[5].GetCreateTime().AsTime().Add(-time.Hour)), timestamppb.New(time.Now().Add(time.Hour))},
		"none yet":           {after: timestamppb.New(time.Now().Add(time.Hour))},
	} {
		want := within(tc.after, tc.before)
		got, pages := list(&controlplanev1.ListDispatchesRequest{NodeId: dev.deviceID, CreateTimeAfter: tc.after, CreateTimeBefore: tc.before, PageSize: 1})
		if !slices.Equal(got, want) || pages != max(len(want), 1) {
			t.Errorf("%s: %v in %d pages, want %v in one page each", name, got, pages, want)
		}
	}
	// The window starts at a creation and ends at one: the first is in it, the last not.
	if w := within(after, before); !slices.Contains(w, all[4].GetId()) || slices.Contains(w, all[1].GetId()) {
		t.Errorf("window [4th, 1st): %v", w)
	}
	if w := within(justAfter, before); slices.Contains(w, all[4].GetId()) {
		t.Errorf("a window starting a nanosecond after a dispatch's creation selects it: %v", w)
	}

	for name, tc := range map[string]struct {
		req   *controlplanev1.ListDispatchesRequest
		field string
	}{
		"empty window":    {&controlplanev1.ListDispatchesRequest{CreateTimeAfter: after, CreateTimeBefore: after}, "create_time_before"},
		"reversed window": {&controlplanev1.ListDispatchesRequest{CreateTimeAfter: before, CreateTimeBefore: after}, "create_time_before"},
		"bad after":       {&controlplanev1.ListDispatchesRequest{CreateTimeAfter: &timestamppb.Timestamp{Seconds: 1, Nanos: 2_000_000_000}}, "create_time_after"},
		"bad before":      {&controlplanev1.ListDispatchesRequest{CreateTimeBefore: &timestamppb.Timestamp{Seconds: 1 << 40}}, "create_time_before"},
	} {
		_, err := dc.ListDispatches(t.Context(), connect.NewRequest(tc.req))
		wantCode(t, name, err, connect.CodeInvalidArgument)
		if fields := fieldsOf(err); !slices.Equal(fields, []string{tc.field}) {
			t.Errorf("%s: violations name %v, want %s", name, fields, tc.field)
		}
	}
}

// TestGivenLabelsWinOverReported: a node reporting a label its administrator also gave
// is listed, filtered and shown with the administrator's value.
func TestGivenLabelsWinOverReported(t *testing.T) {
	t.Parallel()
	b := startAccess(t)
	dev := b.enroll(t, time.Hour)
	b.sql(t, fmt.Sprintf(`update devices set labels = '{"region":"us-east","tier":"prod"}' where id = '%s'`, dev.deviceID))
	attachNode(t, b.testDaemon, dev) // reports region=eu-west
	nc := b.nodesClient()
	got, err := nc.GetNode(t.Context(), connect.NewRequest(&controlplanev1.GetNodeRequest{Id: dev.deviceID}))
	if err != nil {
		t.Fatal(err)
	}
	n := got.Msg.GetNode()
	if e := n.GetEffectiveLabels(); len(e) != 2 || e["region"] != "us-east" || e["tier"] != "prod" ||
		n.GetReportedLabels()["region"] != "eu-west" || n.GetLabels()["region"] != "us-east" {
		t.Errorf("node labels %v, reported %v, effective %v", n.GetLabels(), n.GetReportedLabels(), n.GetEffectiveLabels())
	}
	for _, tc := range []struct {
		labels map[string]string
		want   int
	}{
		{map[string]string{"region": "us-east"}, 1},
		{map[string]string{"region": "us-east", "tier": "prod"}, 1},
		{map[string]string{"region": "eu-west"}, 0},
	} {
		res, err := nc.ListNodes(t.Context(), connect.NewRequest(&controlplanev1.ListNodesRequest{Labels: tc.labels}))
		if err != nil || len(res.Msg.GetNodes()) != tc.want {
			t.Errorf("list nodes labelled %v: %v %v, want %d", tc.labels, res, err, tc.want)
			continue
		}
		if tc.want == 1 && res.Msg.GetNodes()[0].GetEffectiveLabels()["region"] != "us-east" {
			t.Errorf("listed node's effective labels: %v", res.Msg.GetNodes()[0].GetEffectiveLabels())
		}
	}
}

func TestCancelDispatch(t *testing.T) {
	t.Parallel()
	b := startAccess(t)
	dev := b.enroll(t, time.Hour)
	node, _ := attachNode(t, b.testDaemon, dev)
	node.close()
	_ = node.ended()

	queued := createDispatch(t, b.testDaemon, &controlplanev1.CreateDispatchRequest{NodeId: dev.deviceID, Capability: "system.info"})
	res, err := b.dispatchClient().CancelDispatch(t.Context(), connect.NewRequest(&controlplanev1.CancelDispatchRequest{Id: queued.GetId(), Reason: "changed my mind"}))
	if err != nil || res.Msg.GetDispatch().GetState() != controlplanev1.DispatchState_DISPATCH_STATE_CANCELLED ||
		!strings.Contains(res.Msg.GetDispatch().GetError(), "changed my mind") {
		t.Fatalf("cancel a queued dispatch: %v %v", res, err)
	}

	running := createDispatch(t, b.testDaemon, &controlplanev1.CreateDispatchRequest{NodeId: dev.deviceID, Capability: "system.info"})
	node, _ = attachNode(t, b.testDaemon, dev)
	if got := node.nextDispatch(); got.GetDispatchId() != running.GetId() {
		t.Fatalf("delivered %s, want %s (the cancelled one must not be)", got.GetDispatchId(), running.GetId())
	}
	node.send(accepted(running.GetId()))
	waitState(t, b.testDaemon, running.GetId(), controlplanev1.DispatchState_DISPATCH_STATE_RUNNING)
	res, err = b.dispatchClient().CancelDispatch(t.Context(), connect.NewRequest(&controlplanev1.CancelDispatchRequest{Id: running.GetId(), Reason: "stop"}))
	if err != nil || res.Msg.GetDispatch().GetState() != controlplanev1.DispatchState_DISPATCH_STATE_RUNNING || res.Msg.GetDispatch().GetCancelTime() == nil {
		t.Fatalf("cancel a running dispatch: %v %v", res, err)
	}
	var cancel *nodev1.Cancel
	for cancel == nil {
		cancel = node.next().GetCancel()
	}
	if cancel.GetDispatchId() != running.GetId() || cancel.GetReason() != "stop" {
		t.Errorf("cancel down: %v", cancel)
	}
	node.send(result(running.GetId(), nodev1.DispatchOutcome_DISPATCH_OUTCOME_CANCELLED, 0, 0))
	waitState(t, b.testDaemon, running.GetId(), controlplanev1.DispatchState_DISPATCH_STATE_CANCELLED)
}

func TestDeadlinesEndEveryDispatch(t *testing.T) {
	t.Parallel()
	b := startAccess(t)
	dev := b.enroll(t, time.Hour)
	node, _ := attachNode(t, b.testDaemon, dev)
	node.close()
	_ = node.ended()

	undelivered := createDispatch(t, b.testDaemon, &controlplanev1.CreateDispatchRequest{NodeId: dev.deviceID, Capability: "system.info", Timeout: durationpb.New(time.Second)})
	d := waitState(t, b.testDaemon, undelivered.GetId(), controlplanev1.DispatchState_DISPATCH_STATE_TIMED_OUT)
	if !strings.Contains(d.GetError(), "offline") {
		t.Errorf("undelivered dispatch: %v", d)
	}

	// One node stays attached but keeps silent about its dispatch: it times out after
	// the grace period for the node's own report. Another vanishes while running its
	// own: it fails. The node must be gone before that dispatch's deadline and grace
	// are over, so its deadline is 20 s away: room for a busy machine.
	gone := b.enroll(t, time.Hour)
	goneNode, _ := attachNode(t, b.testDaemon, gone)
	silent := createDispatch(t, b.testDaemon, &controlplanev1.CreateDispatchRequest{NodeId: dev.deviceID, Capability: "system.info", Timeout: durationpb.New(time.Second)})
	vanished := createDispatch(t, b.testDaemon, &controlplanev1.CreateDispatchRequest{NodeId: gone.deviceID, Capability: "system.info", Timeout: durationpb.New(20 * time.Second)})
	node, _ = attachNode(t, b.testDaemon, dev)
	node.send(accepted(node.nextDispatch().GetDispatchId()))
	goneNode.send(accepted(goneNode.nextDispatch().GetDispatchId()))
	goneNode.send(output(vanished.GetId(), 0, "partial"))
	waitState(t, b.testDaemon, vanished.GetId(), controlplanev1.DispatchState_DISPATCH_STATE_RUNNING)
	goneNode.close()
	_ = goneNode.ended()
	d = waitState(t, b.testDaemon, silent.GetId(), controlplanev1.DispatchState_DISPATCH_STATE_TIMED_OUT)
	if !strings.Contains(d.GetError(), "did not report") {
		t.Errorf("silent dispatch: %v", d)
	}
	d = waitState(t, b.testDaemon, vanished.GetId(), controlplanev1.DispatchState_DISPATCH_STATE_FAILED)
	// What the node sent before it vanished is kept, and counted.
	if _, out := getDispatch(t, b.testDaemon, vanished.GetId()); !strings.Contains(d.GetError(), "disconnected") ||
		d.GetOutputBytes() != 7 || d.GetOutputLost() || joined(out) != "partial" {
		t.Errorf("vanished dispatch: %v, output %q", d, joined(out))
	}
}

func TestAttachProtocolRefusals(t *testing.T) {
	t.Parallel()
	b := startAccess(t)
	dev := b.enroll(t, time.Hour)
	other := b.enroll(t, time.Hour)
	hello := func(edit func(h *nodev1.Hello)) *nodev1.AttachRequest {
		m := helloFor(dev)
		edit(m.GetHello())
		return m
	}
	for name, tc := range map[string]struct {
		first *nodev1.AttachRequest
		code  connect.Code
	}{
		"heartbeat first":       {&nodev1.AttachRequest{Message: &nodev1.AttachRequest_Heartbeat{Heartbeat: &nodev1.Heartbeat{}}}, connect.CodeInvalidArgument},
		"empty message":         {&nodev1.AttachRequest{}, connect.CodeInvalidArgument},
		"another device's id":   {hello(func(h *nodev1.Hello) { h.DeviceId = other.deviceID }), connect.CodePermissionDenied},
		"protocol 2 only":       {hello(func(h *nodev1.Hello) { h.ProtocolVersions = []uint32{2} }), connect.CodeFailedPrecondition},
		"duplicate capability":  {hello(func(h *nodev1.Hello) { h.Capabilities = append(h.Capabilities, h.Capabilities[0]) }), connect.CodeInvalidArgument},
		"schema not JSON":       {hello(func(h *nodev1.Hello) { h.Capabilities[0].InputSchema = "{" }), connect.CodeInvalidArgument},
		"schema with file ref":  {hello(func(h *nodev1.Hello) { h.Capabilities[0].InputSchema = `{"$ref":"file:///etc/passwd"}` }), connect.CodeInvalidArgument},
		"capability name":       {hello(func(h *nodev1.Hello) { h.Capabilities[0].Name = "Shell Execute" }), connect.CodeInvalidArgument},
		"label key":             {hello(func(h *nodev1.Hello) { h.Labels = map[string]string{"Bad Key": "x"} }), connect.CodeInvalidArgument},
		"no protocol versions":  {hello(func(h *nodev1.Hello) { h.ProtocolVersions = nil }), connect.CodeInvalidArgument},
		"malformed device id":   {hello(func(h *nodev1.Hello) { h.DeviceId = "x" }), connect.CodeInvalidArgument},
		"schema of wrong shape": {hello(func(h *nodev1.Hello) { h.Capabilities[0].InputSchema = `{"type":12}` }), connect.CodeInvalidArgument},
	} {
		n := openAttach(t, b.testDaemon, dev, tc.first)
		err := n.ended()
		wantCode(t, name, err, tc.code)
	}
	// Without a client certificate, Attach is refused before anything is read.
	anon := nodev1connect.NewNodeServiceClient(b.h2, b.baseURL).Attach(t.Context())
	_ = anon.Send(helloFor(dev))
	_, err := anon.Receive()
	wantCode(t, "attach without a certificate", err, connect.CodeUnauthenticated)

	// A second hello on a session ends it.
	n, _ := attachNode(t, b.testDaemon, dev)
	n.send(helloFor(dev))
	wantCode(t, "hello twice", n.ended(), connect.CodeInvalidArgument)
}

// TestAttachWithoutHelloEnds checks that an Attach stream on which the node sends
// nothing is ended by palyrad once the hello is overdue.
func TestAttachWithoutHelloEnds(t *testing.T) {
	t.Parallel()
	b := startAccess(t)
	dev := b.enroll(t, time.Hour)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	stream := nodev1connect.NewNodeServiceClient(b.mtls(dev.cert), b.baseURL).Attach(ctx)
	if err := stream.Send(nil); err != nil { // the request's headers, no message
		t.Fatal(err)
	}
	_, err := stream.Receive()
	if ctx.Err() != nil || !strings.Contains(fmt.Sprint(err), "no hello within") {
		t.Fatalf("an Attach without a hello ended with %v (client context: %v), want palyrad's deadline", err, ctx.Err())
	}
	wantCode(t, "an Attach without a hello", err, connect.CodeDeadlineExceeded)
}

func TestForeignDispatchReportIsRefusedAndAudited(t *testing.T) {
	t.Parallel()
	b := startAccess(t)
	victim := b.enroll(t, time.Hour)
	thief := b.enroll(t, time.Hour)
	victimNode, _ := attachNode(t, b.testDaemon, victim)
	d := createDispatch(t, b.testDaemon, &controlplanev1.CreateDispatchRequest{NodeId: victim.deviceID, Capability: "system.info"})
	victimNode.nextDispatch()

	for name, msg := range map[string]*nodev1.AttachRequest{
		"result":   result(d.GetId(), nodev1.DispatchOutcome_DISPATCH_OUTCOME_SUCCEEDED, 0, 0),
		"output":   output(d.GetId(), 0, "forged"),
		"accepted": accepted(d.GetId()),
	} {
		thiefNode, _ := attachNode(t, b.testDaemon, thief)
		thiefNode.send(msg)
		wantCode(t, "a foreign "+name, thiefNode.ended(), connect.CodePermissionDenied)
	}
	got, out := getDispatch(t, b.testDaemon, d.GetId())
	if got.GetState() != controlplanev1.DispatchState_DISPATCH_STATE_SENT || len(out) != 0 {
		t.Errorf("the foreign reports changed the dispatch: %v %v", got, out)
	}
	events, err := b.auditClient(b.owner).ListAuditEvents(t.Context(), connect.NewRequest(&accessv1.ListAuditEventsRequest{
		Principal: "device:" + thief.deviceID, Procedure: nodev1connect.NodeServiceAttachProcedure,
	}))
	if err != nil {
		t.Fatal(err)
	}
	refusals := 0
	for _, e := range events.Msg.GetEvents() {
		if e.GetTarget() == "dispatch:"+d.GetId() && e.GetCode() == "permission_denied" {
			refusals++
		}
	}
	if refusals != 3 {
		t.Errorf("audited refusals: %d, want 3 (%v)", refusals, events.Msg.GetEvents())
	}
}

func TestAttachIsReplacedAcrossReplicasAndDispatchesFollow(t *testing.T) {
	t.Parallel()
	a := startAccess(t)
	b := a.startReplica(t)
	dev := a.enroll(t, time.Hour)

	onA, _ := attachNode(t, a.testDaemon, dev)
	began := time.Now()
	onB, _ := attachNode(t, b, dev)
	wantCode(t, "the replaced session", onA.ended(), connect.CodeAborted)
	t.Logf("the session on replica A ended %v after the node attached to B", time.Since(began))
	res, err := a.nodesClient().GetNode(t.Context(), connect.NewRequest(&controlplanev1.GetNodeRequest{Id: dev.deviceID}))
	if err != nil || res.Msg.GetNode().GetAttachedReplica() != b.cfg.ReplicaID {
		t.Errorf("node after the move: %v %v", res, err)
	}

	// Created on A, delivered by B.
	d := createDispatch(t, a.testDaemon, &controlplanev1.CreateDispatchRequest{NodeId: dev.deviceID, Capability: "system.info"})
	if got := onB.nextDispatch(); got.GetDispatchId() != d.GetId() {
		t.Fatalf("replica B delivered %s, want %s", got.GetDispatchId(), d.GetId())
	}
	// Watched on A, finished through B.
	watch, err := a.dispatchClient().WatchDispatch(t.Context(), connect.NewRequest(&controlplanev1.WatchDispatchRequest{Id: d.GetId()}))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var states []controlplanev1.DispatchState
	var text strings.Builder
	done := make(chan error, 1)
	go func() {
		for watch.Receive() {
			mu.Lock()
			if x := watch.Msg().GetDispatch(); x != nil {
				states = append(states, x.GetState())
			}
			if o := watch.Msg().GetOutput(); o != nil {
				text.Write(o.GetData())
			}
			mu.Unlock()
		}
		done <- watch.Err()
	}()
	onB.send(accepted(d.GetId()))
	onB.send(output(d.GetId(), 0, "from "))
	onB.send(output(d.GetId(), 5, "B\n"))
	onB.send(result(d.GetId(), nodev1.DispatchOutcome_DISPATCH_OUTCOME_SUCCEEDED, 0, 7))
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(eventually.Deadline):
		t.Fatal("the watch on A did not end")
	}
	mu.Lock()
	defer mu.Unlock()
	if text.String() != "from B\n" || states[len(states)-1] != controlplanev1.DispatchState_DISPATCH_STATE_SUCCEEDED {
		t.Errorf("watch on A: %q %v", text.String(), states)
	}
}

// TestRevocationEndsTheAttachStream revokes a device, or only its certificate, through
// the replica that holds its stream or through another: the holder cuts the stream
// either way, told by the revocation's NOTIFY. The fallbacks cannot pass for that: the
// holder's heartbeat interval is five minutes (silence would end the stream after 50),
// and the holder must have received the notification by the time the stream ends (a
// lost one would otherwise go unseen behind the list's 30-second safety-net reload).
// How soon the stream ends is BenchmarkRevocation's to measure (BENCHMARKS.md).
func TestRevocationEndsTheAttachStream(t *testing.T) {
	t.Parallel()
	var logs lockedBuffer
	dbURL := storetest.URL(t)
	b := &accessBundle{testDaemon: startDaemonLogging(t, io.MultiWriter(t.Output(), &logs),
		"--database-url", dbURL, "--data-dir", t.TempDir(), "--nodes-heartbeat-interval", "5m"), dbURL: dbURL}
	other := b.startReplica(t)
	for _, tc := range []struct {
		name   string
		via    *testDaemon
		revoke func(devices controlplanev1connect.DeviceServiceClient, dev *enrolled) error
		// wantDispatch is the code of a dispatch to the device afterwards: a revoked
		// device takes none; one whose certificate alone was revoked waits for a new one.
		wantDispatch connect.Code
		// notice is the payload of the revocation's notification.
		notice func(dev *enrolled) string
	}{
		{"device, same replica", b.testDaemon, func(devices controlplanev1connect.DeviceServiceClient, dev *enrolled) error {
			_, err := devices.RevokeDevice(t.Context(), connect.NewRequest(&controlplanev1.RevokeDeviceRequest{Id: dev.deviceID, Reason: "stolen"}))
			return err
		}, connect.CodeFailedPrecondition, deviceNotice},
		{"device, other replica", other, func(devices controlplanev1connect.DeviceServiceClient, dev *enrolled) error {
			_, err := devices.RevokeDevice(t.Context(), connect.NewRequest(&controlplanev1.RevokeDeviceRequest{Id: dev.deviceID, Reason: "stolen"}))
			return err
		}, connect.CodeFailedPrecondition, deviceNotice},
		{"certificate, other replica", other, func(devices controlplanev1connect.DeviceServiceClient, dev *enrolled) error {
			_, err := devices.RevokeCertificate(t.Context(), connect.NewRequest(&controlplanev1.RevokeCertificateRequest{
				Fingerprint: identity.Fingerprint(dev.leaf.Raw), Reason: "leaked",
			}))
			return err
		}, 0, func(dev *enrolled) string { return "certificate:" + identity.Fingerprint(dev.leaf.Raw) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dev := b.enroll(t, time.Hour)
			node, _ := attachNode(t, b.testDaemon, dev)
			revokedAt := time.Now()
			if err := tc.revoke(controlplanev1connect.NewDeviceServiceClient(tc.via.client(b.owner), tc.via.baseURL), dev); err != nil {
				t.Fatal(err)
			}
			err := node.ended()
			t.Logf("the Attach stream ended %v after the revocation (%v)", time.Since(revokedAt), err)
			if err == nil {
				t.Error("the stream of a revoked device ended cleanly")
			}
			if what := tc.notice(dev); !notified(&logs, what) {
				t.Errorf("the stream ended before the holder received the revocation of %s by NOTIFY", what)
			}
			waitPresence(t, b.testDaemon, dev.deviceID, controlplanev1.Presence_PRESENCE_OFFLINE)
			_, err = b.dispatchClient().CreateDispatch(t.Context(), connect.NewRequest(&controlplanev1.CreateDispatchRequest{NodeId: dev.deviceID, Capability: "system.info"}))
			if tc.wantDispatch == 0 {
				if err != nil {
					t.Errorf("dispatch to a node whose certificate was revoked: %v, want it queued", err)
				}
			} else {
				wantCode(t, "dispatch to a revoked node", err, tc.wantDispatch)
			}
		})
	}
}

// TestStopEndsAttachStreams stops a daemon with a node attached and a console watching
// the pairing requests: Stop ends both streams itself. Were they left to the listener's
// Shutdown, Stop would wait out the shutdown timeout, ten minutes here, far beyond the
// test's wait.
func TestStopEndsAttachStreams(t *testing.T) {
	t.Parallel()
	dbURL := storetest.URL(t)
	b := &accessBundle{testDaemon: startDaemon(t, "--database-url", dbURL, "--data-dir", t.TempDir(), "--server-shutdown-timeout", "10m"), dbURL: dbURL}
	dev := b.enroll(t, time.Hour)
	node, _ := attachNode(t, b.testDaemon, dev)
	pairingWatch, err := controlplanev1connect.NewPairingServiceClient(b.h2, b.baseURL).WatchPairingRequests(t.Context(),
		connect.NewRequest(&controlplanev1.WatchPairingRequestsRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	defer pairingWatch.Close()
	if !pairingWatch.Receive() {
		t.Fatalf("the pairing watch sent nothing: %v", pairingWatch.Err())
	}
	began := time.Now()
	b.stopped = true // stopped here, not by the cleanup
	stopped := make(chan error, 1)
	go func() { stopped <- b.Stop(context.Background()) }()
	select {
	case err := <-stopped:
		if err != nil {
			t.Errorf("stop: %v", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("Stop still waits for the attached node's stream after two minutes")
	}
	t.Logf("stop took %v with a node attached", time.Since(began))
	wantCode(t, "the stream at shutdown", node.ended(), connect.CodeUnavailable)
	if pairingWatch.Receive() || pairingWatch.Err() != nil {
		t.Errorf("the pairing watch at shutdown: %v, want a clean end", pairingWatch.Err())
	}
	// The stopping daemon recorded that the session ended.
	conn, err := pgx.Connect(t.Context(), b.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(t.Context())
	var session, replica *string
	var lastSeen *time.Time
	if err := conn.QueryRow(t.Context(), "select session_id, attached_replica, last_seen_at from devices where id = $1", dev.deviceID).
		Scan(&session, &replica, &lastSeen); err != nil {
		t.Fatal(err)
	}
	if session != nil || replica != nil || lastSeen == nil || lastSeen.Before(began.Add(-time.Second)) {
		t.Errorf("after the stop the device has session %v on %v, last seen %v; want none, seen at the stop", session, replica, lastSeen)
	}
}

func TestPresenceFollowsHeartbeats(t *testing.T) {
	t.Parallel()
	dbURL := storetest.URL(t)
	b := &accessBundle{testDaemon: startDaemon(t, "--database-url", dbURL, "--data-dir", t.TempDir(), "--nodes-heartbeat-interval", "1s"), dbURL: dbURL}
	lively, silent := b.enroll(t, time.Hour), b.enroll(t, time.Hour)
	livelyNode, welcome := attachNode(t, b.testDaemon, lively)
	if welcome.GetHeartbeatInterval().AsDuration() != time.Second {
		t.Errorf("welcome heartbeat interval %v, want the configured 1s", welcome.GetHeartbeatInterval().AsDuration())
	}
	silentNode, _ := attachNode(t, b.testDaemon, silent)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				_ = livelyNode.stream.Send(&nodev1.AttachRequest{Message: &nodev1.AttachRequest_Heartbeat{Heartbeat: &nodev1.Heartbeat{}}})
			}
		}
	}()
	began := time.Now()
	waitPresence(t, b.testDaemon, silent.deviceID, controlplanev1.Presence_PRESENCE_STALE)
	t.Logf("a silent node turned stale after %v (3 heartbeat intervals of 1s)", time.Since(began))
	res, err := b.nodesClient().ListNodes(t.Context(), connect.NewRequest(&controlplanev1.ListNodesRequest{Presence: controlplanev1.Presence_PRESENCE_ONLINE}))
	if err != nil || len(res.Msg.GetNodes()) != 1 || res.Msg.GetNodes()[0].GetId() != lively.deviceID {
		t.Errorf("online nodes: %v %v", res, err)
	}
	res, err = b.nodesClient().ListNodes(t.Context(), connect.NewRequest(&controlplanev1.ListNodesRequest{Presence: controlplanev1.Presence_PRESENCE_STALE}))
	if err != nil || len(res.Msg.GetNodes()) != 1 || res.Msg.GetNodes()[0].GetId() != silent.deviceID {
		t.Errorf("stale nodes: %v %v", res, err)
	}
	// Ten intervals of silence end the stream.
	wantCode(t, "the silent node's stream", silentNode.ended(), connect.CodeDeadlineExceeded)
	t.Logf("the silent node's stream ended after %v", time.Since(began))
	waitPresence(t, b.testDaemon, silent.deviceID, controlplanev1.Presence_PRESENCE_OFFLINE)
	waitPresence(t, b.testDaemon, lively.deviceID, controlplanev1.Presence_PRESENCE_ONLINE)
}
