package dispatches_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/palyra/palyra/cli/internal/cmd/cmdtest"
	"github.com/palyra/palyra/cli/internal/cmd/dispatches"
	"github.com/palyra/palyra/cli/internal/cmd/dispatches/dispatchtest"
	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
)

const (
	nodeID  = "01JD5ZJ8Q0W1X2Y3Z4A5B6C7V1"
	otherID = "01JD5ZJ8Q0W1X2Y3Z4A5B6C7V2"
)

func setup(t *testing.T) (*dispatchtest.Fake, map[string]string) {
	t.Helper()
	f := &dispatchtest.Fake{Now: cmdtest.Now}
	srv := cmdtest.NewServer(t, f.Mount)
	return f, srv.Env()
}

// ts is cmdtest.Now moved by d.
func ts(d time.Duration) *timestamppb.Timestamp { return timestamppb.New(cmdtest.Now.Add(d)) }

// finished is a dispatch of shell.execute that exited with code.
func finished(node string, code int32) *controlplanev1.Dispatch {
	state := controlplanev1.DispatchState_DISPATCH_STATE_SUCCEEDED
	if code != 0 {
		state = controlplanev1.DispatchState_DISPATCH_STATE_FAILED
	}
	return &controlplanev1.Dispatch{
		NodeId: node, Capability: "shell.execute", InputJson: `{"argv":["make"]}`, State: state, ExitCode: code,
		CreatedBy: "user:owner", CreateTime: ts(-time.Minute), StartTime: ts(-time.Minute), FinishTime: ts(-time.Minute + 2500*time.Millisecond),
		MaxOutputBytes: 1 << 20, IdempotencyKey: "k1",
	}
}

// TestDispatchesArguments checks that malformed command lines exit 2 without calling
// palyrad.
func TestDispatchesArguments(t *testing.T) {
	t.Parallel()
	f, env := setup(t)
	bad := map[string][]string{
		"show without id":    {"dispatches", "show"},
		"show bad id":        {"dispatches", "show", "d1"},
		"watch bad id":       {"dispatches", "watch", "d1"},
		"watch bad offset":   {"dispatches", "watch", dispatchtest.ID(1), "--from-offset", "-1"},
		"cancel long reason": {"dispatches", "cancel", dispatchtest.ID(1), "--reason", strings.Repeat("x", 257)},
		"list bad state":     {"dispatches", "list", "--state", "done"},
		"list bad node":      {"dispatches", "list", "--node", "build-01"},
		"list limit zero":    {"dispatches", "list", "--limit", "0"},
		"list with argument": {"dispatches", "list", nodeID},
		"list bad since":     {"dispatches", "list", "--since", "yesterday"},
		"list bad until":     {"dispatches", "list", "--until", "2025-13-01T00:00:00Z"},
		"list empty window":  {"dispatches", "list", "--since", "1h", "--until", "1h"},
		"list since > until": {"dispatches", "list", "--since", "1h", "--until", "2h"},
	}
	for name, args := range bad {
		if res := cmdtest.Run(t.Context(), env, args...); res.Code != 2 {
			t.Errorf("%s: exit %d, want 2; stderr:\n%s", name, res.Code, res.Stderr)
		}
	}
	if c := f.Calls(); len(c.Lists)+len(c.Gets)+len(c.Watches)+len(c.Cancels) != 0 {
		t.Errorf("palyrad was called: %+v", c)
	}
}

