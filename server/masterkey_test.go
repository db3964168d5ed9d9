package main

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/palyra/palyra/server/internal/identity"
	"github.com/palyra/palyra/server/internal/store/storetest"
)

// TestMasterKeyRotateCommand: `palyrad master-key rotate` puts a new primary first in
// master.key, or with PALYRA_MASTER_KEY prints the new key once and writes nothing; it
// never prints a key it did not make.
func TestMasterKeyRotateCommand(t *testing.T) {
	t.Parallel()
	t.Run("missing file", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		code, stdout, stderr := palyrad(t, nil, "master-key", "rotate", "--data-dir", dir)
		if code != 1 || stdout != "" || !strings.Contains(stderr, identity.MasterKeyFile) {
			t.Errorf("exit code %d, stdout %q, stderr %q; want 1 naming master.key", code, stdout, stderr)
		}
		if _, err := os.Stat(filepath.Join(dir, identity.MasterKeyFile)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("a master.key was created: %v", err)
		}
	})
	t.Run("file", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		old, _, err := identity.LoadKeyring(dir, "")
		if err != nil {
			t.Fatal(err)
		}
		oldRaw, _ := os.ReadFile(filepath.Join(dir, identity.MasterKeyFile))
		code, stdout, stderr := palyrad(t, nil, "master-key", "rotate", "--data-dir", dir)
		if code != 0 {
			t.Fatalf("exit code %d: %s", code, stderr)
		}
		ring, _, err := identity.LoadKeyring(dir, "")
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(ring.IDs()[1:], old.IDs()) {
			t.Errorf("keys after the rotation %v, want a new one, then %v", ring.IDs(), old.IDs())
		}
		for _, id := range ring.IDs() {
			if !strings.Contains(stdout, id) {
				t.Errorf("stdout does not name %s:\n%s", id, stdout)
			}
		}
		if !strings.Contains(stdout, "palyra master-key rewrap") {
			t.Errorf("stdout does not say what comes next:\n%s", stdout)
		}
		if old := strings.TrimSpace(string(oldRaw)); strings.Contains(stdout+stderr, old) {
			t.Error("the output holds the old key")
		}
	})
	t.Run("environment", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		current := identity.GenerateMasterKey()
		code, stdout, stderr := palyrad(t, map[string]string{"PALYRA_MASTER_KEY": current}, "master-key", "rotate", "--data-dir", dir)
		if code != 0 {
			t.Fatalf("exit code %d: %s", code, stderr)
		}
		key := strings.TrimSuffix(stdout, "\n")
		if b, err := base64.StdEncoding.DecodeString(key); err != nil || len(b) != 32 || strings.Contains(key, "\n") {
			t.Fatalf("stdout %q is not one new master key", stdout)
		}
		ring, _, err := identity.LoadKeyring(dir, key+","+current)
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range ring.IDs() {
			if !strings.Contains(stderr, id) {
				t.Errorf("stderr does not name %s:\n%s", id, stderr)
			}
		}
		if strings.Contains(stderr, key) || strings.Contains(stdout+stderr, current) {
			t.Error("a key is on stderr, or the current key is printed")
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Errorf("the data directory holds %d entries, want none", len(entries))
		}
	})
}

// TestMasterKeyRotationFromTheCommandLine: rotate, restart, `palyra master-key rewrap`
// and `status` against a real palyrad; the CA stays the same.
func TestMasterKeyRotationFromTheCommandLine(t *testing.T) {
	t.Parallel()
	dataDir, databaseURL := t.TempDir(), storetest.URL(t)
	d := startDaemon(t, nil, "--listen", "127.0.0.1:0", "--data-dir", dataDir, "--database-url", databaseURL)
	owner, fingerprint := bootstrapToken(t, dataDir), caFingerprint(t, dataDir)
	old, _, err := identity.LoadKeyring(dataDir, "")
	if err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := palyrad(t, nil, "master-key", "rotate", "--data-dir", dataDir); code != 0 {
		t.Fatalf("rotate: %s", stderr)
	}
	ring, _, err := identity.LoadKeyring(dataDir, "")
	if err != nil {
		t.Fatal(err)
	}
	d.stop(t)
	d = startDaemon(t, nil, "--listen", "127.0.0.1:0", "--data-dir", dataDir, "--database-url", databaseURL)
	_, port, _ := net.SplitHostPort(d.addr)
	conn := []string{"--url", "https://localhost:" + port, "--ca-fingerprint", fingerprint}

	code, stdout, stderr := palyra(t, owner, append([]string{"master-key", "status"}, conn...)...)
	if code != 0 || !strings.Contains(stdout, old.Primary().ID()) || !strings.Contains(stdout, ring.Primary().ID()) {
		t.Fatalf("status before the re-wrap: %d\n%s\n%s", code, stdout, stderr)
	}
	code, stdout, stderr = palyra(t, owner, append([]string{"master-key", "rewrap"}, conn...)...)
	if code != 0 || !strings.Contains(stdout, "re-wrapped to "+ring.Primary().ID()) || !strings.Contains(stdout, "ca") {
		t.Fatalf("rewrap: %d\n%s\n%s", code, stdout, stderr)
	}
	code, stdout, stderr = palyra(t, owner, append([]string{"master-key", "status", "-o", "json"}, conn...)...)
	var st struct {
		Usage []struct {
			Kind, KekID string
			Count       string // int64 in protobuf JSON
		}
	}
	if err := json.Unmarshal([]byte(stdout), &st); code != 0 || err != nil {
		t.Fatalf("status after the re-wrap: %d, %v\n%s\n%s", code, err, stdout, stderr)
	}
	if len(st.Usage) != 1 || st.Usage[0].Kind != "ca" || st.Usage[0].KekID != ring.Primary().ID() || st.Usage[0].Count != "1" {
		t.Errorf("usage after the re-wrap: %+v, want the CA's key under %s alone", st.Usage, ring.Primary().ID())
	}
	if got := caFingerprint(t, dataDir); got != fingerprint {
		t.Errorf("the CA changed: %s, then %s", fingerprint, got)
	}
}
