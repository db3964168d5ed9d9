package nodes_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/palyra/palyra/cli/internal/cmd/cmdtest"
	"github.com/palyra/palyra/cli/internal/cmd/dispatches/dispatchtest"
	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
)

const echoHi = `{"argv":["echo","hi"]}`

// screenshotPNG is the screenshot of the fake's browser.navigate: a 4x3 PNG.
var screenshotPNG = func() string {
	var b bytes.Buffer
	if err := png.Encode(&b, image.NewGray(image.Rect(0, 0, 4, 3))); err != nil {
		panic(err)
	}
	return b.String()
}()

// node runs the fake's dispatches as a node would: shell.execute by its argv[0],
// system.info with a JSON result.
func node(req *controlplanev1.CreateDispatchRequest) dispatchtest.Run {
	switch req.GetCapability() {
	case "system.info":
		return dispatchtest.Run{ResultJSON: `{"hostname":"build-01","os":"linux","cpus":8}`}
	case "browser.navigate":
		// The screenshot, in two chunks, as the result locates it.
		return dispatchtest.Run{
			Output:     []dispatchtest.Chunk{{Data: screenshotPNG[:20]}, {Data: screenshotPNG[20:]}},
			ResultJSON: fmt.Sprintf(`{"url":"https://shop.example.com/","title":"Shop","screenshot":{"offset":0,"length":%d,"content_type":"image/png","width":4,"height":3}}`, len(screenshotPNG)),
		}
	}
	var in struct{ Argv []string }
	_ = json.Unmarshal([]byte(req.GetInputJson()), &in)
	if len(in.Argv) == 0 {
		return dispatchtest.Run{State: controlplanev1.DispatchState_DISPATCH_STATE_FAILED, Error: "input: argv is required"}
	}
	out := func(data string) dispatchtest.Chunk { return dispatchtest.Chunk{Data: data} }
	errOut := func(data string) dispatchtest.Chunk { return dispatchtest.Chunk{Stderr: true, Data: data} }
	process := func(code int32, chunks ...dispatchtest.Chunk) dispatchtest.Run {
		r := dispatchtest.Run{Output: chunks, ExitCode: code, ResultJSON: fmt.Sprintf(`{"exit_code":%d}`, code)}
		if code != 0 {
			r.State, r.Error = controlplanev1.DispatchState_DISPATCH_STATE_FAILED, fmt.Sprintf("exit status %d", code)
		}
		return r
	}
	switch in.Argv[0] {
	case "echo":
		return process(0, out(strings.Join(in.Argv[1:], " ")+"\n"))
	case "true":
		return process(0)
	case "check":
		return process(3, out("checking\n"), errOut("check: 2 problems\n"))
	case "make":
		return process(0, out("cc -c a.c\n"), errOut("warning: unused x\n"), out("cc -c b.c\n"), out("ld -o app\n"))
	case "yes":
		r := process(0, out(strings.Repeat("y\n", 512)))
		r.Truncated = true
		return r
	case "lossy":
		r := process(0, out("part\n"))
		r.OutputLost = "only 5 of the 12 bytes of output reached palyrad"
		return r
	case "rm":
		return dispatchtest.Run{State: controlplanev1.DispatchState_DISPATCH_STATE_FAILED, Error: "not allowed: rm"}
	case "sleep":
		return dispatchtest.Run{State: controlplanev1.DispatchState_DISPATCH_STATE_TIMED_OUT, Error: "deadline passed"}
	case "tail":
		return dispatchtest.Run{Output: []dispatchtest.Chunk{out("started\n")}, Hold: true}
	case "later":
		r := process(0, out("done\n"))
		r.QueueFor = 2500 * time.Millisecond
		return r
	}
	return dispatchtest.Run{State: controlplanev1.DispatchState_DISPATCH_STATE_FAILED, Error: "not allowed: " + in.Argv[0]}
}

func newInvokeBench(t *testing.T) *bench {
	t.Helper()
	b := newBench(t)
	b.disp.Runner = node
	return b
}

