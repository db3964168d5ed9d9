package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCLICompatUsage creates a token with a daily token budget, spends it through
// `palyra compat chat`, and reads the usage with `palyra compat usage` (table and -o
// json, filters); `auth tokens set-budget` raises and removes the budget; an operator
// may not read the usage.
func TestCLICompatUsage(t *testing.T) {
	t.Parallel()
	d := startCLIDaemon(t, "--compat-model", "palyra-echo")
	owner := newCLIUser(t)
	owner.login(t, d, "owner")
	owner.ok(t, "flags", "set", "compat_api", "on")

	id, secret := owner.createToken(t, "--label", "chat-app", "--role", "operator", "--daily-token-budget", "4")
	if got := statusTable(t, owner.ok(t, "auth", "tokens", "get", id))["Token budget"]; got != "4/day" {
		t.Errorf("tokens get: Token budget %q, want 4/day", got)
	}
	if row := tokenRows(t, owner.ok(t, "auth", "tokens", "list"))[id]; row == nil || row[7] != "4/day" {
		t.Errorf("tokens list: %v, want the budget 4/day last", row)
	}
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}
	op := newCLIUser(t)
	op.ok(t, "auth", "login", "--url", d.url, "--token-file", tokenFile, "--ca-file", d.caFile, "--profile", "op")

	// palyra-echo counts words: 2 prompt and 2 completion tokens spend the budget.
	if out := op.ok(t, "compat", "chat", "--no-stream", "palyra-echo", "one two"); out != "one two\n" {
		t.Errorf("chat: %q", out)
	}
	if code, _, stderr := op.run(t, "", "compat", "chat", "--no-stream", "palyra-echo", "three"); code == 0 ||
		!strings.Contains(stderr, "has used 4 of its daily budget of 4 tokens") || !strings.Contains(stderr, "next UTC midnight") {
		t.Errorf("a call over the budget: exit code %d, stderr %q", code, stderr)
	}

	// The usage, as a table: the row, the totals, the token's budget.
	today := time.Now().UTC().Format(time.DateOnly)
	out := owner.ok(t, "compat", "usage")
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	want := [][]string{
		{"DAY", "TOKEN", "MODEL", "PROVIDER", "REQUESTS", "PROMPT", "COMPLETION", "TOTAL"},
		{today, id, "palyra-echo", "palyra", "1", "2", "2", "4"},
		{"TOTAL", "1", "2", "2", "4"},
		{},
		{"TOKEN", "LABEL", "DAILY", "BUDGET", "USED", "TODAY", "(" + today + ")"},
		{id, "chat-app", "4", "4"},
	}
	if len(lines) != len(want) {
		t.Fatalf("compat usage printed:\n%s", out)
	}
	for i, w := range want {
		if got := strings.Fields(lines[i]); strings.Join(got, " ") != strings.Join(w, " ") {
			t.Errorf("compat usage line %d: %q, want %q", i, lines[i], w)
		}
	}

	// -o json: the RPC's answer.
	var res struct {
		Rows []struct {
			TokenID     string `json:"tokenId"`
			Day         string `json:"day"`
			Model       string `json:"model"`
			TotalTokens string `json:"totalTokens"`
		} `json:"rows"`
		Totals struct {
			Requests string `json:"requests"`
		} `json:"totals"`
		Tokens []struct {
			TokenID          string `json:"tokenId"`
			DailyTokenBudget string `json:"dailyTokenBudget"`
			SpentToday       string `json:"spentToday"`
		} `json:"tokens"`
		Today string `json:"today"`
	}
	if err := json.Unmarshal([]byte(owner.ok(t, "compat", "usage", "--token", strings.ToLower(id), "--since", "30d", "-o", "json")), &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Rows) != 1 || res.Rows[0].TokenID != id || res.Rows[0].Day != today || res.Rows[0].Model != "palyra-echo" ||
		res.Rows[0].TotalTokens != "4" || res.Totals.Requests != "1" || len(res.Tokens) != 1 ||
		res.Tokens[0].DailyTokenBudget != "4" || res.Tokens[0].SpentToday != "4" || res.Today != today {
		t.Errorf("compat usage -o json: %+v", res)
	}
	if out := owner.ok(t, "compat", "usage", "--since", time.Now().UTC().AddDate(0, 0, 2).Format(time.DateOnly)); strings.Contains(out, "palyra-echo") {
		t.Errorf("usage from the day after tomorrow:\n%s", out)
	}
	for _, args := range [][]string{{"--since", "last week"}, {"--token", "nope"}, {"extra"}} {
		if code, _, stderr := owner.run(t, "", append([]string{"compat", "usage"}, args...)...); code != 2 {
			t.Errorf("compat usage %q: exit code %d, want 2 (usage); %s", args, code, stderr)
		}
	}
	if stderr := op.fails(t, 1, "compat", "usage"); !strings.Contains(stderr, "compat.usage.read") {
		t.Errorf("an operator reading the usage: %q does not name the permission", stderr)
	}

	// A raised budget lets the token through again; none removes it.
	if got := statusTable(t, owner.ok(t, "auth", "tokens", "set-budget", id, "100"))["Token budget"]; got != "100/day" {
		t.Errorf("set-budget 100: Token budget %q", got)
	}
	op.ok(t, "compat", "chat", "--no-stream", "palyra-echo", "three")
	if got := statusTable(t, owner.ok(t, "auth", "tokens", "set-budget", id, "none"))["Token budget"]; got != "none" {
		t.Errorf("set-budget none: Token budget %q", got)
	}
	for _, args := range [][]string{{id, "0"}, {id, "-5"}, {id, "lots"}, {id}, {"nope", "10"}} {
		if code, _, stderr := owner.run(t, "", append([]string{"auth", "tokens", "set-budget"}, args...)...); code != 2 {
			t.Errorf("set-budget %q: exit code %d, want 2 (usage); %s", args, code, stderr)
		}
	}
	if code, _, stderr := owner.run(t, "", "auth", "tokens", "create", "--label", "x", "--role", "operator", "--daily-token-budget", "0"); code != 2 {
		t.Errorf("create --daily-token-budget 0: exit code %d, want 2; %s", code, stderr)
	}
}
