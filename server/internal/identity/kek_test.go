package identity_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/palyra/palyra/server/internal/identity"
)

// writeMasterKey writes a master key file with exactly the given mode (the umask does
// not apply to Chmod).
func writeMasterKey(t *testing.T, dir, content string, mode os.FileMode) string {
	t.Helper()
	path := filepath.Join(dir, identity.MasterKeyFile)
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	return path
}

// loadKEK loads the ring as palyrad does and returns its primary.
func loadKEK(dataDir, env string) (*identity.KeyEncryptionKey, identity.KeySource, error) {
	ring, source, err := identity.LoadKeyring(dataDir, env)
	if err != nil {
		return nil, source, err
	}
	return ring.Primary(), source, nil
}

// sameKey reports whether what a seals, b opens: equal IDs alone would not prove that
// the AES keys are equal.
func sameKey(t *testing.T, a, b *identity.KeyEncryptionKey) bool {
	t.Helper()
	plaintext, aad := []byte("the CA's private key"), []byte("row-1")
	nonce, sealed := a.Seal(plaintext, aad)
	opened, err := b.Open(nonce, sealed, aad)
	return err == nil && bytes.Equal(opened, plaintext)
}

func TestLoadKeyringCreatesThenReadsTheFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, identity.MasterKeyFile)

	created, source, err := loadKEK(dir, "")
	if err != nil {
		t.Fatalf("first load: %v", err)
	}
	if source != identity.KeySourceCreated {
		t.Errorf("first load: source %q, want %q", source, identity.KeySourceCreated)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("master key file: %v", err)
	}
	if fi.Mode().Perm() != 0o600 || !fi.Mode().IsRegular() {
		t.Errorf("master key file mode %v, want a regular file with -rw-------", fi.Mode())
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if master, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(raw))); err != nil || len(master) != 32 {
		t.Errorf("master key file holds %q, want 32 bytes in base64", raw)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("data directory holds %d entries, want only %s", len(entries), identity.MasterKeyFile)
	}

	loaded, source, err := loadKEK(dir, "")
	if err != nil {
		t.Fatalf("second load: %v", err)
	}
	if source != identity.KeySourceFile {
		t.Errorf("second load: source %q, want %q", source, identity.KeySourceFile)
	}
	if loaded.ID() != created.ID() || !sameKey(t, created, loaded) {
		t.Errorf("second load gave key %s, want the created %s", loaded.ID(), created.ID())
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(after, raw) {
		t.Error("second load rewrote the master key file")
	}

	// The key depends on the master key only: the file's content given as
	// PALYRA_MASTER_KEY is the same key.
	fromEnv, source, err := loadKEK(t.TempDir(), string(raw))
	if err != nil || source != identity.KeySourceEnv {
		t.Fatalf("load the file's content from the environment: %v, source %q", err, source)
	}
	if fromEnv.ID() != created.ID() || !sameKey(t, created, fromEnv) {
		t.Errorf("same master key from the environment gave %s, want %s", fromEnv.ID(), created.ID())
	}
}

func TestLoadKeyringEnvironmentWins(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	fromFile, _, err := loadKEK(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	env := identity.GenerateMasterKey()
	fromEnv, source, err := loadKEK(dir, env)
	if err != nil {
		t.Fatalf("load from the environment: %v", err)
	}
	if source != identity.KeySourceEnv {
		t.Errorf("source %q, want %q", source, identity.KeySourceEnv)
	}
	if fromEnv.ID() == fromFile.ID() || sameKey(t, fromFile, fromEnv) {
		t.Errorf("environment key %s is the file's key %s", fromEnv.ID(), fromFile.ID())
	}
	again, _, err := loadKEK(t.TempDir(), env)
	if err != nil || again.ID() != fromEnv.ID() || !sameKey(t, fromEnv, again) {
		t.Errorf("the same environment value gave another key (%v)", err)
	}

	// With the key in the environment, no file is created.
	empty := t.TempDir()
	if _, _, err := loadKEK(empty, env); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(empty, identity.MasterKeyFile)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a master key file was created although the environment had the key: %v", err)
	}
}