// TestDispatchesList checks the table, the filters, paging with --all, and JSON.
func TestDispatchesList(t *testing.T) {
	t.Parallel()
	f, env := setup(t)
	f.PageSize = 2
	ok := f.Add(finished(nodeID, 0))
	failed := f.Add(finished(nodeID, 2))
	info := finished(otherID, 0)
	info.Capability, info.StartTime, info.FinishTime = "system.info", ts(-30*time.Second), ts(-30*time.Second+40*time.Millisecond)
	infoID := f.Add(info)
	running := finished(nodeID, 0)
	running.State, running.FinishTime = controlplanev1.DispatchState_DISPATCH_STATE_RUNNING, nil
	runningID := f.Add(running)

	res := cmdtest.Run(t.Context(), env, "dispatches", "list")
	if res.Code != 0 {
		t.Fatalf("list: exit %d: %s", res.Code, res.Stderr)
	}
	lines := strings.Split(strings.TrimSpace(res.Stdout), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "ID                          NODE                        CAPABILITY     STATE") {
		t.Fatalf("list: one page of two under a header, got:\n%s", res.Stdout)
	}
	cmdtest.WantOutput(t, "list", res.Stdout,
		runningID+"  "+nodeID+"  shell.execute  running    2025-06-01T11:59:00Z  -         -     user:owner",
		infoID+"  "+otherID+"  system.info    succeeded  2025-06-01T11:59:00Z  40ms      -     user:owner")
	cmdtest.WantOutput(t, "list stderr", res.Stderr, "more dispatches follow: pass --all")

	res = cmdtest.Run(t.Context(), env, "dispatches", "list", "--all")
	cmdtest.WantOutput(t, "list --all", res.Stdout, failed+"  "+nodeID+"  shell.execute  failed     2025-06-01T11:59:00Z  2.5s      2",
		ok+"  "+nodeID+"  shell.execute  succeeded  2025-06-01T11:59:00Z  2.5s      0")
	if n := strings.Count(res.Stdout, "\n"); n != 5 || res.Stderr != "" {
		t.Errorf("list --all: %d lines, stderr %q:\n%s", n, res.Stderr, res.Stdout)
	}

	res = cmdtest.Run(t.Context(), env, "dispatches", "list", "--node", strings.ToLower(nodeID), "--state", "failed",
		"--capability", "shell.execute", "--limit", "7", "-o", "json")
	last := f.Calls().Lists[len(f.Calls().Lists)-1]
	if last.GetNodeId() != nodeID || last.GetState() != controlplanev1.DispatchState_DISPATCH_STATE_FAILED ||
		last.GetCapability() != "shell.execute" || last.GetPageSize() != 7 {
		t.Errorf("list filters sent as %v", last)
	}
	var got controlplanev1.ListDispatchesResponse
	if err := protojson.Unmarshal([]byte(res.Stdout), &got); err != nil || len(got.GetDispatches()) != 1 || got.GetDispatches()[0].GetId() != failed {
		t.Errorf("list -o json: %v\n%s", err, res.Stdout)
	}
}

// TestDispatchesListByTime checks --since and --until: durations ago resolved against
// the clock, RFC 3339 times as given, sent as the request's creation-time window.
func TestDispatchesListByTime(t *testing.T) {
	t.Parallel()
	f, env := setup(t)
	old := finished(nodeID, 0)
	old.CreateTime = ts(-3 * time.Hour)
	oldID := f.Add(old)
	recent := finished(nodeID, 0)
	recent.CreateTime = ts(-30 * time.Minute)
	recentID := f.Add(recent)

	res := cmdtest.Run(t.Context(), env, "dispatches", "list", "--since", "1h")
	last := f.Calls().Lists[len(f.Calls().Lists)-1]
	if res.Code != 0 || !last.GetCreateTimeAfter().AsTime().Equal(cmdtest.Now.Add(-time.Hour)) || last.CreateTimeBefore != nil {
		t.Errorf("list --since 1h: exit %d, sent %v: %s", res.Code, last, res.Stderr)
	}
	if !strings.Contains(res.Stdout, recentID) || strings.Contains(res.Stdout, oldID) {
		t.Errorf("list --since 1h:\n%s", res.Stdout)
	}

	res = cmdtest.Run(t.Context(), env, "dispatches", "list", "--since", "2025-06-01T08:00:00Z", "--until", "1h")
	last = f.Calls().Lists[len(f.Calls().Lists)-1]
	if res.Code != 0 || !last.GetCreateTimeAfter().AsTime().Equal(time.Date(2025, 6, 1, 8, 0, 0, 0, time.UTC)) ||
		!last.GetCreateTimeBefore().AsTime().Equal(cmdtest.Now.Add(-time.Hour)) {
		t.Errorf("list --since RFC 3339 --until 1h: exit %d, sent %v: %s", res.Code, last, res.Stderr)
	}
	if !strings.Contains(res.Stdout, oldID) || strings.Contains(res.Stdout, recentID) {
		t.Errorf("list --since 2025-06-01T08:00:00Z --until 1h:\n%s", res.Stdout)
	}

	res = cmdtest.Run(t.Context(), env, "dispatches", "list", "--since", "1h", "--until", "2h")
	cmdtest.WantOutput(t, "list --since 1h --until 2h", res.Stderr, "--since (2025-06-01T11:00:00Z) must be before --until (2025-06-01T10:00:00Z)")
}

