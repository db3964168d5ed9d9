package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/palyra/palyra/internal/eventually"
)

// askingModel is an OpenAI-compatible provider on loopback, streaming as OpenAI does:
// asked a prompt, it calls shell_execute to run program with the prompt as argument;
// given the tool's message, it answers "answer: <the message's content>".
func askingModel(t *testing.T, program string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Messages []struct {
				Role    string `json:"role"`
				Content any    `json:"content"`
			} `json:"messages"`
		}
		if r.URL.Path != "/v1/chat/completions" || json.NewDecoder(r.Body).Decode(&req) != nil || len(req.Messages) == 0 {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		last := req.Messages[len(req.Messages)-1]
		delta, finish := map[string]any{"role": "assistant", "content": "answer: " + fmt.Sprint(last.Content)}, "stop"
		if last.Role != "tool" {
			args, _ := json.Marshal(map[string]any{"argv": []string{program, fmt.Sprint(last.Content)}, "timeout_seconds": 30})
			delta, finish = map[string]any{"role": "assistant", "tool_calls": []any{map[string]any{"index": 0, "id": "call_1", "type": "function",
				"function": map[string]any{"name": "shell_execute", "arguments": string(args)}}}}, "tool_calls"
		}
		chunk, _ := json.Marshal(map[string]any{"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "asking-model",
			"choices": []any{map[string]any{"index": 0, "finish_reason": finish, "delta": delta}}})
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprintf(w, "data: %s\n\ndata: [DONE]\n\n", chunk)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/v1"
}

// awaitApproval waits until `palyra approvals list` shows one pending approval, of the
// run that the `palyra agents run` process says it started, and returns the approval's
// id. The run waits for it and says so.
func awaitApproval(t *testing.T, u *cliUser, run *process, node string) (id, runID string) {
	t.Helper()
	started := regexp.MustCompile(`run ([0-9A-Z]{26}) of agent asker started\n`)
	eventually.NoError(t, "a pending approval", func() error {
		select {
		case err := <-run.done:
			t.Fatalf("%s exited (%v) before asking:\nstdout %q\nstderr %q", run.name, err, run.stdout, run.stderr)
		default:
		}
		m := started.FindStringSubmatch(run.stderr.String())
		if m == nil {
			return fmt.Errorf("the run has not started: %q", run.stderr)
		}
		runID = m[1]
		lines := strings.Split(strings.TrimRight(u.ok(t, "approvals", "list"), "\n"), "\n")
		if len(lines) != 2 {
			return fmt.Errorf("%d pending approvals", len(lines)-1)
		}
		f := strings.Fields(lines[1])
		if want := []string{"pending", "asker", "shell_execute", "shell.execute", node, runID, "asked"}; len(f) < 8 || !slices.Equal(f[1:8], want) {
			t.Fatalf("approvals list:\n%s\nwant a row %q", strings.Join(lines, "\n"), want)
		}
		id = f[0]
		return nil
	})
	want := fmt.Sprintf("waiting for approval %s of shell_execute on %s (palyra approvals approve %s), until ", id, node, id)
	eventually.True(t, "the run saying it waits", func() bool { return strings.Contains(run.stderr.String(), want) })
	return id, runID
}

// exited waits until a process exits and returns its exit code.
func exited(t *testing.T, p *process) int {
	t.Helper()
	select {
	case err := <-p.done:
		var exitErr *exec.ExitError
		switch {
		case err == nil:
			return 0
		case errors.As(err, &exitErr):
			return exitErr.ExitCode()
		}
		t.Fatalf("%s: %v", p.name, err)
	case <-time.After(eventually.Deadline):
		t.Fatalf("%s did not exit within %v:\nstdout %q\nstderr %q", p.name, eventually.Deadline, p.stdout, p.stderr)
	}
	return -1
}

