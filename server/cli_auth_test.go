package main

// End-to-end tests of the palyra CLI's access commands (auth, tokens, flags, audit)
// against a real palyrad: the CLI binary runs as a user runs it, with its own
// XDG_CONFIG_HOME for the profiles, and no other environment.

import (
	"encoding/json"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/palyra/palyra/server/internal/store/storetest"
)

// cliDaemon is a palyrad started for CLI tests, with what a user needs to log in.
type cliDaemon struct {
	url         string // https://127.0.0.1:<port>
	port        string
	dataDir     string
	caFile      string // <data-dir>/ca.pem
	fingerprint string // of the CA
	tokenFile   string // <data-dir>/bootstrap-token
}

// startCLIDaemon starts palyrad on its own database and data directory, with more
// flags when given.
func startCLIDaemon(t *testing.T, flags ...string) *cliDaemon {
	t.Helper()
	cliBinary(t) // built before the daemon starts, so that the build does not eat into its timeouts
	dataDir := t.TempDir()
	d := startDaemon(t, nil, append([]string{"--listen", "127.0.0.1:0", "--data-dir", dataDir, "--database-url", storetest.URL(t)}, flags...)...)
	_, port, _ := net.SplitHostPort(d.addr)
	return &cliDaemon{
		url:         "https://" + d.addr,
		port:        port,
		dataDir:     dataDir,
		caFile:      filepath.Join(dataDir, "ca.pem"),
		fingerprint: caFingerprint(t, dataDir),
		tokenFile:   filepath.Join(dataDir, "bootstrap-token"),
	}
}

// bootstrapToken returns the owner's first token.
func (d *cliDaemon) bootstrapToken(t *testing.T) string {
	t.Helper()
	return bootstrapToken(t, d.dataDir)
}

// cliUser is a user of the CLI: a configuration directory of their own and the
// environment the CLI runs with.
type cliUser struct {
	config string // XDG_CONFIG_HOME
	env    map[string]string
}

func newCLIUser(t *testing.T) *cliUser {
	t.Helper()
	config := t.TempDir()
	return &cliUser{config: config, env: map[string]string{"XDG_CONFIG_HOME": config}}
}

// profiles returns the path of the user's profile file.
func (u *cliUser) profiles() string { return filepath.Join(u.config, "palyra", "profiles.toml") }

// with returns a copy of u with more environment.
func (u *cliUser) with(env ...string) *cliUser {
	c := &cliUser{config: u.config, env: map[string]string{}}
	for k, v := range u.env {
		c.env[k] = v
	}
	for i := 0; i+1 < len(env); i += 2 {
		c.env[env[i]] = env[i+1]
	}
	return c
}

// run runs the CLI binary with the user's environment only; stdin is empty (/dev/null,
// not a terminal) unless given.
func (u *cliUser) run(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	return runCLI(t, u.environ(), stdin, args...)
}

// start starts the CLI binary with the user's environment only, as a process of its
// own for commands that run on, e.g. `palyra agents run`.
func (u *cliUser) start(t *testing.T, args ...string) *process {
	t.Helper()
	return startProcess(t, "palyra "+strings.Join(args, " "), cliBinary(t), u.environ(), args...)
}

// environ is the user's environment as KEY=VALUE strings.
func (u *cliUser) environ() []string {
	env := []string{}
	for k, v := range u.env {
		env = append(env, k+"="+v)
	}
	return env
}

