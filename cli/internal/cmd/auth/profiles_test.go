package auth_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/palyra/palyra/cli/internal/cmd"
	"github.com/palyra/palyra/cli/internal/cmd/deps"
	"github.com/palyra/palyra/cli/internal/profile"
	"github.com/palyra/palyra/internal/cliusage"
)

const (
	secret = "plr_01JD5ZJ8Q0W1X2Y3Z4A5B6C7D8_dG9wLXNlY3JldA"
	fp     = "sha256:fabd539369598d55ccae908a97924477f9eca9b3cd0fba7275d7da5a67503870"
)

// palyra runs the command tree in-process with XDG_CONFIG_HOME at dir; it makes no
// network call for the commands used here.
func palyra(t *testing.T, dir string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	d := &deps.Deps{
		Stdout: &out, Stderr: &errOut, Stdin: strings.NewReader(""),
		Getenv: func(k string) string { return map[string]string{"XDG_CONFIG_HOME": dir}[k] },
	}
	root := cmd.NewRootCommand(d)
	root.SetArgs(args)
	err = root.ExecuteContext(context.Background())
	return out.String(), errOut.String(), err
}

// setup writes two profiles, prod (current, with a token) and dev (without).
func setup(t *testing.T) (dir, path string) {
	t.Helper()
	dir = t.TempDir()
	path = filepath.Join(dir, "palyra", profile.FileName)
	f := &profile.File{Current: "prod"}
	f.Put("prod", profile.Profile{URL: "https://prod.example:7443", Token: secret, CAFingerprint: fp})
	f.Put("dev", profile.Profile{URL: "https://127.0.0.1:7443", CAFingerprint: fp})
	if err := profile.Save(path, f); err != nil {
		t.Fatal(err)
	}
	return dir, path
}

// TestProfilesListNeverShowsTheToken lists the profiles as a table and as JSON.
func TestProfilesListNeverShowsTheToken(t *testing.T) {
	t.Parallel()
	dir, path := setup(t)
	out, _, err := palyra(t, dir, "auth", "profiles", "list")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "CURRENT") {
		t.Fatalf("unexpected table:\n%s", out)
	}
	if f := strings.Fields(lines[2]); len(f) != 5 || f[0] != "*" || f[1] != "prod" || f[2] != "https://prod.example:7443" || f[3] != fp || f[4] != "yes" {
		t.Errorf("prod row = %q", lines[2])
	}
	if f := strings.Fields(lines[1]); len(f) != 4 || f[0] != "dev" || f[3] != "no" {
		t.Errorf("dev row = %q", lines[1])
	}
	jsonOut, _, err := palyra(t, dir, "auth", "profiles", "list", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Path     string
		Current  string
		Profiles []struct {
			Name     string
			HasToken bool
		}
	}
	if err := json.Unmarshal([]byte(jsonOut), &v); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, jsonOut)
	}
	if v.Path != path || v.Current != "prod" || len(v.Profiles) != 2 || !v.Profiles[1].HasToken {
		t.Errorf("JSON = %+v", v)
	}
	for _, o := range []string{out, jsonOut} {
		if strings.Contains(o, "dG9wLXNlY3JldA") || strings.Contains(o, "plr_") {
			t.Errorf("profiles list shows the token:\n%s", o)
		}
	}
}

// TestProfilesUse switches the current profile, and refuses names that are bad or
// unknown.
func TestProfilesUse(t *testing.T) {
	t.Parallel()
	dir, path := setup(t)
	out, _, err := palyra(t, dir, "auth", "profiles", "use", "dev")
	if err != nil || out != "Now using profile dev (https://127.0.0.1:7443)\n" {
		t.Fatalf("use dev: %q, %v", out, err)
	}
	if f, _ := profile.Load(path); f.Current != "dev" {
		t.Errorf("current = %q, want dev", f.Current)
	}
	if _, _, err := palyra(t, dir, "auth", "profiles", "use", "Dev"); !cliusage.Is(err) {
		t.Errorf("use Dev: %v, want a usage error", err)
	}
	if _, _, err := palyra(t, dir, "auth", "profiles", "use", "nope"); err == nil || cliusage.Is(err) || !strings.Contains(err.Error(), `no profile "nope"`) {
		t.Errorf("use nope: %v, want a failure naming it", err)
	}
	if _, _, err := palyra(t, dir, "auth", "profiles", "use"); !cliusage.Is(err) {
		t.Errorf("use without a name: %v, want a usage error", err)
	}
}

// TestProfilesLogout removes the token of the current profile, then forgets another.
func TestProfilesLogout(t *testing.T) {
	t.Parallel()
	dir, path := setup(t)
	out, errOut, err := palyra(t, dir, "auth", "logout")
	if err != nil || out != "Logged out of profile prod (https://prod.example:7443)\n" {
		t.Fatalf("logout: %q, %v", out, err)
	}
	if !strings.Contains(errOut, "palyra auth tokens revoke 01JD5ZJ8Q0W1X2Y3Z4A5B6C7D8") || strings.Contains(errOut, "dG9wLXNlY3JldA") {
		t.Errorf("logout's advice: %q", errOut)
	}
	f, _ := profile.Load(path)
	if p, _ := f.Get("prod"); p.Token != "" || p.URL == "" || p.CAFingerprint != fp || f.Current != "prod" {
		t.Errorf("after logout: %+v, current %q", p, f.Current)
	}
	if _, _, err := palyra(t, dir, "auth", "logout", "--profile", "dev", "--forget"); err != nil {
		t.Fatal(err)
	}
	f, _ = profile.Load(path)
	if _, ok := f.Get("dev"); ok || f.Current != "prod" {
		t.Errorf("after forget: %+v", f)
	}
	info, _ := os.Stat(path)
	if info.Mode().Perm() != 0o600 {
		t.Errorf("mode %v after logout", info.Mode().Perm())
	}
}

// TestProfilesInsecureFileRefused checks that every command refuses a profile file
// others may read, instead of using the token in it.
func TestProfilesInsecureFileRefused(t *testing.T) {
	t.Parallel()
	dir, path := setup(t)
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"auth", "profiles", "list"}, {"auth", "whoami"}, {"status"}} {
		_, _, err := palyra(t, dir, args...)
		if err == nil || !strings.Contains(err.Error(), "chmod 600") {
			t.Errorf("%q: %v, want a refusal saying chmod 600", args, err)
		}
	}
}