func TestLoadKeyringRejectsBadEnvironment(t *testing.T) {
	t.Parallel()
	cases := map[string]string{
		"not base64":            "this is not base64!",
		"too short":             base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 16)),
		"too long":              base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 33)),
		"hex instead of base64": strings.Repeat("ab", 32),
		"URL-safe alphabet":     base64.URLEncoding.EncodeToString(bytes.Repeat([]byte{0xfb}, 32)),
	}
	for name, value := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			k, _, err := loadKEK(dir, value)
			if err == nil {
				t.Fatalf("accepted %q as a master key (id %s)", value, k.ID())
			}
			if !strings.Contains(err.Error(), "PALYRA_MASTER_KEY") {
				t.Errorf("error %q does not name PALYRA_MASTER_KEY", err)
			}
			if strings.Contains(err.Error(), value) {
				t.Errorf("error %q repeats the value", err)
			}
			// A bad environment value is an error, not a reason to fall back to a file.
			if _, err := os.Stat(filepath.Join(dir, identity.MasterKeyFile)); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("a master key file was created: %v", err)
			}
		})
	}
}

func TestLoadKeyringFileMode(t *testing.T) {
	t.Parallel()
	cases := map[string]struct {
		mode    os.FileMode
		refused bool
	}{
		"owner read-write": {mode: 0o600},
		"owner read-only":  {mode: 0o400},
		"world-readable":   {mode: 0o644, refused: true},
		"group-readable":   {mode: 0o640, refused: true},
		"others-writable":  {mode: 0o602, refused: true},
		"group-executable": {mode: 0o610, refused: true},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			content := identity.GenerateMasterKey() + "\n"
			path := writeMasterKey(t, dir, content, tc.mode)
			k, source, err := loadKEK(dir, "")
			if !tc.refused {
				if err != nil || source != identity.KeySourceFile {
					t.Fatalf("mode %04o: %v (source %q), want the file's key", tc.mode, err, source)
				}
				want, _, _ := loadKEK(t.TempDir(), content)
				if k.ID() != want.ID() {
					t.Errorf("key %s, want %s from the file's content", k.ID(), want.ID())
				}
				return
			}
			if err == nil {
				t.Fatalf("mode %04o accepted", tc.mode)
			}
			if !strings.Contains(err.Error(), "chmod 600") {
				t.Errorf("error %q does not suggest chmod 600", err)
			}
			if after, _ := os.ReadFile(path); string(after) != content {
				t.Error("the refused file was changed")
			}
		})
	}
}

// A master.key that cannot be read as a key is an error: replacing it with a new key
// would orphan the CA sealed under the old one.
func TestLoadKeyringKeepsACorruptFile(t *testing.T) {
	t.Parallel()
	cases := map[string]string{
		"empty":     "",
		"garbage":   "not a key at all\n",
		"too short": base64.StdEncoding.EncodeToString([]byte("short")) + "\n",
	}
	for name, content := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			path := writeMasterKey(t, dir, content, 0o600)
			if _, _, err := loadKEK(dir, ""); err == nil {
				t.Fatal("a corrupt master key file was accepted")
			}
			if after, _ := os.ReadFile(path); string(after) != content {
				t.Errorf("the corrupt file was replaced by %q", after)
			}
		})
	}
}