// ok runs the CLI and fails the test unless it exits 0; it returns stdout.
func (u *cliUser) ok(t *testing.T, args ...string) string {
	t.Helper()
	code, stdout, stderr := u.run(t, "", args...)
	if code != 0 {
		t.Fatalf("palyra %s: exit code %d, stdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, stdout, stderr)
	}
	return stdout
}

// fails runs the CLI, fails the test unless it exits with code, and returns stderr.
func (u *cliUser) fails(t *testing.T, code int, args ...string) string {
	t.Helper()
	got, stdout, stderr := u.run(t, "", args...)
	if got != code {
		t.Fatalf("palyra %s: exit code %d, want %d; stdout:\n%s\nstderr:\n%s", strings.Join(args, " "), got, code, stdout, stderr)
	}
	return stderr
}

// login logs u in to d with the bootstrap token and the CA file, as profile name.
func (u *cliUser) login(t *testing.T, d *cliDaemon, name string) {
	t.Helper()
	u.ok(t, "auth", "login", "--url", d.url, "--token-file", d.tokenFile, "--ca-file", d.caFile, "--profile", name)
}

// createToken creates a token with the owner's profile and returns its id and secret.
func (u *cliUser) createToken(t *testing.T, args ...string) (id, secret string) {
	t.Helper()
	rows := statusTable(t, u.ok(t, append([]string{"auth", "tokens", "create"}, args...)...))
	id, secret = rows["ID"], rows["Secret"]
	if !regexp.MustCompile(`^[0-9A-Z]{26}$`).MatchString(id) || !strings.HasPrefix(secret, "plr_"+id+"_") {
		t.Fatalf("tokens create printed id %q and a secret that does not name it", id)
	}
	return id, secret
}

// tokenRows parses the table of `auth tokens list` into rows of fields by token id.
func tokenRows(t *testing.T, out string) map[string][]string {
	t.Helper()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if want := []string{"ID", "LABEL", "ROLE", "STATE", "EXPIRES", "LAST", "USED", "CREATED", "BY", "TOKEN", "BUDGET"}; strings.Join(strings.Fields(lines[0]), " ") != strings.Join(want, " ") {
		t.Fatalf("unexpected header %q", lines[0])
	}
	rows := map[string][]string{}
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		if len(f) != 8 {
			t.Fatalf("token row %q does not have 8 columns", l)
		}
		rows[f[0]] = f
	}
	return rows
}

// assertNoProfiles fails when the user's profile file exists.
func assertNoProfiles(t *testing.T, u *cliUser) {
	t.Helper()
	if _, err := os.Stat(u.profiles()); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the profile file was written (%v)", err)
	}
}