// TestDispatchesShow checks show with and without the output, and JSON.
func TestDispatchesShow(t *testing.T) {
	t.Parallel()
	f, env := setup(t)
	d := finished(nodeID, 2)
	d.Error, d.ResultJson = "exit status 2", `{"exit_code":2}`
	id := f.Add(d, dispatchtest.Chunk{Data: "building\n"}, dispatchtest.Chunk{Stderr: true, Data: "make: *** [all] Error 2\n"})

	res := cmdtest.Run(t.Context(), env, "dispatches", "show", id)
	if res.Code != 0 {
		t.Fatalf("show: exit %d: %s", res.Code, res.Stderr)
	}
	cmdtest.WantOutput(t, "show", res.Stdout, "ID               "+id, "Node             "+nodeID, "State            failed",
		`Input            {"argv":["make"]}`, "Created          2025-06-01T11:59:00Z by user:owner", "Duration         2.5s",
		"Exit code        2", "Output           33 B (cap 1 MiB)", `Result           {"exit_code":2}`, "Error            exit status 2")
	if strings.Contains(res.Stdout, "building") || f.Calls().Gets[0].GetIncludeOutput() {
		t.Errorf("show without --include-output asked for or showed the output:\n%s", res.Stdout)
	}

	res = cmdtest.Run(t.Context(), env, "dispatches", "show", id, "--include-output")
	if !strings.HasSuffix(res.Stdout, "\nOutput:\nbuilding\nmake: *** [all] Error 2\n") {
		t.Errorf("show --include-output:\n%s", res.Stdout)
	}
	res = cmdtest.Run(t.Context(), env, "dispatches", "show", id, "--include-output", "-o", "json")
	var got controlplanev1.GetDispatchResponse
	if err := protojson.Unmarshal([]byte(res.Stdout), &got); err != nil || len(got.GetOutput()) != 2 || got.GetDispatch().GetExitCode() != 2 {
		t.Errorf("show -o json: %v\n%s", err, res.Stdout)
	}
	lost := finished(nodeID, 0)
	lost.OutputBytes, lost.OutputLost, lost.OutputLostReason = 12, true, "only 5 of the 12 bytes of output reached palyrad"
	res = cmdtest.Run(t.Context(), env, "dispatches", "show", f.Add(lost, dispatchtest.Chunk{Data: "part\n"}))
	cmdtest.WantOutput(t, "show", res.Stdout, "Output           12 B (cap 1 MiB)",
		"Output lost      only 5 of the 12 bytes of output reached palyrad")
	res = cmdtest.Run(t.Context(), env, "dispatches", "show", dispatchtest.ID(9))
	if res.Code != 1 || !strings.Contains(res.Stderr, "not found: dispatch "+dispatchtest.ID(9)+" not found") {
		t.Errorf("show of an unknown dispatch: exit %d, %s", res.Code, res.Stderr)
	}
}

// TestDispatchesShowPages: the output of a dispatch comes in pages that show reads
// one after the other, into the one JSON object with -o json.
func TestDispatchesShowPages(t *testing.T) {
	t.Parallel()
	f, env := setup(t)
	f.OutputPage = 2
	var chunks []dispatchtest.Chunk
	var want strings.Builder
	for i := range 7 {
		line := strings.Repeat(string(rune('a'+i)), i+1) + "\n"
		chunks = append(chunks, dispatchtest.Chunk{Stderr: i%3 == 0, Data: line})
		want.WriteString(line)
	}
	id := f.Add(finished(nodeID, 0), chunks...)
	res := cmdtest.Run(t.Context(), env, "dispatches", "show", id, "--include-output")
	if res.Code != 0 || !strings.HasSuffix(res.Stdout, "\nOutput:\n"+want.String()) {
		t.Errorf("show --include-output: exit %d\n%s", res.Code, res.Stdout)
	}
	gets := f.Calls().Gets
	if len(gets) != 4 || gets[1].GetOutputOffset() != 5 || gets[3].GetOutputOffset() != uint64(want.Len()-8) {
		t.Errorf("show asked for %d pages: %v", len(gets), gets)
	}
	res = cmdtest.Run(t.Context(), env, "dispatches", "show", id, "--include-output", "-o", "json")
	var got controlplanev1.GetDispatchResponse
	if err := protojson.Unmarshal([]byte(res.Stdout), &got); err != nil || len(got.GetOutput()) != 7 || got.GetMoreOutput() ||
		got.GetNextOutputOffset() != uint64(want.Len()) {
		t.Errorf("show -o json: %v\n%s", err, res.Stdout)
	}
}

