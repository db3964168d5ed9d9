package profile_test

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/palyra/palyra/cli/internal/profile"
)

const fp = "sha256:fabd539369598d55ccae908a97924477f9eca9b3cd0fba7275d7da5a67503870"

// TestProfileRoundTrip saves profiles and reads them back, and checks the file's and
// the directory's modes and that no temporary file is left behind.
func TestProfileRoundTrip(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "config", "palyra", profile.FileName)
	f := &profile.File{Current: "prod"}
	f.Put("prod", profile.Profile{URL: "https://prod:7443", Token: "plr_01JD5ZJ8Q0W1X2Y3Z4A5B6C7D8_secret", CAFingerprint: fp})
	f.Put("dev-1", profile.Profile{URL: "https://127.0.0.1:7443", CAFingerprint: fp})
	if err := profile.Save(path, f); err != nil {
		t.Fatal(err)
	}
	got, err := profile.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, f) {
		t.Errorf("loaded %+v, want %+v", got, f)
	}
	if names := got.Names(); !reflect.DeepEqual(names, []string{"dev-1", "prod"}) {
		t.Errorf("Names() = %q", names)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if mode := info.Mode().Perm(); mode != 0o600 {
		t.Errorf("file mode %v, want 0600", mode)
	}
	dir, err := os.Stat(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if mode := dir.Mode().Perm(); mode != 0o700 {
		t.Errorf("directory mode %v, want 0700", mode)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("the directory holds %d entries, want only %s", len(entries), profile.FileName)
	}
	raw, _ := os.ReadFile(path)
	for _, want := range []string{`current = 'prod'`, `[profiles.prod]`, `url = 'https://prod:7443'`, `ca_fingerprint = '` + fp + `'`} {
		if !strings.Contains(string(raw), want) {
			t.Errorf("the file lacks %q:\n%s", want, raw)
		}
	}

	// A second save replaces the file, keeping its mode.
	got.Put("prod", profile.Profile{URL: "https://prod:7443", CAFingerprint: fp})
	if err := profile.Save(path, got); err != nil {
		t.Fatal(err)
	}
	again, err := profile.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := again.Get("prod"); p.Token != "" {
		t.Error("the token survived a save without it")
	}
}

// TestProfileMissingFile checks that a missing file is an empty set of profiles.
func TestProfileMissingFile(t *testing.T) {
	t.Parallel()
	f, err := profile.Load(filepath.Join(t.TempDir(), "nope", profile.FileName))
	if err != nil {
		t.Fatal(err)
	}
	if f.Current != "" || len(f.Profiles) != 0 {
		t.Errorf("got %+v, want nothing", f)
	}
}

// TestProfileRefusesOpenPermissions checks that a file its group or others can read is
// refused with a message that says how to fix it, and is not read.
func TestProfileRefusesOpenPermissions(t *testing.T) {
	t.Parallel()
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o660} {
		path := filepath.Join(t.TempDir(), profile.FileName)
		if err := os.WriteFile(path, []byte("current = 'x'\n[profiles.x]\nurl = 'https://x'\ntoken = 'plr_secret'\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		_, err := profile.Load(path)
		var insecure *profile.InsecureError
		if !errors.As(err, &insecure) {
			t.Fatalf("mode %v: Load returned %v, want an InsecureError", mode, err)
		}
		if msg := err.Error(); !strings.Contains(msg, "chmod 600 "+path) || strings.Contains(msg, "plr_secret") {
			t.Errorf("mode %v: message %q does not say to chmod 600 the file (or shows the token)", mode, msg)
		}
	}
}

// TestProfileCurrentAndDelete checks the current profile through Put, Delete and a
// reload.
func TestProfileCurrentAndDelete(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), profile.FileName)
	f := &profile.File{}
	f.Put("a", profile.Profile{URL: "https://a:7443"})
	f.Put("b", profile.Profile{URL: "https://b:7443"})
	f.Current = "a"
	if err := profile.Save(path, f); err != nil {
		t.Fatal(err)
	}
	f.Current = "b"
	if err := profile.Save(path, f); err != nil {
		t.Fatal(err)
	}
	if got, _ := profile.Load(path); got.Current != "b" {
		t.Errorf("current = %q, want b", got.Current)
	}
	f.Delete("b")
	if f.Current != "" {
		t.Errorf("after deleting the current profile, current = %q", f.Current)
	}
	if err := profile.Save(path, f); err != nil {
		t.Fatal(err)
	}
	got, _ := profile.Load(path)
	if _, ok := got.Get("b"); ok || got.Current != "" {
		t.Errorf("after delete: %+v", got)
	}
	f.Current = "nope"
	if err := profile.Save(path, f); err == nil {
		t.Error("saved a current profile that does not exist")
	}
}

// TestProfileNames checks the profile name rule.
func TestProfileNames(t *testing.T) {
	t.Parallel()
	good := []string{"default", "a", "0", "prod-eu_1", strings.Repeat("a", 32)}
	bad := []string{"", "Prod", "-a", "_a", "a b", "a.b", "a/b", "é", strings.Repeat("a", 33), "../x"}
	for _, n := range good {
		if err := profile.CheckName(n); err != nil {
			t.Errorf("CheckName(%q) = %v, want nil", n, err)
		}
	}
	for _, n := range bad {
		if err := profile.CheckName(n); err == nil {
			t.Errorf("CheckName(%q) = nil, want an error", n)
		}
	}
	path := filepath.Join(t.TempDir(), profile.FileName)
	if err := os.WriteFile(path, []byte("[profiles.Bad]\nurl = 'https://x'\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := profile.Load(path); err == nil || !strings.Contains(err.Error(), `"Bad"`) {
		t.Errorf("Load of a file with a bad name: %v", err)
	}
}

// TestProfileRejectsUnknownSettings checks that a typo in the file is reported.
func TestProfileRejectsUnknownSettings(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), profile.FileName)
	if err := os.WriteFile(path, []byte("[profiles.a]\nurl = 'https://x'\nca_fingerprnt = 'sha256:00'\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := profile.Load(path); err == nil || !strings.Contains(err.Error(), "ca_fingerprnt") {
		t.Errorf("Load = %v, want an error naming ca_fingerprnt", err)
	}
}

// TestProfilePath checks where the file is looked for.
func TestProfilePath(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		env  map[string]string
		want string
	}{
		"XDG_CONFIG_HOME":          {map[string]string{"XDG_CONFIG_HOME": "/x", "HOME": "/h"}, "/x/palyra/profiles.toml"},
		"HOME":                     {map[string]string{"HOME": "/h"}, "/h/.config/palyra/profiles.toml"},
		"relative XDG_CONFIG_HOME": {map[string]string{"XDG_CONFIG_HOME": "rel", "HOME": "/h"}, "/h/.config/palyra/profiles.toml"},
		"neither":                  {map[string]string{}, ""},
	}
	for name, tt := range tests {
		got, err := profile.Path(func(k string) string { return tt.env[k] })
		if tt.want == "" {
			if !errors.Is(err, profile.ErrNoPath) {
				t.Errorf("%s: Path = %q, %v; want ErrNoPath", name, got, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("%s: Path = %q, %v; want %q", name, got, err, tt.want)
		}
	}
}
