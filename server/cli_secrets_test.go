package main

// End-to-end tests of `palyra secrets` against a real palyrad logging at debug level.

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/palyra/palyra/server/internal/store/storetest"
)

// TestCLISecrets walks a secret through set, list, show, reveal, destroy, delete and
// restore as an owner, refuses an admin's reveal, refuses bad input, and finds the
// value nowhere but in the owner's reveals: not in palyrad's debug log, not in the
// audit log, not in any other command's output.
func TestCLISecrets(t *testing.T) {
	t.Parallel()
	cliBinary(t)
	dataDir := t.TempDir()
	d := startDaemon(t, nil, "--listen", "127.0.0.1:0", "--data-dir", dataDir, "--database-url", storetest.URL(t), "--log-level", "debug")
	_, port, _ := net.SplitHostPort(d.addr)
	daemon := &cliDaemon{url: "https://" + d.addr, port: port, dataDir: dataDir,
		caFile: filepath.Join(dataDir, "ca.pem"), tokenFile: filepath.Join(dataDir, "bootstrap-token")}
	owner := newCLIUser(t)
	owner.login(t, daemon, "default")
	const value = "sk-test-9d41c07e"
	var outputs strings.Builder // every output but the reveals'
	run := func(u *cliUser, stdin string, wantCode int, args ...string) (stdout, stderr string) {
		t.Helper()
		code, stdout, stderr := u.run(t, stdin, args...)
		if code != wantCode {
			t.Fatalf("palyra %s: exit code %d, want %d; stdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, wantCode, stdout, stderr)
		}
		if args[1] != "reveal" || code != 0 {
			outputs.WriteString(stdout + stderr)
		}
		return stdout, stderr
	}

	out, _ := run(owner, value, 0, "secrets", "set", "openai", "--description", "OpenAI API key", "--label", "team=ml", "--expected-version", "0")
	rows := statusTable(t, strings.SplitN(out, "\n\n", 2)[0])
	if rows["Name"] != "openai" || rows["Latest version"] != "1" || rows["Labels"] != "team=ml" || rows["Last read"] != "never" {
		t.Errorf("set printed %q", rows)
	}
	file := filepath.Join(t.TempDir(), "value")
	if err := os.WriteFile(file, []byte(value+"-2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, stderr := run(owner, "", 0, "secrets", "set", "openai", "--from-file", file, "--expected-version", "1")
	if !strings.Contains(stderr, "line feed") {
		t.Errorf("set of a value ending in a line feed did not say so: %q", stderr)
	}
	out, _ = run(owner, "", 0, "secrets", "list")
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 2 || !strings.HasPrefix(lines[1], "openai  ") ||
		strings.Fields(lines[1])[1] != "2" {
		t.Errorf("list printed:\n%s", out)
	}
	out, _ = run(owner, "", 0, "secrets", "show", "openai")
	if !strings.Contains(out, "VERSION  CREATED") || strings.Count(out, "  active  kek-") != 2 {
		t.Errorf("show printed:\n%s", out)
	}

	// Reveal: the owner, with a reason; the value as stored, nothing added off a terminal.
	if out, _ := run(owner, "", 0, "secrets", "reveal", "openai", "--reason", "rotate at the provider", "--version", "1"); out != value {
		t.Errorf("reveal of version 1 wrote %q", out)
	}
	if out, _ := run(owner, "", 0, "secrets", "reveal", "openai", "--reason", "check"); out != value+"-2\n" {
		t.Errorf("reveal of the latest wrote %q", out)
	}
	_, stderr = run(owner, "", 2, "secrets", "reveal", "openai")
	cliWant(t, stderr, "--reason is required")
	_, adminSecret := owner.createToken(t, "--label", "admin", "--role", "admin")
	admin := owner.with("PALYRA_TOKEN", adminSecret)
	_, stderr = run(admin, "", 1, "secrets", "reveal", "openai", "--reason", "curious")
	cliWant(t, stderr, "secrets.read")
	run(admin, "", 0, "secrets", "list")

	// Bad input.
	_, stderr = run(owner, "sk-stale", 1, "secrets", "set", "openai", "--expected-version", "1")
	cliWant(t, stderr, "at version 2, not 1")
	_, stderr = run(owner, "", 2, "secrets", "set", "openai", value)
	cliWant(t, stderr, "accepts 1 arg")
	for _, name := range []string{"a/b", "a b", "a\x1bb"} {
		run(owner, "v", 2, "secrets", "set", name)
	}
	_, stderr = run(owner, strings.Repeat("x", 65<<10), 1, "secrets", "set", "big")
	cliWant(t, stderr, "64 KiB")
	_, stderr = run(owner, "", 1, "secrets", "set", "empty")
	cliWant(t, stderr, "empty")

	// Destroy, delete, restore.
	run(owner, "", 0, "secrets", "destroy", "openai", "--version", "1")
	_, stderr = run(owner, "", 1, "secrets", "reveal", "openai", "--version", "1", "--reason", "again")
	cliWant(t, stderr, "destroyed")
	run(owner, "", 2, "secrets", "destroy", "openai")
	run(owner, "", 0, "secrets", "delete", "openai")
	if out, _ := run(owner, "", 0, "secrets", "list"); strings.Contains(out, "openai") {
		t.Errorf("a deleted secret is listed:\n%s", out)
	}
	if out, _ := run(owner, "", 0, "secrets", "list", "--deleted"); !strings.Contains(out, " deleted ") {
		t.Errorf("list --deleted:\n%s", out)
	}
	_, stderr = run(owner, "", 1, "secrets", "reveal", "openai", "--reason", "deleted")
	cliWant(t, stderr, "deleted")
	run(owner, "", 0, "secrets", "restore", "openai")
	if out, _ := run(owner, "", 0, "secrets", "reveal", "openai", "--reason", "restored"); out != value+"-2\n" {
		t.Errorf("reveal after the restore wrote %q", out)
	}

	// A value a terminal would act on goes to a pipe as it is.
	run(owner, "x\x1b[2Jy", 0, "secrets", "set", "ctl")
	if out, _ := run(owner, "", 0, "secrets", "reveal", "ctl", "--reason", "pipe"); out != "x\x1b[2Jy" {
		t.Errorf("reveal to a pipe wrote %q", out)
	}

	audit, _ := run(owner, "", 0, "audit", "list", "-o", "json")
	cliWant(t, audit, `secret:openai version:1 reason:\"rotate at the provider\"`)
	d.stop(t)
	for where, text := range map[string]string{"palyrad's debug log": d.stderr.String(), "the other commands' output": outputs.String()} {
		for _, form := range []string{value, hex.EncodeToString([]byte(value)), base64.StdEncoding.EncodeToString([]byte(value))[:16]} {
			if bytes.Contains([]byte(text), []byte(form)) {
				t.Errorf("%s holds the value (as %q)", where, form)
			}
		}
	}
}

// cliWant fails the test unless out holds want.
func cliWant(t *testing.T, out, want string) {
	t.Helper()
	if !strings.Contains(out, want) {
		t.Errorf("%q lacks %q", out, want)
	}
}
