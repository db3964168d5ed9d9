package daemon_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"connectrpc.com/connect"

	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	nodev1 "github.com/palyra/palyra/gen/go/palyra/node/v1"
)

// watchEvents opens a WatchDispatch of id and returns its events as they come, as
// "state <STATE>" and "output <offset> <data>"; the channel closes when the stream ends,
// its error going to the test.
func watchEvents(t *testing.T, td *testDaemon, id string) <-chan string {
	t.Helper()
	watch, err := td.dispatchClient().WatchDispatch(t.Context(), connect.NewRequest(&controlplanev1.WatchDispatchRequest{Id: id}))
	if err != nil {
		t.Fatalf("watch %s: %v", id, err)
	}
	events := make(chan string, 64)
	go func() {
		defer close(events)
		defer watch.Close()
		for watch.Receive() {
			switch ev := watch.Msg().GetEvent().(type) {
			case *controlplanev1.WatchDispatchResponse_Dispatch:
				events <- "state " + ev.Dispatch.GetState().String()
			case *controlplanev1.WatchDispatchResponse_Output:
				events <- fmt.Sprintf("output %d %q", ev.Output.GetOffset(), ev.Output.GetData())
			}
		}
		if err := watch.Err(); err != nil && t.Context().Err() == nil {
			t.Errorf("watch %s ended: %v", id, err)
		}
	}()
	return events
}

// nextEvent returns the next event of a watch, failing when none comes within 30 s or
// the watch ends.
func nextEvent(t *testing.T, events <-chan string) string {
	t.Helper()
	select {
	case ev, ok := <-events:
		if !ok {
			t.Fatal("the watch ended while an event was expected")
		}
		return ev
	case <-time.After(30 * time.Second):
		t.Fatal("no watch event within 30 s")
	}
	return ""
}

// TestWatchJoiningMidRunGetsTheStateFirst: a watcher joining a running dispatch that has
// output stored gets the dispatch first, as WatchDispatch promises, then the output
// stored so far, then the rest as it comes, and the end after the last output.
func TestWatchJoiningMidRunGetsTheStateFirst(t *testing.T) {
	t.Parallel()
	b := startAccess(t)
	dev := b.enroll(t, time.Hour)
	node, _ := attachNode(t, b.testDaemon, dev)
	d := createDispatch(t, b.testDaemon, &controlplanev1.CreateDispatchRequest{NodeId: dev.deviceID, Capability: "system.info"})
	id := d.GetId()
	if got := node.nextDispatch(); got.GetDispatchId() != id {
		t.Fatalf("dispatch down: %v, want %s", got, id)
	}

	// An earlier watcher sees the first output stored: the run is under way.
	earlier := watchEvents(t, b.testDaemon, id)
	node.send(accepted(id))
	node.send(output(id, 0, "hello "))
	for ev := nextEvent(t, earlier); ev != `output 0 "hello "`; ev = nextEvent(t, earlier) {
	}

	joining := watchEvents(t, b.testDaemon, id)
	got := []string{nextEvent(t, joining)}
	// Only now the rest: the joining watcher's first read saw the dispatch running.
	node.send(output(id, 6, "world\n"))
	node.send(result(id, nodev1.DispatchOutcome_DISPATCH_OUTCOME_SUCCEEDED, 0, 12))
	if ack := node.next().GetResultAck(); ack.GetDispatchId() != id {
		t.Fatalf("no ack for the result: %v", ack)
	}
	for ev := range joining {
		got = append(got, ev)
	}
	want := []string{
		"state DISPATCH_STATE_RUNNING",
		`output 0 "hello "`,
		`output 6 "world\n"`,
		"state DISPATCH_STATE_SUCCEEDED",
	}
	if !slices.Equal(got, want) {
		t.Errorf("a watcher joining mid-run got\n\t%q\nwant\n\t%q", got, want)
	}
}