// TestCLILogin logs in the ways a user does and checks what is saved, and that failed
// logins save nothing.
func TestCLILogin(t *testing.T) {
	t.Parallel()
	d := startCLIDaemon(t)
	token := d.bootstrapToken(t)
	_, secret, _ := strings.Cut(strings.TrimPrefix(token, "plr_"), "_")
	loggedIn := regexp.MustCompile(`^Logged in to (\S+) as token:([0-9A-Z]{26}) \(role owner, user owner\); profile (\S+)\n$`)

	t.Run("CA file, then status without flags", func(t *testing.T) {
		t.Parallel()
		u := newCLIUser(t)
		code, stdout, stderr := u.run(t, "", "auth", "login", "--url", d.url, "--token-file", d.tokenFile, "--ca-file", d.caFile)
		if code != 0 {
			t.Fatalf("login: exit code %d, stderr:\n%s", code, stderr)
		}
		m := loggedIn.FindStringSubmatch(stdout)
		if m == nil || m[1] != d.url || m[3] != "default" {
			t.Errorf("login printed %q, want it to match %s for %s and profile default", stdout, loggedIn, d.url)
		}
		if strings.Contains(stdout+stderr, secret) {
			t.Error("login printed the token")
		}
		info, err := os.Stat(u.profiles())
		if err != nil {
			t.Fatal(err)
		}
		if info.Mode().Perm() != 0o600 {
			t.Errorf("profiles.toml has mode %v, want 0600", info.Mode().Perm())
		}
		raw, _ := os.ReadFile(u.profiles())
		for _, want := range []string{"current = 'default'", "ca_fingerprint = '" + d.fingerprint + "'", "url = '" + d.url + "'"} {
			if !strings.Contains(string(raw), want) {
				t.Errorf("profiles.toml lacks %q:\n%s", want, raw)
			}
		}
		if strings.Contains(string(raw), "ca.pem") {
			t.Errorf("profiles.toml refers to the CA file instead of pinning it:\n%s", raw)
		}

		rows := statusTable(t, u.ok(t, "status"))
		if !strings.HasPrefix(rows["CA"], d.fingerprint+" ") || rows["Listen"] != strings.TrimPrefix(d.url, "https://") {
			t.Errorf("status after login: CA %q, Listen %q", rows["CA"], rows["Listen"])
		}

		who := statusTable(t, u.ok(t, "auth", "whoami"))
		if who["Principal"] != "token:"+m[2] || who["User"] != "owner" || who["Role"] != "owner" || who["Token"] != m[2] ||
			who["Expires"] != "never" || who["Method"] != "bearer token" || !strings.Contains(who["Permissions"], "tokens.manage") {
			t.Errorf("whoami = %v", who)
		}
		var j struct {
			Principal struct {
				ID          string   `json:"id"`
				Role        string   `json:"role"`
				Permissions []string `json:"permissions"`
			} `json:"principal"`
		}
		if err := json.Unmarshal([]byte(u.ok(t, "auth", "whoami", "-o", "json")), &j); err != nil || j.Principal.Role != "ROLE_OWNER" || j.Principal.ID != "token:"+m[2] {
			t.Errorf("whoami -o json: %+v, %v", j, err)
		}
	})

	t.Run("CA fingerprint and a host name", func(t *testing.T) {
		t.Parallel()
		u := newCLIUser(t)
		url := "https://localhost:" + d.port
		stdout := u.ok(t, "auth", "login", "--url", url, "--token-file", d.tokenFile, "--ca-fingerprint", d.fingerprint, "--profile", "local")
		if m := loggedIn.FindStringSubmatch(stdout); m == nil || m[1] != url || m[3] != "local" {
			t.Errorf("login printed %q", stdout)
		}
		if who := statusTable(t, u.ok(t, "auth", "whoami")); who["Role"] != "owner" {
			t.Errorf("whoami = %v", who)
		}
	})

	t.Run("token on stdin", func(t *testing.T) {
		t.Parallel()
		u := newCLIUser(t)
		code, _, stderr := u.run(t, token+"\n", "auth", "login", "--url", d.url, "--token-file", "-", "--ca-fingerprint", d.fingerprint)
		if code != 0 {
			t.Fatalf("login: exit code %d, stderr:\n%s", code, stderr)
		}
		u.ok(t, "auth", "whoami")
	})

	t.Run("no CA source and no terminal", func(t *testing.T) {
		t.Parallel()
		u := newCLIUser(t)
		stderr := u.fails(t, 1, "auth", "login", "--url", d.url, "--token-file", d.tokenFile)
		if !strings.Contains(stderr, "not a terminal") || !strings.Contains(stderr, "--ca-fingerprint") {
			t.Errorf("stderr does not say to pass --ca-fingerprint:\n%s", stderr)
		}
		assertNoProfiles(t, u)
	})

	t.Run("token on stdin and no CA source", func(t *testing.T) {
		t.Parallel()
		u := newCLIUser(t)
		code, _, stderr := u.run(t, token, "auth", "login", "--url", d.url, "--token-file", "-")
		if code != 1 || !strings.Contains(stderr, "--ca-fingerprint") {
			t.Errorf("exit code %d, stderr:\n%s", code, stderr)
		}
		assertNoProfiles(t, u)
	})

	t.Run("wrong token", func(t *testing.T) {
		t.Parallel()
		u := newCLIUser(t)
		wrong := filepath.Join(t.TempDir(), "token")
		if err := os.WriteFile(wrong, []byte("plr_01JD5ZJ8Q0W1X2Y3Z4A5B6C7D8_bm90LXRoZS1zZWNyZXQ\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		stderr := u.fails(t, 1, "auth", "login", "--url", d.url, "--token-file", wrong, "--ca-file", d.caFile)
		if !strings.Contains(stderr, "not authenticated") || !strings.Contains(stderr, "check the token") {
			t.Errorf("stderr does not tell to check the token:\n%s", stderr)
		}
		if strings.Contains(stderr, "bm90LXRoZS1zZWNyZXQ") {
			t.Errorf("stderr shows the token:\n%s", stderr)
		}
		assertNoProfiles(t, u)
	})

	t.Run("wrong fingerprint", func(t *testing.T) {
		t.Parallel()
		u := newCLIUser(t)
		stderr := u.fails(t, 1, "auth", "login", "--url", d.url, "--token-file", d.tokenFile, "--ca-fingerprint", "sha256:"+strings.Repeat("0", 64))
		if !strings.Contains(stderr, "no CA certificate with fingerprint") {
			t.Errorf("stderr:\n%s", stderr)
		}
		assertNoProfiles(t, u)
	})

	t.Run("usage errors", func(t *testing.T) {
		t.Parallel()
		u := newCLIUser(t)
		for _, args := range [][]string{
			{"auth", "login", "--url", d.url, "--ca-file", d.caFile},
			{"auth", "login", "--url", d.url, "--token", token, "--token-file", d.tokenFile, "--ca-file", d.caFile},
			{"auth", "login", "--token-file", d.tokenFile, "--ca-file", d.caFile},
			{"auth", "login", "--url", d.url, "--token-file", d.tokenFile, "--ca-file", d.caFile, "--ca-fingerprint", d.fingerprint},
			{"auth", "login", "--url", d.url, "--token-file", d.tokenFile, "--ca-fingerprint", "sha256:zz"},
			{"auth", "login", "--url", d.url, "--token-file", d.tokenFile, "--ca-file", d.caFile, "--profile", "Bad Name"},
		} {
			stderr := u.fails(t, 2, args...)
			if strings.Contains(stderr, strings.TrimPrefix(token, "plr_")) {
				t.Errorf("%q: stderr shows the token:\n%s", args, stderr)
			}
		}
		assertNoProfiles(t, u)
	})

	t.Run("not logged in", func(t *testing.T) {
		t.Parallel()
		u := newCLIUser(t)
		stderr := u.fails(t, 1, "auth", "whoami", "--url", d.url, "--ca-file", d.caFile)
		if !strings.Contains(stderr, "not authenticated: no API token was given") || !strings.Contains(stderr, "palyra auth login") {
			t.Errorf("stderr:\n%s", stderr)
		}
		if stderr := u.fails(t, 1, "auth", "whoami"); !strings.Contains(stderr, "no server given") {
			t.Errorf("whoami without anything: %s", stderr)
		}
	})
}

// TestCLITokens creates, lists, rotates and revokes tokens, and uses them.
func TestCLITokens(t *testing.T) {
	t.Parallel()
	d := startCLIDaemon(t)
	owner := newCLIUser(t)
	owner.login(t, d, "default")

	// Create: the secret once on stdout, the warning on stderr.
	code, stdout, stderr := owner.run(t, "", "auth", "tokens", "create", "--label", "ci", "--role", "operator", "--expires-in", "30d", "--rate-limit", "60")
	if code != 0 {
		t.Fatalf("create: exit code %d, stderr:\n%s", code, stderr)
	}
	created := statusTable(t, stdout)
	opID, opSecret := created["ID"], created["Secret"]
	if created["Role"] != "operator" || created["State"] != "active" || created["Rate limit"] != "60/min" || !strings.HasPrefix(opSecret, "plr_"+opID+"_") {
		t.Errorf("create printed %v", created)
	}
	if exp, err := time.Parse(time.RFC3339, created["Expires"]); err != nil || time.Until(exp) < 29*24*time.Hour || time.Until(exp) > 31*24*time.Hour {
		t.Errorf("Expires = %q, want in 30 days", created["Expires"])
	}
	if !strings.Contains(stderr, "will not be shown again") || strings.Contains(stderr, opSecret) {
		t.Errorf("stderr = %q, want the warning and not the secret", stderr)
	}

	// List: active, then as JSON.
	rows := tokenRows(t, owner.ok(t, "auth", "tokens", "list"))
	if r := rows[opID]; r == nil || r[1] != "ci" || r[2] != "operator" || r[3] != "active" || r[5] != "never" || !strings.HasPrefix(r[6], "token:") {
		t.Errorf("list row of %s = %q", opID, r)
	}
	if len(rows) != 2 {
		t.Errorf("list has %d tokens, want the bootstrap token and %s", len(rows), opID)
	}
	var list struct {
		Tokens []struct {
			ID    string `json:"id"`
			State string `json:"state"`
		} `json:"tokens"`
		NextPageToken string `json:"nextPageToken"`
	}
	if err := json.Unmarshal([]byte(owner.ok(t, "auth", "tokens", "list", "-o", "json")), &list); err != nil {
		t.Fatalf("list -o json is not JSON: %v", err)
	}
	if len(list.Tokens) != 2 || list.Tokens[0].ID != opID || list.Tokens[0].State != "TOKEN_STATE_ACTIVE" {
		t.Errorf("list -o json = %+v", list)
	}
	// Paging: one a page, following the pages with --all.
	if rows := tokenRows(t, owner.ok(t, "auth", "tokens", "list", "--limit", "1", "--all")); len(rows) != 2 {
		t.Errorf("list --limit 1 --all has %d tokens, want 2", len(rows))
	}
	if code, stdout, stderr := owner.run(t, "", "auth", "tokens", "list", "--limit", "1"); code != 0 || len(tokenRows(t, stdout)) != 1 || !strings.Contains(stderr, "--all") {
		t.Errorf("list --limit 1: exit code %d, stdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}

	// The operator token works, and cannot manage tokens or flags.
	operator := owner.with("PALYRA_TOKEN", opSecret)
	if who := statusTable(t, operator.ok(t, "auth", "whoami")); who["Role"] != "operator" || who["Token"] != opID {
		t.Errorf("whoami with the operator token = %v", who)
	}
	for _, args := range [][]string{
		{"auth", "tokens", "create", "--label", "x", "--role", "operator"},
		{"flags", "set", "compat_api", "on"},
		{"audit", "list"},
	} {
		if stderr := operator.fails(t, 1, args...); !strings.Contains(stderr, "permission denied") {
			t.Errorf("%q as operator: stderr %q, want permission denied", args, stderr)
		}
	}

	// Get.
	if got := statusTable(t, owner.ok(t, "auth", "tokens", "get", strings.ToLower(opID))); got["ID"] != opID || got["Label"] != "ci" || got["Last used"] == "never" {
		t.Errorf("get = %v, want the token, used", got)
	}
	if stderr := owner.fails(t, 1, "auth", "tokens", "get", "01JD5ZJ8Q0W1X2Y3Z4A5B6C7D8"); !strings.Contains(stderr, "not found") {
		t.Errorf("get of an unknown token: %s", stderr)
	}

	// Revoke: listed as revoked, and the secret stops working.
	revoked := statusTable(t, owner.ok(t, "auth", "tokens", "revoke", opID, "--reason", "test-over"))
	if revoked["State"] != "revoked" || !strings.Contains(revoked["Revoked"], "test-over") {
		t.Errorf("revoke printed %v", revoked)
	}
	rows = tokenRows(t, owner.ok(t, "auth", "tokens", "list", "--state", "revoked"))
	if r := rows[opID]; len(rows) != 1 || r == nil || r[3] != "revoked" {
		t.Errorf("list --state revoked = %v", rows)
	}
	if rows := tokenRows(t, owner.ok(t, "auth", "tokens", "list", "--state", "active")); rows[opID] != nil {
		t.Errorf("the revoked token is listed as active")
	}
	if stderr := operator.fails(t, 1, "auth", "whoami"); !strings.Contains(stderr, "not authenticated") || !strings.Contains(stderr, "PALYRA_TOKEN") {
		t.Errorf("whoami with the revoked token: %s", stderr)
	}
	if stderr := owner.fails(t, 1, "auth", "tokens", "revoke", opID); !strings.Contains(stderr, "not active") {
		t.Errorf("second revoke: %s", stderr)
	}

	// Rotate: a new secret, once; the old one stops working.
	adminID, adminSecret := owner.createToken(t, "--label", "admin-tool", "--role", "admin", "--scope", "nodes.read", "--scope", "status.read")
	code, stdout, stderr = owner.run(t, "", "auth", "tokens", "rotate", adminID)
	if code != 0 {
		t.Fatalf("rotate: exit code %d, stderr:\n%s", code, stderr)
	}
	rotated := statusTable(t, stdout)
	newSecret := rotated["Secret"]
	if rotated["Rotated from"] != adminID || !strings.HasPrefix(newSecret, "plr_"+rotated["ID"]+"_") || newSecret == adminSecret ||
		rotated["Label"] != "admin-tool" || rotated["Scopes"] != "nodes.read,status.read" {
		t.Errorf("rotate printed %v", rotated)
	}
	if !strings.Contains(stderr, "will not be shown again") {
		t.Errorf("rotate's stderr = %q", stderr)
	}
	if stderr := owner.with("PALYRA_TOKEN", adminSecret).fails(t, 1, "auth", "whoami"); !strings.Contains(stderr, "not authenticated") {
		t.Errorf("whoami with the rotated-away token: %s", stderr)
	}
	if who := statusTable(t, owner.with("PALYRA_TOKEN", newSecret).ok(t, "auth", "whoami")); who["Permissions"] != "nodes.read,status.read" {
		t.Errorf("whoami with the new token = %v", who)
	}

	// -o json of create holds the secret.
	var createdJSON struct {
		Token struct {
			ID string `json:"id"`
		} `json:"token"`
		Secret string `json:"secret"`
	}
	if err := json.Unmarshal([]byte(owner.ok(t, "auth", "tokens", "create", "--label", "json", "--role", "operator", "-o", "json")), &createdJSON); err != nil ||
		!strings.HasPrefix(createdJSON.Secret, "plr_"+createdJSON.Token.ID+"_") {
		t.Errorf("create -o json: %+v, %v", createdJSON, err)
	}

	// Usage errors.
	for _, args := range [][]string{
		{"auth", "tokens", "create", "--role", "operator"},
		{"auth", "tokens", "create", "--label", "x"},
		{"auth", "tokens", "create", "--label", "x", "--role", "root"},
		{"auth", "tokens", "create", "--label", "x", "--role", "operator", "--expires-in", "soon"},
		{"auth", "tokens", "create", "--label", "x", "--role", "operator", "--rate-limit", "0"},
		{"auth", "tokens", "list", "--state", "gone"},
		{"auth", "tokens", "list", "--limit", "501"},
		{"auth", "tokens", "get"},
		{"auth", "tokens", "get", "not-an-id"},
		{"auth", "tokens", "revoke", opID, "extra"},
	} {
		owner.fails(t, 2, args...)
	}
}

// TestCLIFlags turns feature flags on and off through their dependency.
func TestCLIFlags(t *testing.T) {
	t.Parallel()
	d := startCLIDaemon(t)
	owner := newCLIUser(t)
	owner.login(t, d, "default")

	flagState := func(out string) map[string]string {
		states := map[string]string{}
		for _, l := range strings.Split(strings.TrimSpace(out), "\n")[1:] {
			f := strings.Fields(l)
			states[f[0]] = f[1]
		}
		return states
	}
	if got := flagState(owner.ok(t, "flags", "list")); got["compat_api"] != "off" || got["compat_streaming"] != "off" {
		t.Errorf("flags at start = %v", got)
	}
	stderr := owner.fails(t, 1, "flags", "set", "compat_streaming", "on")
	if !strings.Contains(stderr, "cannot enable compat_streaming: it depends on compat_api, which is off") {
		t.Errorf("stderr does not give the dependency:\n%s", stderr)
	}
	if got := flagState(owner.ok(t, "flags", "set", "compat_api", "on")); got["compat_api"] != "on" {
		t.Errorf("set compat_api on printed %v", got)
	}
	owner.ok(t, "flags", "set", "compat_streaming", "enable")
	if got := flagState(owner.ok(t, "flags", "list")); got["compat_api"] != "on" || got["compat_streaming"] != "on" {
		t.Errorf("flags after setting = %v", got)
	}
	if stderr := owner.fails(t, 1, "flags", "set", "compat_api", "off"); !strings.Contains(stderr, "cannot disable compat_api: compat_streaming is on") {
		t.Errorf("disabling a dependency: %s", stderr)
	}
	if stderr := owner.fails(t, 1, "flags", "set", "no_such_flag", "on"); !strings.Contains(stderr, "not found") {
		t.Errorf("unknown flag: %s", stderr)
	}
	var list struct {
		Flags []struct {
			Key     string `json:"key"`
			Enabled bool   `json:"enabled"`
		} `json:"flags"`
	}
	if err := json.Unmarshal([]byte(owner.ok(t, "flags", "list", "-o", "json")), &list); err != nil || len(list.Flags) < 2 {
		t.Errorf("flags list -o json: %+v, %v", list, err)
	}
	for _, args := range [][]string{
		{"flags", "set", "compat_api", "maybe"},
		{"flags", "set", "compat_api"},
		{"flags", "set", "Compat", "on"},
		{"flags", "set", "compat_api", "on", "now"},
	} {
		owner.fails(t, 2, args...)
	}
}

// TestCLIAudit lists the audit log after a change and verifies its chain.
func TestCLIAudit(t *testing.T) {
	t.Parallel()
	d := startCLIDaemon(t)
	owner := newCLIUser(t)
	owner.login(t, d, "default")
	ownerID := statusTable(t, owner.ok(t, "auth", "whoami"))["Token"]
	tokenID, _ := owner.createToken(t, "--label", "audited", "--role", "operator")

	const procedure = "/palyra.access.v1.AccessService/CreateToken"
	out := owner.ok(t, "audit", "list", "--procedure", procedure, "--since", "1h")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || strings.Join(strings.Fields(lines[0]), " ") != "SEQ TIME PRINCIPAL PROCEDURE TARGET OUTCOME CODE REMOTE REPLICA" {
		t.Fatalf("audit list:\n%s", out)
	}
	f := strings.Fields(lines[1])
	if len(f) != 9 || f[2] != "token:"+ownerID || f[3] != procedure || f[4] != "token:"+tokenID || f[5] != "success" || f[6] != "ok" || f[7] != "127.0.0.1" || len(f[8]) != 26 {
		t.Errorf("audit row = %q", f)
	}
	if out := owner.ok(t, "audit", "list", "--procedure", procedure, "--until", "1h"); strings.Count(out, "\n") != 1 {
		t.Errorf("audit list --until 1h shows events:\n%s", out)
	}
	var events struct {
		Events []struct {
			Procedure string `json:"procedure"`
		} `json:"events"`
	}
	if err := json.Unmarshal([]byte(owner.ok(t, "audit", "list", "--all", "-o", "json")), &events); err != nil || len(events.Events) == 0 {
		t.Errorf("audit list -o json: %+v, %v", events, err)
	}

	verdict := owner.ok(t, "audit", "verify")
	if !regexp.MustCompile(`^audit log intact: [1-9][0-9]* events, head #[1-9][0-9]* [0-9a-f]{64}\n$`).MatchString(verdict) {
		t.Errorf("audit verify printed %q", verdict)
	}
	var v struct {
		Intact bool `json:"intact"`
	}
	if err := json.Unmarshal([]byte(owner.ok(t, "audit", "verify", "-o", "json")), &v); err != nil || !v.Intact {
		t.Errorf("audit verify -o json: %+v, %v", v, err)
	}
	for _, args := range [][]string{
		{"audit", "list", "--outcome", "maybe"},
		{"audit", "list", "--since", "yesterday"},
		{"audit", "list", "--since", "1h", "--until", "2h"},
		{"audit", "verify", "now"},
	} {
		owner.fails(t, 2, args...)
	}
}

// TestCLIProfiles keeps two profiles, selects between them with --profile,
// PALYRA_PROFILE and `profiles use`, and logs out of one.
func TestCLIProfiles(t *testing.T) {
	t.Parallel()
	d := startCLIDaemon(t)
	u := newCLIUser(t)
	u.login(t, d, "admin")
	_, opSecret := u.createToken(t, "--label", "ops", "--role", "operator")
	opFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(opFile, []byte(opSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	u.ok(t, "auth", "login", "--url", "https://localhost:"+d.port, "--token-file", opFile, "--ca-fingerprint", d.fingerprint, "--profile", "ops")

	role := func(u *cliUser, args ...string) string {
		t.Helper()
		return statusTable(t, u.ok(t, append([]string{"auth", "whoami"}, args...)...))["Role"]
	}
	if got := role(u); got != "operator" {
		t.Errorf("the last login is current: role %q, want operator", got)
	}
	if got := role(u, "--profile", "admin"); got != "owner" {
		t.Errorf("--profile admin: role %q, want owner", got)
	}
	if got := role(u.with("PALYRA_PROFILE", "admin")); got != "owner" {
		t.Errorf("PALYRA_PROFILE=admin: role %q, want owner", got)
	}
	if got := role(u.with("PALYRA_PROFILE", "admin"), "--profile", "ops"); got != "operator" {
		t.Errorf("--profile over PALYRA_PROFILE: role %q, want operator", got)
	}

	out := u.ok(t, "auth", "profiles", "list")
	if strings.Contains(out, "plr_") {
		t.Errorf("profiles list shows a token:\n%s", out)
	}
	current := regexp.MustCompile(`(?m)^\*\s+ops\s+https://localhost:` + d.port + `\s+` + d.fingerprint + `\s+yes$`)
	if !current.MatchString(out) || !regexp.MustCompile(`(?m)^\s+admin\s+`+regexp.QuoteMeta(d.url)+`\s+`+d.fingerprint+`\s+yes$`).MatchString(out) {
		t.Errorf("profiles list:\n%s", out)
	}
	u.ok(t, "auth", "profiles", "use", "admin")
	if got := role(u); got != "owner" {
		t.Errorf("after profiles use admin: role %q", got)
	}
	if stderr := u.fails(t, 1, "auth", "whoami", "--profile", "nope"); !strings.Contains(stderr, `no profile "nope"`) {
		t.Errorf("unknown profile: %s", stderr)
	}

	u.ok(t, "auth", "logout", "--profile", "ops")
	if stderr := u.fails(t, 1, "auth", "whoami", "--profile", "ops"); !strings.Contains(stderr, "no API token was given") {
		t.Errorf("whoami after logout: %s", stderr)
	}
	if got := role(u); got != "owner" {
		t.Errorf("logout of ops changed the current profile: role %q", got)
	}
	u.ok(t, "auth", "logout", "--profile", "ops", "--forget")
	if out := u.ok(t, "auth", "profiles", "list"); strings.Contains(out, "ops") {
		t.Errorf("ops is still listed after --forget:\n%s", out)
	}

	// A profile file that others may read is refused, not used.
	if err := os.Chmod(u.profiles(), 0o644); err != nil {
		t.Fatal(err)
	}
	if stderr := u.fails(t, 1, "status"); !strings.Contains(stderr, "chmod 600") {
		t.Errorf("status with an open profile file: %s", stderr)
	}
}
