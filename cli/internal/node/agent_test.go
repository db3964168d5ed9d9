package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/palyra/palyra/cli/internal/node/capability"
	nodev1 "github.com/palyra/palyra/gen/go/palyra/node/v1"
	"github.com/palyra/palyra/internal/eventually"
)

// Dispatch ids of the tests.
const (
	dispatch1 = "01JD5ZJ8Q0W1X2Y3Z4A5B6C7D1"
	dispatch2 = "01JD5ZJ8Q0W1X2Y3Z4A5B6C7D2"
	dispatch3 = "01JD5ZJ8Q0W1X2Y3Z4A5B6C7D3"
)

const (
	succeeded = nodev1.DispatchOutcome_DISPATCH_OUTCOME_SUCCEEDED
	failed    = nodev1.DispatchOutcome_DISPATCH_OUTCOME_FAILED
	timedOut  = nodev1.DispatchOutcome_DISPATCH_OUTCOME_TIMED_OUT
	cancelled = nodev1.DispatchOutcome_DISPATCH_OUTCOME_CANCELLED
)

// echo is a capability that writes its input on stdout and succeeds with {"ok":true}.
func echo() *fakeCap {
	return &fakeCap{name: "test.echo", available: true, run: func(_ context.Context, input json.RawMessage, out capability.Output) (capability.Result, error) {
		out.Write(capability.Stdout, input)
		return capability.Result{JSON: json.RawMessage(`{"ok":true}`)}, nil
	}}
}

// TestHelloAndHeartbeats checks the hello, the certificate the node presents, its
// heartbeats and the status file of a running agent.
func TestHelloAndHeartbeats(t *testing.T) {
	t.Parallel()
	b := newBench(t, time.Time{}, time.Time{})
	b.set(func(f *fakeDaemon) { f.interval = 100 * time.Millisecond })
	o := b.options(echo(), &fakeCap{name: "test.off"})
	o.Labels = map[string]string{"region": "eu-west", "rack": "r1"}
	b.start(o)
	s := b.session()

	h := s.hello
	if h.GetDeviceId() != testDevice || h.GetPlatform() != runtime.GOOS+"/"+runtime.GOARCH || h.GetAgentVersion() != "v1.2.3" ||
		!slices.Equal(h.GetProtocolVersions(), []uint32{ProtocolVersion}) {
		t.Errorf("hello %v", h)
	}
	if len(h.GetLabels()) != 2 || h.GetLabels()["region"] != "eu-west" || h.GetLabels()["rack"] != "r1" {
		t.Errorf("labels %v", h.GetLabels())
	}
	caps := h.GetCapabilities()
	if len(caps) != 2 || caps[0].GetName() != "test.echo" || !caps[0].GetAvailable() || caps[1].GetName() != "test.off" ||
		caps[1].GetAvailable() || caps[0].GetInputSchema() != `{"type":"object"}` || caps[0].GetDescription() != "a test capability" {
		t.Errorf("capabilities %v", caps)
	}
	if !s.peer.Equal(b.cert) {
		t.Errorf("the node presented %v, not its certificate", s.peer.Subject)
	}

	beats := 0
	timeout := time.After(wait)
	for beats < 3 {
		select {
		case m := <-s.in:
			if hb := m.GetHeartbeat(); hb == nil || hb.GetRunning() != 0 {
				t.Fatalf("got %v, want heartbeats", m)
			}
			beats++
		case <-timeout:
			t.Fatalf("%d heartbeats", beats)
		}
	}

	st, err := b.dir.AgentStatus()
	if err != nil || st == nil {
		t.Fatalf("AgentStatus = %v, %v", st, err)
	}
	if st.PID != os.Getpid() || !st.Attached || !strings.HasPrefix(st.SessionID, "session-") || st.DeviceID != testDevice ||
		st.URL != b.url || st.LastHeartbeat.IsZero() {
		t.Errorf("status %+v", st)
	}
}