// Two replicas (or two processes of one) starting together on an empty data
// directory end with one master key.
func TestLoadKeyringConcurrentFirstLoads(t *testing.T) {
	t.Parallel()
	const loaders = 8
	for round := range 20 {
		dir := t.TempDir()
		keys := make([]*identity.KeyEncryptionKey, loaders)
		sources := make([]identity.KeySource, loaders)
		errs := make([]error, loaders)
		var wg sync.WaitGroup
		for i := range loaders {
			wg.Go(func() { keys[i], sources[i], errs[i] = loadKEK(dir, "") })
		}
		wg.Wait()
		created := 0
		for i := range loaders {
			if errs[i] != nil {
				t.Fatalf("round %d, loader %d: %v", round, i, errs[i])
			}
			if sources[i] == identity.KeySourceCreated {
				created++
			}
			if keys[i].ID() != keys[0].ID() || !sameKey(t, keys[0], keys[i]) {
				t.Errorf("round %d: loader %d has key %s, loader 0 has %s", round, i, keys[i].ID(), keys[0].ID())
			}
		}
		if created != 1 {
			t.Errorf("round %d: %d loaders report creating the key, want 1", round, created)
		}
		final, source, err := loadKEK(dir, "")
		if err != nil || source != identity.KeySourceFile || final.ID() != keys[0].ID() {
			t.Errorf("round %d: the file holds %v (%v), want the key they agreed on", round, final, err)
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 1 {
			t.Errorf("round %d: data directory holds %d entries, want only %s", round, len(entries), identity.MasterKeyFile)
		}
	}
}

func TestKeyEncryptionKeySealOpen(t *testing.T) {
	t.Parallel()
	k := newKEK(t)
	plaintext := []byte("-----BEGIN PRIVATE KEY----- pretend")
	aad := []byte("palyra/v1/ca/row-1")
	nonce, sealed := k.Seal(plaintext, aad)

	if bytes.Contains(sealed, plaintext) || bytes.Contains(sealed, []byte("PRIVATE KEY")) {
		t.Error("the ciphertext contains the plaintext")
	}
	opened, err := k.Open(nonce, sealed, aad)
	if err != nil || !bytes.Equal(opened, plaintext) {
		t.Fatalf("round trip: %q, %v", opened, err)
	}
	nonce2, sealed2 := k.Seal(plaintext, aad)
	if bytes.Equal(nonce, nonce2) || bytes.Equal(sealed, sealed2) {
		t.Error("two seals of one plaintext used the same nonce or gave the same ciphertext")
	}

	flip := func(b []byte, i int) []byte {
		c := bytes.Clone(b)
		c[i] ^= 0x01
		return c
	}
	other := newKEK(t)
	cases := map[string]struct {
		k                  *identity.KeyEncryptionKey
		nonce, sealed, aad []byte
	}{
		"another aad":             {k: k, nonce: nonce, sealed: sealed, aad: []byte("palyra/v1/ca/row-2")},
		"no aad":                  {k: k, nonce: nonce, sealed: sealed},
		"flipped ciphertext byte": {k: k, nonce: nonce, sealed: flip(sealed, 0), aad: aad},
		"flipped tag byte":        {k: k, nonce: nonce, sealed: flip(sealed, len(sealed)-1), aad: aad},
		"truncated ciphertext":    {k: k, nonce: nonce, sealed: sealed[:len(sealed)-1], aad: aad},
		"flipped nonce byte":      {k: k, nonce: flip(nonce, 3), sealed: sealed, aad: aad},
		"short nonce":             {k: k, nonce: nonce[:8], sealed: sealed, aad: aad},
		"another nonce":           {k: k, nonce: nonce2, sealed: sealed, aad: aad},
		"another master key":      {k: other, nonce: nonce, sealed: sealed, aad: aad},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if b, err := tc.k.Open(tc.nonce, tc.sealed, tc.aad); err == nil {
				t.Errorf("opened to %q", b)
			}
		})
	}
}

// TestKeyringFindsEveryKeyAndSealsWithThePrimary: the primary seals, and a row sealed
// under an older key is opened by the key the ring finds by the row's key ID.
func TestKeyringFindsEveryKeyAndSealsWithThePrimary(t *testing.T) {
	load := func() *identity.KeyEncryptionKey {
		k, _, err := loadKEK(t.TempDir(), identity.GenerateMasterKey())
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	older, primary := load(), load()
	ring := identity.NewKeyring(primary, older)
	if ring.Primary() != primary {
		t.Fatalf("primary = %s, want %s", ring.Primary().ID(), primary.ID())
	}
	nonce, sealed := older.Seal([]byte("data key"), []byte("row-1"))
	k, ok := ring.Key(older.ID())
	if !ok {
		t.Fatalf("the ring does not find %s", older.ID())
	}
	if got, err := k.Open(nonce, sealed, []byte("row-1")); err != nil || string(got) != "data key" {
		t.Fatalf("open with the found key = %q, %v", got, err)
	}
	if _, ok := ring.Key(load().ID()); ok {
		t.Fatal("the ring finds a key it does not hold")
	}
}