// TestDispatchesWatch checks that watch writes the output by stream, exits with the
// process's exit code, sends --from-offset, and survives a broken connection.
func TestDispatchesWatch(t *testing.T) {
	t.Parallel()
	f, env := setup(t)
	f.BreakWatchAfter = 1
	id := f.Add(finished(nodeID, 3), dispatchtest.Chunk{Data: "one\n"}, dispatchtest.Chunk{Stderr: true, Data: "two\n"},
		dispatchtest.Chunk{Data: "three\n"})

	res := cmdtest.Run(t.Context(), env, "dispatches", "watch", id)
	if res.Code != 3 || res.Stdout != "one\nthree\n" || res.Stderr != "two\n" {
		t.Fatalf("watch: exit %d, stdout %q, stderr %q", res.Code, res.Stdout, res.Stderr)
	}
	if w := f.Calls().Watches; len(w) != 2 || w[0].GetFromOffset() != 0 || w[1].GetFromOffset() != 4 {
		t.Errorf("watches %v: want a resumption from offset 4", w)
	}

	res = cmdtest.Run(t.Context(), env, "dispatches", "watch", id, "--from-offset", "8")
	if res.Code != 3 || res.Stdout != "three\n" || res.Stderr != "" {
		t.Errorf("watch --from-offset 8: exit %d, stdout %q, stderr %q", res.Code, res.Stdout, res.Stderr)
	}
	res = cmdtest.Run(t.Context(), env, "dispatches", "watch", id, "-o", "json")
	var got controlplanev1.ExecuteCapabilityResponse
	if err := protojson.Unmarshal([]byte(res.Stdout), &got); err != nil || res.Code != 3 || len(got.GetOutput()) != 3 {
		t.Errorf("watch -o json: exit %d, %v\n%s", res.Code, err, res.Stdout)
	}
}

// TestDispatchesWatchInterrupted checks that Ctrl-C stops watching without cancelling
// the dispatch.
func TestDispatchesWatchInterrupted(t *testing.T) {
	t.Parallel()
	f, env := setup(t)
	f.Watching = make(chan string, 1)
	running := finished(nodeID, 0)
	running.State, running.FinishTime = controlplanev1.DispatchState_DISPATCH_STATE_RUNNING, nil
	id := f.Add(running, dispatchtest.Chunk{Data: "started\n"})
	ctx, cancel := context.WithCancel(t.Context())
	run := cmdtest.Start(ctx, env, nil, "dispatches", "watch", id)
	<-f.Watching
	run.WaitFor(t, "started\n") // streamed before the end
	cancel()                    // Ctrl-C
	res := run.Wait(t)
	if res.Code != 130 || !strings.Contains(res.Stderr, "interrupted: stopped following dispatch "+id+", which goes on") {
		t.Errorf("interrupted watch: exit %d, stderr %q", res.Code, res.Stderr)
	}
	if c := f.Calls().Cancels; len(c) != 0 {
		t.Errorf("watch cancelled the dispatch: %v", c)
	}
}