// invoke runs `palyra nodes invoke deviceID` with args.
func (b *bench) invoke(ctx context.Context, args ...string) cmdtest.Result {
	return cmdtest.Run(ctx, b.env, append([]string{"nodes", "invoke", deviceID}, args...)...)
}

// TestInvokeEcho is the Done-when: the echo prints exactly "hi\n" on stdout
// and nothing else, and exits 0, with and without --follow.
func TestInvokeEcho(t *testing.T) {
	t.Parallel()
	b := newInvokeBench(t)
	res := b.invoke(t.Context(), "shell.execute", "--input", echoHi)
	if res.Code != 0 || res.Stdout != "hi\n" || res.Stderr != "" {
		t.Fatalf("invoke: exit %d, stdout %q, stderr %q", res.Code, res.Stdout, res.Stderr)
	}
	ex := b.disp.Calls().Executes
	if len(ex) != 1 || ex[0].GetNodeId() != deviceID || ex[0].GetCapability() != "shell.execute" || ex[0].GetInputJson() != echoHi ||
		ex[0].GetTimeout() != nil || ex[0].GetMaxOutputBytes() != 0 || !strings.HasPrefix(ex[0].GetIdempotencyKey(), "palyra-cli:") {
		t.Errorf("ExecuteCapability was sent %v", ex)
	}

	res = b.invoke(t.Context(), "shell.execute", "--input", echoHi, "--follow")
	if res.Code != 0 || res.Stdout != "hi\n" || res.Stderr != "" {
		t.Fatalf("invoke --follow: exit %d, stdout %q, stderr %q", res.Code, res.Stdout, res.Stderr)
	}
	cr := b.disp.Calls().Creates
	if len(cr) != 1 || cr[0].GetInputJson() != echoHi || !strings.HasPrefix(cr[0].GetIdempotencyKey(), "palyra-cli:") ||
		cr[0].GetIdempotencyKey() == ex[0].GetIdempotencyKey() {
		t.Errorf("CreateDispatch was sent %v; want a fresh idempotency key", cr)
	}

	res = b.invoke(t.Context(), "shell.execute", "--input", echoHi, "-o", "json")
	var got controlplanev1.ExecuteCapabilityResponse
	if err := protojson.Unmarshal([]byte(res.Stdout), &got); err != nil || res.Code != 0 || len(got.GetOutput()) != 1 ||
		string(got.GetOutput()[0].GetData()) != "hi\n" || got.GetDispatch().GetState() != controlplanev1.DispatchState_DISPATCH_STATE_SUCCEEDED {
		t.Errorf("invoke -o json: exit %d, %v\n%s", res.Code, err, res.Stdout)
	}
	res = b.invoke(t.Context(), "shell.execute", "--input", echoHi, "-o", "json", "--follow")
	if err := protojson.Unmarshal([]byte(res.Stdout), &got); err != nil || res.Code != 0 || len(got.GetOutput()) != 1 ||
		string(got.GetOutput()[0].GetData()) != "hi\n" {
		t.Errorf("invoke --follow -o json: exit %d, %v\n%s", res.Code, err, res.Stdout)
	}
}

// TestInvokeReadsTheOutputThatDidNotFit: when ExecuteCapability says more output is
// stored than it returned, invoke reads the rest page by page, in order.
func TestInvokeReadsTheOutputThatDidNotFit(t *testing.T) {
	t.Parallel()
	b := newInvokeBench(t)
	b.disp.OutputPage = 1
	res := b.invoke(t.Context(), "shell.execute", "--input", `{"argv":["make"]}`)
	if res.Code != 0 || res.Stdout != "cc -c a.c\ncc -c b.c\nld -o app\n" || res.Stderr != "warning: unused x\n" {
		t.Fatalf("invoke: exit %d, stdout %q, stderr %q", res.Code, res.Stdout, res.Stderr)
	}
	if gets := b.disp.Calls().Gets; len(gets) != 3 {
		t.Errorf("%d GetDispatch calls for 3 pages after the first", len(gets))
	}
	res = b.invoke(t.Context(), "shell.execute", "--input", `{"argv":["make"]}`, "-o", "json")
	var got controlplanev1.ExecuteCapabilityResponse
	if err := protojson.Unmarshal([]byte(res.Stdout), &got); err != nil || len(got.GetOutput()) != 4 || got.GetMoreOutput() ||
		got.GetNextOutputOffset() != 48 {
		t.Errorf("invoke -o json: %v\n%s", err, res.Stdout)
	}
}