// TestCLIApprovals runs an agent whose shell.execute tool's policy is ask on a real
// node, with `palyra agents run` as a user does, and decides its calls with `palyra
// approvals`: the call waits, listed and shown with its exact input, and nothing runs
// on the node until it is approved; then it runs once and the model answers with the
// node's output. A denied call never runs, and the model is told the reason. Denying
// needs a reason, an operator reads but cannot decide, and decisions are final.
func TestCLIApprovals(t *testing.T) {
	t.Parallel()
	d := startCLIDaemon(t)
	owner := newCLIUser(t)
	owner.login(t, d, "owner")

	// The tool's program logs each run and prints what it was given.
	node, record, ranLog := startRecordingNode(t, owner, d.url, d.fingerprint, "echo \"the node ran $1\"")

	owner.ok(t, "config", "set", "compat.providers.scripted.base_url", askingModel(t, record))
	owner.ok(t, "config", "set", "compat.providers.scripted.models", "asking-model")
	owner.ok(t, "agents", "create", "asker", "--model", "asking-model", "--system-prompt", "You run a fleet.",
		"--tool", "shell.execute,node="+node.deviceID+",policy=ask")

	run := owner.start(t, "agents", "run", "asker", "alpha")
	first, run1 := awaitApproval(t, owner, run, node.deviceID)

	rows := statusTable(t, strings.SplitN(owner.ok(t, "approvals", "show", strings.ToLower(first)), "Input:\n", 2)[0])
	if rows["State"] != "pending" || !regexp.MustCompile(`^asker \([0-9A-Z]{26}\)$`).MatchString(rows["Agent"]) ||
		!strings.HasPrefix(rows["Run"], run1+", step ") || rows["Tool"] != "shell_execute" || rows["Capability"] != "shell.execute" ||
		rows["Node"] != node.deviceID || rows["Decided"] != "-" {
		t.Errorf("approvals show: %q", rows)
	}
	// The input, pretty-printed whole: what the node would be given.
	input := fmt.Sprintf("Input:\n{\n  \"argv\": [\n    %q,\n    \"alpha\"\n  ],\n  \"timeout_seconds\": 30\n}\n", record)
	if out := owner.ok(t, "approvals", "show", first); !strings.HasSuffix(out, input) {
		t.Errorf("approvals show does not end with the input %q:\n%s", input, out)
	}
	if _, err := os.Stat(ranLog); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the node ran something before the approval (%v)", err)
	}

	// Usage errors send nothing: denying needs a reason, a scope is once or run.
	cliWant(t, owner.fails(t, 2, "approvals", "deny", first), "--reason is required")
	cliWant(t, owner.fails(t, 2, "approvals", "approve", first, "--scope", "forever"), "forever")

	// An operator reads, but cannot decide.
	_, secret := owner.createToken(t, "--label", "ops", "--role", "operator")
	operator := newCLIUser(t).with("PALYRA_TOKEN", secret, "PALYRA_URL", d.url, "PALYRA_CA_FILE", d.caFile)
	operator.ok(t, "approvals", "show", first)
	cliWant(t, operator.fails(t, 1, "approvals", "approve", first), "approvals.decide")
	if rows := statusTable(t, strings.SplitN(owner.ok(t, "approvals", "show", first), "Input:\n", 2)[0]); rows["State"] != "pending" {
		t.Fatalf("after the refused decisions: %q", rows)
	}

	rows = statusTable(t, strings.SplitN(owner.ok(t, "approvals", "approve", first, "--scope", "run"), "Input:\n", 2)[0])
	if rows["State"] != "approved" || rows["Scope"] != "run" || !strings.Contains(rows["Decided"], " by token:") {
		t.Errorf("approve: %q", rows)
	}
	if code := exited(t, run); code != 0 || !strings.Contains(run.stdout.String(), `the node ran alpha\n`) ||
		!strings.Contains(run.stdout.String(), `"exit_code":0`) {
		t.Fatalf("%s after the approval: exit %d\nstdout %q\nstderr %q", run.name, code, run.stdout, run.stderr)
	}
	if n := countLines(t, ranLog); len(n) != 1 || n["alpha"] != 1 {
		t.Errorf("the node ran %v, want alpha once", n)
	}
	stderr := owner.fails(t, 1, "approvals", "deny", first, "--reason", "changed my mind")
	cliWant(t, stderr, "is approved")
	cliWant(t, stderr, "decisions are final")

	// A denied call never runs; the model is told why.
	run = owner.start(t, "agents", "run", "asker", "beta")
	second, _ := awaitApproval(t, owner, run, node.deviceID)
	if second == first {
		t.Fatalf("the second run's approval is the first's")
	}
	rows = statusTable(t, strings.SplitN(owner.ok(t, "approvals", "deny", second, "--reason", "not during the freeze"), "Input:\n", 2)[0])
	if rows["State"] != "denied" || rows["Reason"] != "not during the freeze" || rows["Scope"] != "-" {
		t.Errorf("deny: %q", rows)
	}
	if code := exited(t, run); code != 0 || !strings.Contains(run.stdout.String(), "a human denied the call: not during the freeze") ||
		!strings.Contains(run.stderr.String(), ": denied: a human denied the call: not during the freeze\n") {
		t.Fatalf("%s after the denial: exit %d\nstdout %q\nstderr %q", run.name, code, run.stdout, run.stderr)
	}
	if n := countLines(t, ranLog); len(n) != 1 || n["alpha"] != 1 {
		t.Errorf("the node ran %v, want alpha once and nothing else", n)
	}

	if out := owner.ok(t, "approvals", "list"); strings.Contains(out, first) || strings.Contains(out, second) {
		t.Errorf("list shows decided approvals as pending:\n%s", out)
	}
	var listed struct {
		Approvals []struct{ ID, State, Scope, InputJSON string }
	}
	decode(t, owner.ok(t, "approvals", "list", "--state", "all", "--run", run1, "-o", "json"), &listed)
	if len(listed.Approvals) != 1 || listed.Approvals[0].ID != first || listed.Approvals[0].State != "APPROVAL_STATE_APPROVED" ||
		listed.Approvals[0].Scope != "APPROVAL_SCOPE_RUN" || !strings.Contains(listed.Approvals[0].InputJSON, record) {
		t.Errorf("list --state all --run -o json: %+v", listed)
	}
	node.stop(t)
}
