package approvals_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/oklog/ulid/v2"

	"github.com/palyra/palyra/cli/internal/cmd/cmdtest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	cmdtest.RemoveBuilt()
	os.Exit(code)
}

// pendingApproval stores a pending approval of a new run's tool-call step on node, with
// input, and returns its id and its run's.
//
// A fixture in plain SQL: the commands are about decisions, so the run and step an
// approval references are written directly (issue 15 leaves moving them to a real run
// open). The run is on a live replica, so that the agents' reaper leaves it alone.
func pendingApproval(t *testing.T, dbURL, node, input string) (id, run string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	run, id = ulid.Make().String(), ulid.Make().String()
	for _, stmt := range []struct {
		sql  string
		args []any
	}{
		{`insert into agent_runs (id, agent_id, agent_name, agent_revision, agent, input, started_by, replica_id, created_at, deadline)
			values ($1, '01JD5ZJ8Q0W1X2Y3Z4A5B6C7A1', 'ops', 1, '{}', '[]', 'token:runner', (select id from replicas where stopped_at is null order by last_seen_at desc limit 1), now(), now() + interval '1 hour')`, []any{run}},
		{`insert into agent_run_steps (run_id, seq, kind, started_at) values ($1, 1, 'tool_call', now())`, []any{run}},
		{`insert into approvals (id, run_id, step_seq, agent_id, agent_name, tool, capability, node_id, input, requested_by, created_at, expire_at)
			values ($1, $2, 1, '01JD5ZJ8Q0W1X2Y3Z4A5B6C7A1', 'ops', 'shell', 'shell.execute', $3, $4, 'token:runner', now(), now() + interval '1 hour')`,
			[]any{id, run, node, input}},
	} {
		if _, err := conn.Exec(ctx, stmt.sql, stmt.args...); err != nil {
			t.Fatalf("fixture: %v", err)
		}
	}
	return id, run
}

// TestApprovalsCommands runs every `palyra approvals` command against a real palyrad:
// list shows the pending ones, show prints the whole input, approve and deny decide
// once, deny needs a reason, and an operator cannot decide.
func TestApprovalsCommands(t *testing.T) {
	t.Parallel()
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	dbURL := cmdtest.Database(t)
	r := cmdtest.StartReplica(t, dbURL, base64.StdEncoding.EncodeToString(key))
	owner := r.Env(r.Owner)
	const node = "01JD5ZJ8Q0W1X2Y3Z4A5B6C7N1"
	first, run1 := pendingApproval(t, dbURL, node, `{"argv": ["sh", "-c", "df -h /"], "timeout_ms": 5000}`)
	second, _ := pendingApproval(t, dbURL, node, `{"argv": ["rm", "-rf", "/tmp/x"]}`)

	res := cmdtest.Expect(t, owner, 0, "approvals", "list")
	cmdtest.WantRow(t, "list", res.Stdout, "ID", "STATE", "AGENT", "TOOL", "CAPABILITY", "NODE", "RUN", "WHEN")
	cmdtest.WantRow(t, "list", res.Stdout, first, "pending", "ops", "shell", "shell.execute", node, run1, "asked")
	cmdtest.WantRow(t, "list", res.Stdout, second, "pending", "ops", "shell", "shell.execute", node)

	res = cmdtest.Expect(t, owner, 0, "approvals", "show", strings.ToLower(first))
	cmdtest.WantRow(t, "show", res.Stdout, "Agent", "ops", "(01JD5ZJ8Q0W1X2Y3Z4A5B6C7A1)")
	cmdtest.WantRow(t, "show", res.Stdout, "Run", run1+",", "step", "1")
	cmdtest.WantRow(t, "show", res.Stdout, "Capability", "shell.execute")
	cmdtest.WantRow(t, "show", res.Stdout, "Node", node)
	// The input, pretty-printed whole.
	cmdtest.WantOutput(t, "show", res.Stdout, "Input:\n{\n  \"argv\": [\n    \"sh\",\n    \"-c\",\n    \"df -h /\"\n  ],\n  \"timeout_ms\": 5000\n}\n")

	// Denying needs a reason: a usage error, nothing sent.
	cmdtest.Expect(t, owner, 2, "approvals", "deny", second)
	cmdtest.Expect(t, owner, 2, "approvals", "approve", first, "--scope", "forever")

	// An operator reads, but cannot decide.
	res = cmdtest.Expect(t, owner, 0, "auth", "tokens", "create", "--label", "ops", "--role", "operator", "-o", "json")
	var created struct{ Secret string }
	if err := json.Unmarshal([]byte(res.Stdout), &created); err != nil || created.Secret == "" {
		t.Fatalf("token: %v\n%s", err, res.Stdout)
	}
	operator := r.Env(created.Secret)
	cmdtest.Expect(t, operator, 0, "approvals", "show", first)
	res = cmdtest.Expect(t, operator, 1, "approvals", "approve", first)
	cmdtest.WantOutput(t, "operator approving", res.Stderr, "approvals.decide")

	res = cmdtest.Expect(t, owner, 0, "approvals", "approve", first, "--scope", "run")
	cmdtest.WantRow(t, "approve", res.Stdout, "State", "approved")
	cmdtest.WantRow(t, "approve", res.Stdout, "Scope", "run")
	res = cmdtest.Expect(t, owner, 0, "approvals", "deny", second, "--reason", "not on this host")
	cmdtest.WantRow(t, "deny", res.Stdout, "State", "denied")
	cmdtest.WantRow(t, "deny", res.Stdout, "Reason", "not", "on", "this", "host")

	// Decisions are final.
	res = cmdtest.Expect(t, owner, 1, "approvals", "deny", first, "--reason", "changed my mind")
	cmdtest.WantOutput(t, "deciding twice", res.Stderr, "is approved", "decisions are final")

	res = cmdtest.Expect(t, owner, 0, "approvals", "list")
	if strings.Contains(res.Stdout, first) || strings.Contains(res.Stdout, second) {
		t.Errorf("list shows decided approvals as pending:\n%s", res.Stdout)
	}
	res = cmdtest.Expect(t, owner, 0, "approvals", "list", "--state", "all", "--run", run1, "-o", "json")
	var listed struct {
		Approvals []struct{ ID, State, Scope, InputJSON string }
	}
	if err := json.Unmarshal([]byte(res.Stdout), &listed); err != nil {
		t.Fatal(err)
	}
	if len(listed.Approvals) != 1 || listed.Approvals[0].ID != first || listed.Approvals[0].State != "APPROVAL_STATE_APPROVED" ||
		listed.Approvals[0].Scope != "APPROVAL_SCOPE_RUN" || !strings.Contains(listed.Approvals[0].InputJSON, "df -h /") {
		t.Errorf("list --run -o json: %s", res.Stdout)
	}
}