// TestDispatchOutput checks a dispatch: accepted, run once with its input, its output
// coalesced into chunks with offsets over both streams, capped, and its result; a
// repeated dispatch is answered with the result without running again; the ack
// removes the spooled result.
func TestDispatchOutput(t *testing.T) {
	t.Parallel()
	b := newBench(t, time.Time{}, time.Time{})
	var want bytes.Buffer
	writer := &fakeCap{name: "test.write", available: true}
	writer.run = func(_ context.Context, input json.RawMessage, out capability.Output) (capability.Result, error) {
		if string(input) != `{"n":1}` {
			return capability.Result{}, &capability.RefusedError{Reason: "bad input " + string(input)}
		}
		write := func(s capability.Stream, p string) {
			out.Write(s, []byte(p))
			want.WriteString(p)
		}
		for range 100 {
			write(capability.Stdout, "o")
		}
		write(capability.Stderr, "eee")
		write(capability.Stdout, strings.Repeat("x", 70<<10))
		write(capability.Stderr, "beyond the cap")
		return capability.Result{JSON: json.RawMessage(`{"exit":0}`), ExitCode: 0}, nil
	}
	b.start(b.options(writer))
	s := b.session()

	const maxOutput = 50 << 10
	s.dispatch(dispatch1, "test.write", `{"n":1}`, maxOutput, time.Time{})
	r, before := s.result(t)
	if len(before) == 0 || before[0].GetAccepted().GetDispatchId() != dispatch1 {
		t.Fatalf("the first message is %v, want accepted", before)
	}
	var got bytes.Buffer
	var streams []nodev1.OutputStream
	for _, m := range before[1:] {
		o := m.GetOutput()
		if o == nil || o.GetDispatchId() != dispatch1 {
			t.Fatalf("got %v, want output", m)
		}
		if o.GetOffset() != uint64(got.Len()) {
			t.Errorf("chunk at offset %d, want %d", o.GetOffset(), got.Len())
		}
		if len(o.GetData()) > testTuning.chunk || len(o.GetData()) == 0 {
			t.Errorf("chunk of %d bytes", len(o.GetData()))
		}
		got.Write(o.GetData())
		streams = append(streams, o.GetStream())
	}
	if !bytes.Equal(got.Bytes(), want.Bytes()[:maxOutput]) {
		t.Errorf("output of %d bytes, want the first %d of %d", got.Len(), maxOutput, want.Len())
	}
	stdout, stderr := nodev1.OutputStream_OUTPUT_STREAM_STDOUT, nodev1.OutputStream_OUTPUT_STREAM_STDERR
	// 100 small writes make one chunk; the stream change another; the cap ends the rest.
	if len(streams) < 4 || streams[0] != stdout || len(before[1].GetOutput().GetData()) != 100 || streams[1] != stderr || streams[2] != stdout {
		t.Errorf("chunks of streams %v", streams)
	}
	if r.GetDispatchId() != dispatch1 || r.GetOutcome() != succeeded || r.GetResultJson() != `{"exit":0}` ||
		r.GetOutputBytes() != uint64(want.Len()) || !r.GetOutputTruncated() || r.GetFinishTime() == nil {
		t.Errorf("result %v", r)
	}
	if writer.runs.Load() != 1 || !b.spooled(dispatch1) {
		t.Fatalf("%d runs, spooled %v", writer.runs.Load(), b.spooled(dispatch1))
	}

	// Sent again (the daemon missed the result): the same output and the result
	// again, no run.
	s.dispatch(dispatch1, "test.write", `{"n":1}`, maxOutput, time.Time{})
	again, replayed := s.result(t)
	if again.GetDispatchId() != dispatch1 || again.GetOutputBytes() != r.GetOutputBytes() {
		t.Errorf("a repeated dispatch got result %v, want the first", again)
	}
	sentFirst := before[1:] // after the accepted message
	if len(replayed) != len(sentFirst) {
		t.Errorf("a repeated dispatch got %d chunks of output before its result, want the %d sent first", len(replayed), len(sentFirst))
	}
	for i := range min(len(replayed), len(sentFirst)) {
		if got, want := replayed[i].GetOutput(), sentFirst[i].GetOutput(); got.GetOffset() != want.GetOffset() || !bytes.Equal(got.GetData(), want.GetData()) {
			t.Errorf("replayed chunk %d at offset %d, want the chunk at %d", i, got.GetOffset(), want.GetOffset())
		}
	}
	s.ack(dispatch1)
	eventually.True(t, "the acknowledged result leaves the spool", func() bool { return !b.spooled(dispatch1) })
	// Acknowledged: a repeated dispatch is ignored.
	s.dispatch(dispatch1, "test.write", `{"n":1}`, maxOutput, time.Time{})
	s.quiet(t, 200*time.Millisecond)
	if writer.runs.Load() != 1 {
		t.Errorf("%d runs", writer.runs.Load())
	}
}