// TestInvokeOutcomes checks the exit codes and messages of the ways a dispatch ends.
func TestInvokeOutcomes(t *testing.T) {
	t.Parallel()
	b := newInvokeBench(t)
	for _, follow := range []bool{false, true} {
		run := func(args ...string) cmdtest.Result {
			if follow {
				args = append(args, "--follow")
			}
			return b.invoke(t.Context(), args...)
		}
		name := map[bool]string{false: "invoke", true: "invoke --follow"}[follow]

		res := run("shell.execute", "--input", `{"argv":["check"]}`)
		if res.Code != 3 || res.Stdout != "checking\n" || res.Stderr != "check: 2 problems\n" {
			t.Errorf("%s of a process that exits 3: exit %d, stdout %q, stderr %q", name, res.Code, res.Stdout, res.Stderr)
		}
		res = run("shell.execute", "--input", `{"argv":["rm","-rf","/"]}`)
		if res.Code != 1 || res.Stdout != "" || !strings.HasPrefix(res.Stderr, "palyra: dispatch 01JD6000000000000000000") ||
			!strings.HasSuffix(res.Stderr, " failed: not allowed: rm\n") {
			t.Errorf("%s refused: exit %d, stdout %q, stderr %q", name, res.Code, res.Stdout, res.Stderr)
		}
		res = run("shell.execute", "--input", `{"argv":["sleep","99"]}`, "--timeout", "30s")
		if res.Code != 1 || !strings.HasSuffix(res.Stderr, " timed out: deadline passed\n") {
			t.Errorf("%s timed out: exit %d, stderr %q", name, res.Code, res.Stderr)
		}
		res = run("shell.execute", "--input", `{"argv":["yes"]}`, "--max-output", "1K")
		if res.Code != 0 || len(res.Stdout) != 1024 ||
			!strings.Contains(res.Stderr, "palyra: warning: dispatch 01JD6000000000000000000") ||
			!strings.Contains(res.Stderr, " produced 3 KiB of output, beyond its cap of 1 KiB; the rest was not kept") {
			t.Errorf("%s truncated: exit %d, %d bytes on stdout, stderr %q", name, res.Code, len(res.Stdout), res.Stderr)
		}
		res = run("shell.execute", "--input", `{"argv":["lossy"]}`)
		if res.Code != 0 || res.Stdout != "part\n" || !strings.Contains(res.Stderr, "palyra: warning: dispatch 01JD6000000000000000000") ||
			!strings.HasSuffix(res.Stderr, " lost output: only 5 of the 12 bytes of output reached palyrad\n") {
			t.Errorf("%s with output lost: exit %d, stdout %q, stderr %q", name, res.Code, res.Stdout, res.Stderr)
		}
		res = run("system.info")
		if want := "{\n  \"hostname\": \"build-01\",\n  \"os\": \"linux\",\n  \"cpus\": 8\n}\n"; res.Code != 0 || res.Stdout != want || res.Stderr != "" {
			t.Errorf("%s system.info: exit %d, stdout %q, stderr %q", name, res.Code, res.Stdout, res.Stderr)
		}
		res = run("shell.execute", "--input", `{"argv":["true"]}`)
		if res.Code != 0 || res.Stdout != "" || res.Stderr != "" {
			t.Errorf("%s of a silent process printed its result: exit %d, stdout %q, stderr %q", name, res.Code, res.Stdout, res.Stderr)
		}
	}
	calls := b.disp.Calls()
	for _, ex := range calls.Executes {
		if ex.GetCapability() == "shell.execute" && strings.Contains(ex.GetInputJson(), "sleep") && ex.GetTimeout().AsDuration() != 30*time.Second {
			t.Errorf("--timeout 30s sent as %v", ex.GetTimeout())
		}
		if strings.Contains(ex.GetInputJson(), "yes") && ex.GetMaxOutputBytes() != 1024 {
			t.Errorf("--max-output 1K sent as %d", ex.GetMaxOutputBytes())
		}
	}
	if len(calls.Creates) != 7 || calls.Creates[3].GetMaxOutputBytes() != 1024 {
		t.Errorf("creates %v", calls.Creates)
	}
}

