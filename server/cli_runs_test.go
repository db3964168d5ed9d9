package main

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
)

// TestCLIRuns runs an agent with `palyra agents run` (its answer on stdout, the run's
// start on stderr), then lists, shows and watches the run with `palyra runs`, and
// refuses to cancel it once ended.
func TestCLIRuns(t *testing.T) {
	t.Parallel()
	d := startCLIDaemon(t, "--compat-model", "palyra-echo")
	owner := newCLIUser(t)
	owner.login(t, d, "owner")
	owner.ok(t, "agents", "create", "echoer", "--model", "palyra-echo", "--system-prompt", "Repeat.")

	code, out, stderr := owner.run(t, "", "agents", "run", "echoer", "hello there world")
	if code != 0 || out != "hello there world\n" {
		t.Fatalf("agents run: exit %d, stdout %q, stderr %q", code, out, stderr)
	}
	m := regexp.MustCompile(`^run ([0-9A-Z]{26}) of agent echoer started\n$`).FindStringSubmatch(stderr)
	if m == nil {
		t.Fatalf("agents run stderr %q", stderr)
	}
	id := m[1]

	if list := owner.ok(t, "runs", "list", "--agent", "echoer"); !strings.Contains(list, id) || !strings.Contains(list, "succeeded") {
		t.Errorf("runs list:\n%s", list)
	}
	show := owner.ok(t, "runs", "show", id)
	rows := statusTable(t, strings.SplitN(show, "\n\n", 2)[0])
	if rows["State"] != "succeeded" || rows["Answer"] != "hello there world" || rows["Model calls"] != "1" || !strings.HasPrefix(rows["Agent"], "echoer (revision 1") {
		t.Errorf("runs show: %q", rows)
	}
	if !strings.Contains(show, "model palyra-echo: stop") || !strings.Contains(show, "answer") {
		t.Errorf("runs show steps:\n%s", show)
	}
	var got struct {
		Run struct {
			ID    string `json:"id"`
			State string `json:"state"`
		} `json:"run"`
		Steps []json.RawMessage `json:"steps"`
	}
	if err := json.Unmarshal([]byte(owner.ok(t, "runs", "show", id, "-o", "json")), &got); err != nil || got.Run.ID != id ||
		got.Run.State != "RUN_STATE_SUCCEEDED" || len(got.Steps) != 2 {
		t.Errorf("runs show -o json: %+v %v", got, err)
	}
	code, out, stderr = owner.run(t, "", "runs", "watch", id)
	if code != 0 || out != "hello there world\n" || !strings.Contains(stderr, "[1] model palyra-echo: stop") || !strings.Contains(stderr, "[2] answer") {
		t.Errorf("runs watch: exit %d, stdout %q, stderr %q", code, out, stderr)
	}
	if stderr := owner.fails(t, 1, "runs", "cancel", id); !strings.Contains(stderr, "has ended: it is succeeded") {
		t.Errorf("cancel an ended run: %q", stderr)
	}
	if stderr := owner.fails(t, 2, "runs", "show", "nope"); !strings.Contains(stderr, "invalid run id") {
		t.Errorf("show a bad id: %q", stderr)
	}
	code, _, stderr = owner.run(t, "", "agents", "run", "missing", "hi")
	if code != 1 || !strings.Contains(stderr, "missing") {
		t.Errorf("run a missing agent: exit %d, %q", code, stderr)
	}
}