// TestDispatchOutcomes checks the outcome of each way a dispatch ends.
func TestDispatchOutcomes(t *testing.T) {
	t.Parallel()
	b := newBench(t, time.Time{}, time.Time{})
	seen := make(chan error, 2)
	caps := []capability.Capability{
		&fakeCap{name: "test.refuse", available: true, run: func(context.Context, json.RawMessage, capability.Output) (capability.Result, error) {
			return capability.Result{}, &capability.RefusedError{Reason: "program not allowed"}
		}},
		&fakeCap{name: "test.fail", available: true, run: func(context.Context, json.RawMessage, capability.Output) (capability.Result, error) {
			return capability.Result{ExitCode: 3, Failed: true, Error: "exit status 3", JSON: json.RawMessage(`{"exit_code":3}`)}, nil
		}},
		&fakeCap{name: "test.error", available: true, run: func(context.Context, json.RawMessage, capability.Output) (capability.Result, error) {
			return capability.Result{}, errors.New("fork failed")
		}},
		&fakeCap{name: "test.panic", available: true, run: func(context.Context, json.RawMessage, capability.Output) (capability.Result, error) {
			panic("boom")
		}},
		&fakeCap{name: "test.block", available: true, run: blocking(seen)},
		&fakeCap{name: "test.off"},
	}
	b.start(b.options(caps...))
	s := b.session()

	tests := []struct {
		capability string
		deadline   time.Time
		cancel     string
		outcome    nodev1.DispatchOutcome
		err        string
		exitCode   int32
		accepted   bool
	}{
		{capability: "test.refuse", outcome: failed, err: "program not allowed", accepted: true},
		{capability: "test.fail", outcome: failed, err: "exit status 3", exitCode: 3, accepted: true},
		{capability: "test.error", outcome: failed, err: "fork failed", accepted: true},
		{capability: "test.panic", outcome: failed, err: "panicked: boom", accepted: true},
		{capability: "test.block", deadline: time.Now().Add(200 * time.Millisecond), outcome: timedOut, err: "deadline", accepted: true},
		{capability: "test.block", cancel: "the operator changed their mind", outcome: cancelled, err: "the operator changed their mind", accepted: true},
		{capability: "test.nope", outcome: failed, err: "capability test.nope is not available on this node"},
		{capability: "test.off", outcome: failed, err: "capability test.off is not available on this node"},
	}
	for i, tt := range tests {
		id := "01JD5ZJ8Q0W1X2Y3Z4A5B6C8D" + string(rune('0'+i))
		s.dispatch(id, tt.capability, "", 1024, tt.deadline)
		if tt.cancel != "" {
			if m := s.next(t); m.GetAccepted().GetDispatchId() != id {
				t.Fatalf("%s: got %v, want accepted", tt.capability, m)
			}
			s.cancel(id, tt.cancel)
		}
		r, before := s.result(t)
		accepted := len(before) > 0 || tt.cancel != ""
		if r.GetDispatchId() != id || r.GetOutcome() != tt.outcome || !strings.Contains(r.GetError(), tt.err) ||
			r.GetExitCode() != tt.exitCode || accepted != tt.accepted {
			t.Errorf("%s: result %v (accepted %v), want %v with %q", tt.capability, r, accepted, tt.outcome, tt.err)
		}
		if tt.capability == "test.block" {
			if err := <-seen; err == nil {
				t.Errorf("%s: the capability's context did not end", tt.capability)
			}
		}
		if b.spooled(id) != tt.accepted {
			t.Errorf("%s: spooled %v", tt.capability, b.spooled(id))
		}
	}
	records, _, err := readRanLog(b.dir.File(RanLogFile))
	if err != nil {
		t.Fatal(err)
	}
	if len(records) != 6 {
		t.Errorf("the ran log holds %d dispatches, want the 6 accepted ones", len(records))
	}
	for id, r := range records {
		if !r.finished {
			t.Errorf("%s: not recorded as finished", id)
		}
	}
}