// TestDispatchesCancel checks cancel of a running dispatch and of a finished one.
func TestDispatchesCancel(t *testing.T) {
	t.Parallel()
	f, env := setup(t)
	running := finished(nodeID, 0)
	running.State, running.FinishTime = controlplanev1.DispatchState_DISPATCH_STATE_RUNNING, nil
	id := f.Add(running)
	res := cmdtest.Run(t.Context(), env, "dispatches", "cancel", id, "--reason", "wrong host")
	if res.Code != 0 {
		t.Fatalf("cancel: exit %d: %s", res.Code, res.Stderr)
	}
	cmdtest.WantOutput(t, "cancel", res.Stdout, "State            cancelled", "Cancel asked     2025-06-01T12:00:00Z", "Error            cancelled: wrong host")
	if c := f.Calls().Cancels; len(c) != 1 || c[0].GetReason() != "wrong host" {
		t.Errorf("cancels %v", c)
	}
	res = cmdtest.Run(t.Context(), env, "dispatches", "cancel", id, "-o", "json")
	if res.Code != 1 || res.Stdout != "" || !strings.Contains(res.Stderr, "palyra: dispatch "+id+" has already ended (DISPATCH_STATE_CANCELLED)") {
		t.Errorf("cancel of a finished dispatch: exit %d, stdout %q, stderr %q", res.Code, res.Stdout, res.Stderr)
	}
}

// TestExit checks how the end of a dispatch becomes palyra's exit code.
func TestExit(t *testing.T) {
	t.Parallel()
	const id = "01JD60000000000000000000D1"
	d := func(state controlplanev1.DispatchState, code int32, msg string) *controlplanev1.Dispatch {
		return &controlplanev1.Dispatch{Id: id, State: state, ExitCode: code, Error: msg}
	}
	tests := map[string]struct {
		d    *controlplanev1.Dispatch
		code int    // from an ExitCodeError; 0 for none
		msg  string // the error's message; "" for nil
	}{
		"succeeded":          {d: d(controlplanev1.DispatchState_DISPATCH_STATE_SUCCEEDED, 0, "")},
		"process exit":       {d: d(controlplanev1.DispatchState_DISPATCH_STATE_FAILED, 3, "exit status 3"), code: 3},
		"failed without one": {d: d(controlplanev1.DispatchState_DISPATCH_STATE_FAILED, 0, "not allowed: rm"), msg: "dispatch " + id + " failed: not allowed: rm"},
		"killed by a signal": {d: d(controlplanev1.DispatchState_DISPATCH_STATE_FAILED, -9, "signal: killed"), msg: "dispatch " + id + " failed: signal: killed"},
		"timed out":          {d: d(controlplanev1.DispatchState_DISPATCH_STATE_TIMED_OUT, 137, "deadline passed"), msg: "dispatch " + id + " timed out: deadline passed"},
		"cancelled":          {d: d(controlplanev1.DispatchState_DISPATCH_STATE_CANCELLED, 0, ""), msg: "dispatch " + id + " was cancelled"},
		"still running":      {d: d(controlplanev1.DispatchState_DISPATCH_STATE_RUNNING, 0, ""), msg: "dispatch " + id + " is still running"},
	}
	for name, tt := range tests {
		err := dispatches.Exit(tt.d)
		var coded *dispatches.ExitCodeError
		switch {
		case tt.code != 0:
			if !errors.As(err, &coded) || coded.ExitCode() != tt.code {
				t.Errorf("%s: %v, want exit code %d", name, err, tt.code)
			}
		case tt.msg == "":
			if err != nil {
				t.Errorf("%s: %v, want nil", name, err)
			}
		case err == nil || errors.As(err, &coded) || !strings.HasPrefix(err.Error(), tt.msg):
			t.Errorf("%s: %v, want %q", name, err, tt.msg)
		}
	}
}

// TestCells checks the formatting of byte counts and durations.
func TestCells(t *testing.T) {
	t.Parallel()
	for n, want := range map[uint64]string{0: "0 B", 1023: "1023 B", 1024: "1 KiB", 1536: "1.5 KiB", 1 << 20: "1 MiB", 64 << 20: "64 MiB"} {
		if got := dispatches.Bytes(n); got != want {
			t.Errorf("Bytes(%d) = %q, want %q", n, got, want)
		}
	}
	for took, want := range map[time.Duration]string{40 * time.Millisecond: "40ms", 2500 * time.Millisecond: "2.5s", 90 * time.Second: "1m30s"} {
		d := &controlplanev1.Dispatch{StartTime: ts(0), FinishTime: ts(took)}
		if got := dispatches.Duration(d); got != want {
			t.Errorf("Duration(%v) = %q, want %q", took, got, want)
		}
	}
	if got := dispatches.Duration(&controlplanev1.Dispatch{StartTime: ts(0)}); got != "-" {
		t.Errorf("Duration of a running dispatch = %q", got)
	}
}