// TestInvokeInput checks --input from a file and from stdin, and its default.
func TestInvokeInput(t *testing.T) {
	t.Parallel()
	b := newInvokeBench(t)
	file := filepath.Join(t.TempDir(), "job.json")
	if err := os.WriteFile(file, []byte("{\"argv\": [\"echo\", \"from\", \"file\"]}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	res := b.invoke(t.Context(), "shell.execute", "--input", "@"+file)
	if res.Code != 0 || res.Stdout != "from file\n" {
		t.Errorf("--input @file: exit %d, stdout %q, stderr %q", res.Code, res.Stdout, res.Stderr)
	}
	res = cmdtest.Start(t.Context(), b.env, strings.NewReader(`{"argv":["echo","from","stdin"]}`),
		"nodes", "invoke", deviceID, "shell.execute", "--input", "-").Wait(t)
	if res.Code != 0 || res.Stdout != "from stdin\n" {
		t.Errorf("--input -: exit %d, stdout %q, stderr %q", res.Code, res.Stdout, res.Stderr)
	}
	res = b.invoke(t.Context(), "system.info")
	if ex := b.disp.Calls().Executes; res.Code != 0 || len(ex) != 3 || ex[2].GetInputJson() != "{}" {
		t.Errorf("default input: exit %d, sent %v", res.Code, ex)
	}

	res = cmdtest.Start(t.Context(), b.env, strings.NewReader(`{"argv":`), "nodes", "invoke", deviceID, "shell.execute", "--input", "-").Wait(t)
	if res.Code != 2 || !strings.Contains(res.Stderr, "the input on stdin is not valid JSON") {
		t.Errorf("invalid JSON on stdin: exit %d, stderr %q", res.Code, res.Stderr)
	}
	if err := os.WriteFile(file, []byte("argv=echo"), 0o600); err != nil {
		t.Fatal(err)
	}
	res = b.invoke(t.Context(), "shell.execute", "--input", "@"+file)
	if res.Code != 2 || !strings.Contains(res.Stderr, "the input in "+file+" is not valid JSON") {
		t.Errorf("invalid JSON in a file: exit %d, stderr %q", res.Code, res.Stderr)
	}
	res = b.invoke(t.Context(), "shell.execute", "--input", "@"+filepath.Join(t.TempDir(), "missing.json"))
	if res.Code != 1 || !strings.Contains(res.Stderr, "read the input") {
		t.Errorf("missing input file: exit %d, stderr %q", res.Code, res.Stderr)
	}
	if n := len(b.disp.Calls().Executes); n != 3 {
		t.Errorf("%d dispatches, want 3: bad input must not reach palyrad", n)
	}
}

// TestInvokeFollow checks that --follow writes the output in order, by stream,
// resumes after a broken connection from the last offset without repeating output
// that a server sends again, and reports the states with -v.
func TestInvokeFollow(t *testing.T) {
	t.Parallel()
	b := newInvokeBench(t)
	b.disp.BreakWatchAfter, b.disp.ReplayOutput = 2, true
	res := b.invoke(t.Context(), "shell.execute", "--input", `{"argv":["make"]}`, "--follow", "-v")
	if res.Code != 0 || res.Stdout != "cc -c a.c\ncc -c b.c\nld -o app\n" {
		t.Fatalf("invoke --follow: exit %d, stdout %q, stderr %q", res.Code, res.Stdout, res.Stderr)
	}
	id := dispatchtest.ID(1)
	cmdtest.WantOutput(t, "stderr", res.Stderr, "dispatch "+id+" created\n", "dispatch "+id+": running\n", "warning: unused x\n",
		"resuming from offset 28", "dispatch "+id+": succeeded\n")
	if strings.Count(res.Stderr, "warning: unused x") != 1 {
		t.Errorf("output repeated after the resumption:\n%s", res.Stderr)
	}
	w := b.disp.Calls().Watches
	if len(w) != 2 || w[0].GetId() != id || w[0].GetFromOffset() != 0 || w[1].GetFromOffset() != 28 {
		t.Errorf("watches %v: want a resumption from offset 28 (after two chunks)", w)
	}
}

// TestInvokeFollowRetriesCreation checks that a creation that fails in transit is
// repeated with the same idempotency key, and that --idempotency-key is sent.
func TestInvokeFollowRetriesCreation(t *testing.T) {
	t.Parallel()
	b := newInvokeBench(t)
	b.disp.FailCreates = 1
	res := b.invoke(t.Context(), "shell.execute", "--input", echoHi, "--follow")
	if res.Code != 0 || res.Stdout != "hi\n" {
		t.Fatalf("invoke --follow: exit %d, stdout %q, stderr %q", res.Code, res.Stdout, res.Stderr)
	}
	res = b.invoke(t.Context(), "shell.execute", "--input", echoHi, "--follow", "--idempotency-key", "deploy-42", "-v")
	res2 := b.invoke(t.Context(), "shell.execute", "--input", echoHi, "--follow", "--idempotency-key", "deploy-42", "-v")
	if res.Code != 0 || res2.Code != 0 || !strings.Contains(res2.Stderr, "already created with this idempotency key") {
		t.Errorf("repeat with a key: exit %d, %d; stderr %q", res.Code, res2.Code, res2.Stderr)
	}
	cr := b.disp.Calls().Creates
	if len(cr) != 4 || cr[0].GetIdempotencyKey() == "" || cr[1].GetIdempotencyKey() != cr[0].GetIdempotencyKey() {
		t.Fatalf("creates %v: want the failed creation repeated with its key", cr)
	}
	if cr[2].GetIdempotencyKey() != "deploy-42" || cr[3].GetIdempotencyKey() != "deploy-42" {
		t.Errorf("creates %v: want --idempotency-key sent", cr)
	}
	if d := b.disp.Dispatch(dispatchtest.ID(2)); d.GetIdempotencyKey() != "deploy-42" {
		t.Errorf("dispatch 2 = %v", d)
	}
	if d := b.disp.Dispatch(dispatchtest.ID(3)); d != nil {
		t.Errorf("a repeat with the same key made a new dispatch: %v", d)
	}
}

// TestInvokeFollowInterrupted presses Ctrl-C while following: palyra cancels the
// dispatch with its reason, waits for its end and exits 130.
// TestInvokeDoesNotRetryAnswers: only a failure of the connection, or palyrad saying
// it is unavailable, is tried again; an answer such as InvalidArgument (an input that
// cannot be stored) or Internal is final, with or without --follow.
func TestInvokeDoesNotRetryAnswers(t *testing.T) {
	t.Parallel()
	for _, code := range []connect.Code{connect.CodeInvalidArgument, connect.CodeInternal, connect.CodeUnknown, connect.CodeFailedPrecondition} {
		for _, follow := range []bool{false, true} {
			b := newInvokeBench(t)
			b.disp.FailCreates, b.disp.FailCode = 3, code
			args := []string{"shell.execute", "--input", echoHi}
			if follow {
				args = append(args, "--follow")
			}
			res := b.invoke(t.Context(), args...)
			calls := b.disp.Calls()
			if n := len(calls.Creates) + len(calls.Executes); res.Code != 1 || n != 1 {
				t.Errorf("%v (follow %v): exit %d after %d calls, want exit 1 after 1; stderr %q", code, follow, res.Code, n, res.Stderr)
			}
		}
	}
}

func TestInvokeFollowInterrupted(t *testing.T) {
	t.Parallel()
	b := newInvokeBench(t)
	b.disp.Watching = make(chan string, 1)
	ctx, cancel := context.WithCancel(t.Context())
	run := cmdtest.Start(ctx, b.env, nil, "nodes", "invoke", deviceID, "shell.execute", "--input", `{"argv":["tail","-f","log"]}`, "--follow")
	id := <-b.disp.Watching
	run.WaitFor(t, "started\n") // streamed before the end
	cancel()                    // Ctrl-C
	res := run.Wait(t)
	if res.Code != 130 || res.Stdout != "started\n" || res.Stderr != "palyra: interrupted: dispatch "+id+" was cancelled\n" {
		t.Errorf("interrupted: exit %d, stdout %q, stderr %q", res.Code, res.Stdout, res.Stderr)
	}
	if c := b.disp.Calls().Cancels; len(c) != 1 || c[0].GetId() != id || c[0].GetReason() != "interrupted by the user" {
		t.Errorf("cancels %v", c)
	}

	// With -o json, the dispatch as it ended and the output seen are printed.
	ctx, cancel = context.WithCancel(t.Context())
	run = cmdtest.Start(ctx, b.env, nil, "nodes", "invoke", deviceID, "shell.execute", "--input", `{"argv":["tail","-f","log"]}`,
		"--follow", "-o", "json")
	<-b.disp.Watching
	cancel()
	res = run.Wait(t)
	var got controlplanev1.ExecuteCapabilityResponse
	if err := protojson.Unmarshal([]byte(res.Stdout), &got); err != nil || res.Code != 130 ||
		got.GetDispatch().GetState() != controlplanev1.DispatchState_DISPATCH_STATE_CANCELLED {
		t.Errorf("interrupted -o json: exit %d, %v\n%s%s", res.Code, err, res.Stdout, res.Stderr)
	}
}

// TestInvokeInterrupted presses Ctrl-C while ExecuteCapability waits: palyra finds the
// dispatch by its idempotency key and cancels it.
func TestInvokeInterrupted(t *testing.T) {
	t.Parallel()
	b := newInvokeBench(t)
	b.disp.Executing = make(chan string, 1)
	ctx, cancel := context.WithCancel(t.Context())
	run := cmdtest.Start(ctx, b.env, nil, "nodes", "invoke", deviceID, "shell.execute", "--input", `{"argv":["tail","-f","log"]}`)
	id := <-b.disp.Executing
	cancel() // Ctrl-C
	res := run.Wait(t)
	if res.Code != 130 || res.Stdout != "" || res.Stderr != "palyra: interrupted: dispatch "+id+" was cancelled\n" {
		t.Errorf("interrupted: exit %d, stdout %q, stderr %q", res.Code, res.Stdout, res.Stderr)
	}
	calls := b.disp.Calls()
	if len(calls.Lists) != 1 || calls.Lists[0].GetNodeId() != deviceID || calls.Lists[0].GetCapability() != "shell.execute" {
		t.Errorf("lists %v", calls.Lists)
	}
	if len(calls.Cancels) != 1 || calls.Cancels[0].GetId() != id || calls.Cancels[0].GetReason() != "interrupted by the user" {
		t.Errorf("cancels %v", calls.Cancels)
	}
}

// TestInvokeFollowQueued checks that a dispatch that stays queued is announced on
// stderr after two seconds, and that its output follows once it runs.
func TestInvokeFollowQueued(t *testing.T) {
	t.Parallel()
	b := newInvokeBench(t)
	res := b.invoke(t.Context(), "shell.execute", "--input", `{"argv":["later"]}`, "--follow")
	if res.Code != 0 || res.Stdout != "done\n" {
		t.Fatalf("invoke --follow: exit %d, stdout %q, stderr %q", res.Code, res.Stdout, res.Stderr)
	}
	want := "waiting for node " + deviceID + ": dispatch " + dispatchtest.ID(1) +
		" is queued until the node attaches, at the latest until 2025-06-01T12:01:00Z (Ctrl-C cancels it)\n"
	if res.Stderr != want {
		t.Errorf("stderr %q, want %q", res.Stderr, want)
	}
}

// TestInvokeBrowserScreenshot: the output of a browser.* dispatch, a PNG, never reaches
// stdout, with or without --follow, in either format: it goes to --screenshot, else
// <dispatch id>.png in the current directory, said on stderr, and the result is printed.
// (Not parallel: it changes the working directory.)
func TestInvokeBrowserScreenshot(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	b := newInvokeBench(t)
	b.disp.OutputPage = 1
	input := `{"url":"https://shop.example.com/","profile":"shop","screenshot":true}`
	for i, args := range [][]string{
		{"--screenshot", filepath.Join(dir, "shop.png")},
		{"--follow", "--screenshot", filepath.Join(dir, "shop.png")},
		{},
		{"-o", "json", "--screenshot", "shop.png"},
	} {
		os.Remove(filepath.Join(dir, "shop.png"))
		res := b.invoke(t.Context(), append([]string{"browser.navigate", "--input", input}, args...)...)
		id := dispatchtest.ID(i + 1)
		path := id + ".png"
		if len(args) > 0 {
			path = args[len(args)-1]
		}
		if res.Code != 0 || strings.Contains(res.Stdout, "PNG") || !strings.Contains(res.Stdout, "title") ||
			!strings.Contains(res.Stdout, "content_type") {
			t.Errorf("invoke %q: exit %d, stdout %q, stderr %q", args, res.Code, res.Stdout, res.Stderr)
		}
		want := fmt.Sprintf("palyra: wrote the screenshot of dispatch %s to %s (image/png, 4x3, %d B)\n", id, path, len(screenshotPNG))
		if res.Stderr != want {
			t.Errorf("invoke %q: stderr %q, want %q", args, res.Stderr, want)
		}
		got, err := os.ReadFile(filepath.Join(dir, filepath.Base(path)))
		if err != nil || string(got) != screenshotPNG {
			t.Errorf("invoke %q: the file holds %d bytes (%v), want the screenshot's %d", args, len(got), err, len(screenshotPNG))
		}
		if slices.Contains(args, "json") {
			var msg controlplanev1.ExecuteCapabilityResponse
			if err := protojson.Unmarshal([]byte(res.Stdout), &msg); err != nil || len(msg.GetOutput()) != 0 {
				t.Errorf("invoke -o json: %v, %d chunks of output printed", err, len(msg.GetOutput()))
			}
		}
	}

	// A screenshot the kept output does not hold whole is not written.
	b.disp.Runner = func(req *controlplanev1.CreateDispatchRequest) dispatchtest.Run {
		r := node(req)
		r.Output = r.Output[:1]
		return r
	}
	res := b.invoke(t.Context(), "browser.navigate", "--input", input, "--screenshot", "cut.png")
	if _, err := os.Stat("cut.png"); res.Code != 0 || err == nil || !strings.Contains(res.Stderr, "of which the kept output holds 20 B") {
		t.Errorf("invoke with a cut screenshot: exit %d, stdout %q, stderr %q, file: %v", res.Code, res.Stdout, res.Stderr, err)
	}

	// The location is the node's word: a length beyond the output allocates nothing
	// and writes nothing, and bytes that are not a PNG image are not written.
	for name, tc := range map[string]struct {
		run  func(dispatchtest.Run) dispatchtest.Run
		want string
	}{
		"a huge length": {func(r dispatchtest.Run) dispatchtest.Run {
			r.ResultJSON = `{"title":"Shop","screenshot":{"offset":0,"length":4611686018427387904,"content_type":"image/png"}}`
			return r
		}, "is 4194304 TiB, of which the kept output holds " + fmt.Sprint(len(screenshotPNG)) + " B"},
		"not a PNG": {func(r dispatchtest.Run) dispatchtest.Run {
			r.Output = []dispatchtest.Chunk{{Data: "#!/bin/sh\nrm -rf ~\n"}}
			r.ResultJSON = `{"title":"Shop","screenshot":{"offset":0,"length":18,"content_type":"image/png"}}`
			return r
		}, `is not a PNG image (the node said "image/png")`},
	} {
		b.disp.Runner = func(req *controlplanev1.CreateDispatchRequest) dispatchtest.Run { return tc.run(node(req)) }
		res := b.invoke(t.Context(), "browser.navigate", "--input", input, "--screenshot", "bad.png")
		if _, err := os.Stat("bad.png"); res.Code != 0 || err == nil || !strings.Contains(res.Stderr, tc.want) ||
			!strings.Contains(res.Stdout, `"title"`) {
			t.Errorf("invoke with %s: exit %d, stdout %q, stderr %q, file: %v", name, res.Code, res.Stdout, res.Stderr, err)
		}
	}
}