// TestResendAfterReconnect checks that results not acknowledged are re-sent first in
// the next session, after their output, and leave the spool once acknowledged.
func TestResendAfterReconnect(t *testing.T) {
	t.Parallel()
	b := newBench(t, time.Time{}, time.Time{})
	c := echo()
	b.start(b.options(c))
	s := b.session()
	s.dispatch(dispatch1, "test.echo", `{"a":1}`, 1024, time.Time{})
	s.dispatch(dispatch2, "test.echo", `{"a":2}`, 1024, time.Time{})
	first, _ := s.result(t)
	second, _ := s.result(t)
	s.ack(first.GetDispatchId())
	eventually.True(t, "the ack", func() bool { return !b.spooled(first.GetDispatchId()) })
	s.end <- connect.NewError(connect.CodeUnavailable, errors.New("replica going away"))

	s = b.session()
	// The output of the unacknowledged dispatch comes again (the lost session may have
	// dropped it), then its result; nothing of the acknowledged one.
	wantOutput := map[string]string{dispatch1: `{"a":1}`, dispatch2: `{"a":2}`}[second.GetDispatchId()]
	if o := s.next(t).GetOutput(); o.GetDispatchId() != second.GetDispatchId() || string(o.GetData()) != wantOutput || o.GetOffset() != 0 {
		t.Fatalf("the first message of the new session is %v, want the unacknowledged dispatch's output", o)
	}
	m := s.next(t)
	if r := m.GetResult(); r.GetDispatchId() != second.GetDispatchId() || r.GetOutcome() != succeeded {
		t.Fatalf("the second message of the new session is %v, want the unacknowledged result", m)
	}
	s.quiet(t, 100*time.Millisecond)
	s.ack(second.GetDispatchId())
	eventually.True(t, "the ack", func() bool { return !b.spooled(second.GetDispatchId()) })
	if c.runs.Load() != 2 {
		t.Errorf("%d runs", c.runs.Load())
	}
}

