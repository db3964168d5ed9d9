package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCLIAgents walks agents through `palyra agents`: create from flags and from a file,
// list, show (table and -o json), update with and without --expected-revision,
// set-default and delete, and refuses bad input and an operator's changes.
func TestCLIAgents(t *testing.T) {
	t.Parallel()
	d := startCLIDaemon(t, "--compat-model", "palyra-echo")
	owner := newCLIUser(t)
	owner.login(t, d, "owner")

	code, out, stderr := owner.run(t, "", "agents", "create", "helper", "--model", "palyra-echo", "--system-prompt", "You look after the fleet.",
		"--tool", "system.info", "--tool", "shell.execute,name=sh,selector=env=prod,zone in (a,b),policy=ask", "--max-steps", "12",
		"--deadline", "90s", "--label", "team=ops")
	if code != 0 {
		t.Fatalf("create: exit code %d\n%s\n%s", code, out, stderr)
	}
	rows := statusTable(t, strings.SplitN(out, "\n\n", 2)[0])
	if rows["Name"] != "helper" || rows["Revision"] != "1" || rows["Default"] != "false" || rows["Labels"] != "team=ops" ||
		rows["Limits"] != "12 steps, 16 tool calls, no token limit, 1m30s" || rows["System prompt"] != "You look after the fleet." {
		t.Errorf("create printed %q", rows)
	}
	if !strings.Contains(out, "sh           shell.execute  env=prod,zone in (a,b)  ask") {
		t.Errorf("create printed the tools:\n%s", out)
	}
	// No node is paired: both tools are saved with a warning each.
	if want := "warning: tool system_info: no online node offers system.info\n" +
		"warning: tool sh: no online node matching \"env=prod,zone in (a,b)\" offers shell.execute\n"; stderr != want {
		t.Errorf("create warned %q, want %q", stderr, want)
	}

	// -o json of show is the definition a file takes.
	var shown struct {
		Agent struct {
			ID   string          `json:"id"`
			Spec json.RawMessage `json:"spec"`
		} `json:"agent"`
		Warnings []string `json:"warnings"`
	}
	if err := json.Unmarshal([]byte(owner.ok(t, "agents", "show", "helper", "-o", "json")), &shown); err != nil {
		t.Fatal(err)
	}
	if len(shown.Warnings) != 2 || len(shown.Agent.ID) != 26 {
		t.Errorf("show -o json: %+v", shown)
	}
	file := filepath.Join(t.TempDir(), "agent.json")
	if err := os.WriteFile(file, shown.Agent.Spec, 0o600); err != nil {
		t.Fatal(err)
	}
	rows = statusTable(t, strings.SplitN(owner.ok(t, "agents", "create", "copy", "--file", file, "--max-steps", "4"), "\n\n", 2)[0])
	if rows["Name"] != "copy" || rows["Limits"] != "4 steps, 16 tool calls, no token limit, 1m30s" || rows["Labels"] != "team=ops" {
		t.Errorf("create --file printed %q", rows)
	}
	out = owner.ok(t, "agents", "list")
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 3 || !strings.HasPrefix(lines[1], "copy ") ||
		strings.Join(strings.Fields(lines[2])[:5], " ") != "helper - palyra-echo system_info,sh 1" {
		t.Errorf("list printed:\n%s", out)
	}
	if out := owner.ok(t, "agents", "list", "--selector", "team!=ops"); strings.Count(out, "\n") != 1 {
		t.Errorf("list --selector team!=ops printed:\n%s", out)
	}

	// Bad input: usage errors exit 2 before any call; palyrad's refusals exit 1 naming
	// the field.
	for _, args := range [][]string{
		{"create", "Helper", "--model", "palyra-echo"},
		{"create", "x"},
		{"create", "--model", "palyra-echo"},
		{"create", "x", "--model", "palyra-echo", "--tool", "system.info,node=web-1"},
		{"create", "x", "--model", "palyra-echo", "--tool", "system.info,policy=sometimes"},
		{"create", "x", "--model", "palyra-echo", "--tool", "system.info,flavour=mint"},
		{"create", "x", "--model", "palyra-echo", "--deadline", "soon"},
		{"update", "helper", "--expected-revision", "0"},
	} {
		owner.fails(t, 2, append([]string{"agents"}, args...)...)
	}
	cliWant(t, owner.fails(t, 1, "agents", "create", "helper", "--model", "palyra-echo"), `an agent named "helper" exists already`)
	cliWant(t, owner.fails(t, 1, "agents", "create", "x", "--model", "gpt-none"), `spec.model: the compat API serves no model "gpt-none"`)
	cliWant(t, owner.fails(t, 1, "agents", "create", "x", "--model", "palyra-echo", "--tool", "a.b,selector=x in (y"), "spec.tools[0].node_selector")

	// Update: without --expected-revision it expects the revision it read, and says so.
	code, out, stderr = owner.run(t, "", "agents", "update", "helper", "--description", "fleet helper", "--max-tokens", "5000")
	if code != 0 || !strings.Contains(stderr, "note: updating revision 1 of agent helper") {
		t.Fatalf("update: exit code %d\n%s\n%s", code, out, stderr)
	}
	rows = statusTable(t, strings.SplitN(out, "\n\n", 2)[0])
	if rows["Revision"] != "2" || rows["Description"] != "fleet helper" || rows["Limits"] != "12 steps, 16 tool calls, 5000 tokens, 1m30s" {
		t.Errorf("update printed %q", rows)
	}
	cliWant(t, owner.fails(t, 1, "agents", "update", "helper", "--max-steps", "3", "--expected-revision", "1"), "revision 2, not 1")
	code, out, stderr = owner.run(t, "", "agents", "update", "helper", "--name", "fleet", "--no-tools", "--expected-revision", "2")
	if code != 0 || strings.Contains(stderr, "note:") || !strings.Contains(out, "Tools          none") {
		t.Errorf("rename: exit code %d\n%s\n%s", code, out, stderr)
	}

	// The default moves; delete names the revision it expects.
	if out := owner.ok(t, "agents", "set-default", "copy"); out != "Agent copy is the default (no agent was)\n" {
		t.Errorf("set-default copy: %q", out)
	}
	if out := owner.ok(t, "agents", "set-default", "fleet"); out != "Agent fleet is the default (it was copy)\n" {
		t.Errorf("set-default fleet: %q", out)
	}
	if rows := statusTable(t, strings.SplitN(owner.ok(t, "agents", "show", "fleet"), "\n\n", 2)[0]); rows["Default"] != "true" || rows["Revision"] != "3" {
		t.Errorf("show fleet: %q", rows)
	}
	cliWant(t, owner.fails(t, 1, "agents", "delete", "copy", "--expected-revision", "2"), "revision 1, not 2")
	if out := owner.ok(t, "agents", "delete", "copy", "--expected-revision", "1"); !strings.HasPrefix(out, "Deleted agent copy (") {
		t.Errorf("delete: %q", out)
	}
	cliWant(t, owner.fails(t, 1, "agents", "show", "copy"), `there is no agent "copy"`)

	// An operator reads agents and changes none.
	_, secret := owner.createToken(t, "--label", "op", "--role", "operator")
	op := owner.with("PALYRA_TOKEN", secret)
	if out := op.ok(t, "agents", "list"); !strings.Contains(out, "fleet") {
		t.Errorf("operator list:\n%s", out)
	}
	cliWant(t, op.fails(t, 1, "agents", "create", "mine", "--model", "palyra-echo"), "agents.write")
	cliWant(t, op.fails(t, 1, "agents", "set-default", "fleet"), "agents.write")
}