// TestRestart runs two agents on one state directory, one after the other: the second
// re-sends the first's unacknowledged result after its output (both from the spool),
// reports failed a dispatch the first recorded but never finished (killed while
// running it), and runs neither again.
func TestRestart(t *testing.T) {
	t.Parallel()
	b := newBench(t, time.Time{}, time.Time{})
	c := echo()
	first := b.start(b.options(c))
	s := b.session()
	s.dispatch(dispatch1, "test.echo", `{}`, 1024, time.Time{})
	if r, _ := s.result(t); r.GetOutcome() != succeeded {
		t.Fatalf("result %v", r)
	}
	if err := first.stop(t); err != nil {
		t.Fatalf("Run = %v", err)
	}
	if st, _ := b.dir.AgentStatus(); st != nil {
		t.Errorf("a stopped agent left its status: %+v", st)
	}
	// As if the agent had been killed while running dispatch2: recorded, no result.
	f, err := os.OpenFile(b.dir.File(RanLogFile), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("run " + time.Now().UTC().Format(time.RFC3339Nano) + " " + dispatch2 + "\nrun 2026-11-2") // and a torn line
	f.Close()

	b.start(b.options(c))
	s = b.session()
	o1, r1, r2 := s.next(t).GetOutput(), s.next(t).GetResult(), s.next(t).GetResult()
	if o1.GetDispatchId() != dispatch1 || o1.GetOffset() != 0 || string(o1.GetData()) != "{}" {
		t.Errorf("first re-sent output %v", o1)
	}
	if r1.GetDispatchId() != dispatch1 || r1.GetOutcome() != succeeded {
		t.Errorf("first re-sent result %v", r1)
	}
	if r2.GetDispatchId() != dispatch2 || r2.GetOutcome() != failed || r2.GetError() != "the node agent restarted while running it" {
		t.Errorf("second re-sent result %v", r2)
	}
	s.quiet(t, 100*time.Millisecond)
	for _, id := range []string{dispatch1, dispatch2} {
		s.dispatch(id, "test.echo", `{}`, 1024, time.Time{})
		m := s.next(t)
		if id == dispatch1 { // its output first
			if string(m.GetOutput().GetData()) != "{}" {
				t.Errorf("dispatch %s again: got %v, want its output", id, m)
			}
			m = s.next(t)
		}
		if r := m.GetResult(); r.GetDispatchId() != id {
			t.Errorf("dispatch %s again: got %v, want its result", id, m)
		}
		s.ack(id)
	}
	eventually.True(t, "the acks", func() bool { return !b.spooled(dispatch1) && !b.spooled(dispatch2) })
	if c.runs.Load() != 1 {
		t.Errorf("%d runs, want 1", c.runs.Load())
	}
}

// TestOneAgentPerStateDir checks that a second agent on a state directory refuses to
// start while the first runs.
func TestOneAgentPerStateDir(t *testing.T) {
	t.Parallel()
	if runtime.GOOS == "windows" {
		t.Skip("no lock on Windows")
	}
	b := newBench(t, time.Time{}, time.Time{})
	b.start(b.options())
	b.session()
	a, err := NewAgent(b.options())
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Run(t.Context()); err == nil || !strings.Contains(err.Error(), "another node agent") {
		t.Errorf("a second agent: %v", err)
	}
}

// TestDrain checks a stopping agent: it takes no new dispatch, lets a running one
// finish and sends its result, cancels one that outlasts the drain timeout, then
// closes the stream and returns nil.
func TestDrain(t *testing.T) {
	t.Parallel()
	b := newBench(t, time.Time{}, time.Time{})
	release := make(chan struct{})
	slow := &fakeCap{name: "test.slow", available: true, run: func(ctx context.Context, _ json.RawMessage, out capability.Output) (capability.Result, error) {
		<-release
		out.Write(capability.Stdout, []byte("done"))
		return capability.Result{}, nil
	}}
	seen := make(chan error, 1)
	stuck := &fakeCap{name: "test.stuck", available: true, run: blocking(seen)}
	o := b.options(slow, stuck)
	o.DrainTimeout = time.Second
	r := b.start(o)
	s := b.session()
	s.dispatch(dispatch1, "test.slow", "", 1024, time.Time{})
	s.dispatch(dispatch2, "test.stuck", "", 1024, time.Time{})
	for range 2 {
		if m := s.next(t); m.GetAccepted() == nil {
			t.Fatalf("got %v, want accepted", m)
		}
	}
	start := time.Now()
	r.cancel()
	eventually.True(t, "the agent stops taking dispatches", func() bool {
		r.agent.mu.Lock()
		defer r.agent.mu.Unlock()
		return r.agent.stopping
	})
	s.dispatch(dispatch3, "test.slow", "", 1024, time.Time{})
	close(release)

	res, before := s.result(t)
	if res.GetDispatchId() != dispatch1 || res.GetOutcome() != succeeded || len(before) != 1 || string(before[0].GetOutput().GetData()) != "done" {
		t.Errorf("the finishing dispatch: %v after %v", res, before)
	}
	s.ack(dispatch1)
	res, _ = s.result(t)
	if res.GetDispatchId() != dispatch2 || res.GetOutcome() != cancelled || !strings.Contains(res.GetError(), "stopped") {
		t.Errorf("the dispatch past the drain timeout: %v", res)
	}
	if err := <-seen; !errors.Is(err, context.Canceled) {
		t.Errorf("the stuck capability saw %v", err)
	}
	if d := time.Since(start); d < time.Second {
		t.Errorf("cancelled after %v, before the drain timeout", d)
	}
	s.ack(dispatch2)
	for m := range s.in { // the node closes its side of the stream
		if m.GetHeartbeat() == nil {
			t.Errorf("after the drain: %v", m)
		}
	}
	if err := r.stop(t); err != nil {
		t.Errorf("Run = %v", err)
	}
	if slow.runs.Load() != 1 || b.spooled(dispatch1) || b.spooled(dispatch2) {
		t.Errorf("%d runs of test.slow; spooled: %v %v", slow.runs.Load(), b.spooled(dispatch1), b.spooled(dispatch2))
	}
	records, _, _ := readRanLog(b.dir.File(RanLogFile))
	if _, ok := records[dispatch3]; ok {
		t.Errorf("a dispatch that came while stopping was recorded as run")
	}
}

// TestReconnect checks that the agent retries a refused Attach with growing, jittered
// waits, and that protocol errors end a session: an unexpected protocol version and a
// message of an unknown kind.
func TestReconnect(t *testing.T) {
	t.Parallel()
	b := newBench(t, time.Time{}, time.Time{})
	b.set(func(f *fakeDaemon) { f.refuse = 3 })
	var mu sync.Mutex
	var ceilings []int64
	o := b.options()
	o.Rand = func(n int64) int64 {
		if n != 1<<30 { // not the renewal's jitter
			mu.Lock()
			ceilings = append(ceilings, n)
			mu.Unlock()
		}
		return n / 2
	}
	b.start(o)
	s := b.session()
	mu.Lock()
	want := []int64{int64(10*time.Millisecond) + 1, int64(20*time.Millisecond) + 1, int64(40*time.Millisecond) + 1}
	if !slices.Equal(ceilings, want) {
		t.Errorf("backoff ceilings %v, want %v", ceilings, want)
	}
	mu.Unlock()

	// An unknown message kind ends the session; the node attaches again.
	s.send(&nodev1.AttachResponse{})
	for range s.in {
	}
	s = b.session()
	// So does a welcome with a version the node does not speak.
	b.set(func(f *fakeDaemon) { f.version = 2 })
	s.end <- nil
	s = b.session()
	for range s.in {
	}
	b.set(func(f *fakeDaemon) { f.version = ProtocolVersion })
	b.session()
}

// TestRanLogCompaction checks that the ran log forgets ids older than a week, unless
// their result is still spooled.
func TestRanLogCompaction(t *testing.T) {
	t.Parallel()
	b := newBench(t, time.Time{}, time.Time{})
	now := time.Now()
	old := now.Add(-8 * 24 * time.Hour).UTC().Format(time.RFC3339Nano)
	recent := now.Add(-6 * 24 * time.Hour).UTC().Format(time.RFC3339Nano)
	log := "run " + old + " " + dispatch1 + "\ndone " + old + " " + dispatch1 + "\n" +
		"run " + old + " " + dispatch2 + "\ndone " + old + " " + dispatch2 + "\n" +
		"run " + recent + " " + dispatch3 + "\ndone " + recent + " " + dispatch3 + "\n"
	if err := os.WriteFile(b.dir.File(RanLogFile), []byte(log), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := newSpool(b.dir).put(&nodev1.DispatchResult{DispatchId: dispatch2, Outcome: succeeded}, nil); err != nil {
		t.Fatal(err)
	}
	a, err := NewAgent(b.options())
	if err != nil {
		t.Fatal(err)
	}
	a.spool = newSpool(b.dir)
	if err := a.recoverRan(); err != nil {
		t.Fatal(err)
	}
	a.ran.close()
	records, bad, err := readRanLog(b.dir.File(RanLogFile))
	if err != nil || bad != 0 {
		t.Fatal(err, bad)
	}
	if _, ok := records[dispatch1]; ok || len(records) != 2 || records[dispatch2] == nil || !records[dispatch3].finished {
		t.Errorf("after compaction: %v", records)
	}
	if len(a.ranIDs) != 2 {
		t.Errorf("remembered ids %v", a.ranIDs)
	}
}

// TestResultMapping checks result limits: an oversized result JSON fails the dispatch,
// and a long error is cut at a character boundary.
func TestResultMapping(t *testing.T) {
	t.Parallel()
	a, err := NewAgent(AgentOptions{Dir: NewStateDir(t.TempDir())})
	if err != nil {
		t.Fatal(err)
	}
	e := &execution{id: dispatch1, ctx: t.Context(), out: &outputPump{max: 10}}
	r := a.result(e, capability.Result{JSON: json.RawMessage(`"` + strings.Repeat("x", maxResultJSON) + `"`)}, nil)
	if r.GetOutcome() != failed || r.GetResultJson() != "" || !strings.Contains(r.GetError(), "more than") {
		t.Errorf("oversized result: %v", r.GetError())
	}
	r = a.result(e, capability.Result{Failed: true, Error: strings.Repeat("é", maxResultError)}, nil)
	if len(r.GetError()) != maxResultError || !strings.HasSuffix(r.GetError(), "é") {
		t.Errorf("long error of %d bytes", len(r.GetError()))
	}
}

// TestCapabilitiesChange replaces the registry of a running agent: palyrad hears of it
// at once, dispatches use the new capabilities, and the next hello announces them.
func TestCapabilitiesChange(t *testing.T) {
	t.Parallel()
	b := newBench(t, time.Time{}, time.Time{})
	r := b.start(b.options(&fakeCap{name: "test.off"}))
	s := b.session()
	if caps := s.hello.GetCapabilities(); len(caps) != 1 || caps[0].GetAvailable() {
		t.Fatalf("hello capabilities %v", caps)
	}

	reg, err := capability.NewRegistry(echo())
	if err != nil {
		t.Fatal(err)
	}
	r.agent.SetRegistry(reg)
	changed := s.next(t).GetCapabilitiesChanged()
	if caps := changed.GetCapabilities(); len(caps) != 1 || caps[0].GetName() != "test.echo" || !caps[0].GetAvailable() {
		t.Fatalf("got %v, want the new capabilities", changed)
	}
	s.dispatch(dispatch1, "test.echo", `{"a":1}`, 1024, time.Time{})
	if res, _ := s.result(t); res.GetOutcome() != succeeded {
		t.Errorf("a dispatch of the new capability: %v", res)
	}
	s.ack(dispatch1)

	s.end <- connect.NewError(connect.CodeUnavailable, errors.New("replica going away"))
	if caps := b.session().hello.GetCapabilities(); len(caps) != 1 || caps[0].GetName() != "test.echo" {
		t.Errorf("the next hello announces %v", caps)
	}
}

// TestOutputFlush checks that Flush sends what a capability wrote at once, as one chunk,
// rather than after the coalescing delay.
func TestOutputFlush(t *testing.T) {
	t.Parallel()
	var sent []*nodev1.DispatchOutput
	p := &outputPump{id: dispatch1, max: 100, chunk: 1024, delay: time.Hour, emit: func(m *nodev1.AttachRequest) {
		sent = append(sent, m.GetOutput())
	}}
	p.Write(capability.Stdout, []byte("{\"a\":1}\n"))
	p.Flush()
	p.Flush() // nothing buffered: nothing sent
	p.Write(capability.Stdout, []byte("{\"b\":2}\n"))
	p.Flush()
	p.close()
	p.Flush()
	if len(sent) != 2 || string(sent[0].GetData()) != "{\"a\":1}\n" || sent[1].GetOffset() != 8 || string(sent[1].GetData()) != "{\"b\":2}\n" {
		t.Errorf("sent %v", sent)
	}
}
