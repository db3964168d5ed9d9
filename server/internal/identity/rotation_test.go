package identity_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/palyra/palyra/server/internal/errdefs"
	"github.com/palyra/palyra/server/internal/identity"
	"github.com/palyra/palyra/server/internal/store"
)

// keyID returns the ID of the key-encryption key of a master key.
func keyID(t *testing.T, key string) string {
	t.Helper()
	ring, _, err := identity.LoadKeyring(t.TempDir(), key)
	if err != nil {
		t.Fatal(err)
	}
	return ring.Primary().ID()
}

// TestLoadKeyringSeveralKeys: master.key and PALYRA_MASTER_KEY hold several keys, the
// primary first; the file may hold comments and blank lines.
func TestLoadKeyringSeveralKeys(t *testing.T) {
	t.Parallel()
	k1, k2, k3 := identity.GenerateMasterKey(), identity.GenerateMasterKey(), identity.GenerateMasterKey()
	want := []string{keyID(t, k1), keyID(t, k2), keyID(t, k3)}

	dir := t.TempDir()
	writeMasterKey(t, dir, "# the primary\n"+k1+"\n\n  # older keys\n"+k2+"\n  "+k3+"  \n", 0o600)
	fromFile, source, err := identity.LoadKeyring(dir, "")
	if err != nil || source != identity.KeySourceFile {
		t.Fatalf("file: %v (source %q)", err, source)
	}
	if !slices.Equal(fromFile.IDs(), want) {
		t.Errorf("file: keys %v, want %v", fromFile.IDs(), want)
	}
	fromEnv, source, err := identity.LoadKeyring(t.TempDir(), k1+", "+k2+","+k3)
	if err != nil || source != identity.KeySourceEnv {
		t.Fatalf("environment: %v (source %q)", err, source)
	}
	if !slices.Equal(fromEnv.IDs(), want) {
		t.Errorf("environment: keys %v, want %v", fromEnv.IDs(), want)
	}
	// Every key of the ring opens what it sealed; the primary is the first.
	for _, id := range want {
		a, _ := fromFile.Key(id)
		b, _ := fromEnv.Key(id)
		if !sameKey(t, a, b) {
			t.Errorf("key %s differs between the file and the environment", id)
		}
	}
	if fromFile.Primary().ID() != want[0] || len(fromFile.Older()) != 2 {
		t.Errorf("primary %s, %d older keys", fromFile.Primary().ID(), len(fromFile.Older()))
	}
}

// TestLoadKeyringRefusesABadKeyNamingIt: a bad or repeated key is an error naming its
// line (file) or position (environment), never the key, and the file is left alone.
func TestLoadKeyringRefusesABadKeyNamingIt(t *testing.T) {
	t.Parallel()
	good, other := identity.GenerateMasterKey(), identity.GenerateMasterKey()
	short := base64.StdEncoding.EncodeToString([]byte("short"))
	files := map[string]struct {
		content, want string
	}{
		"bad third line":   {good + "\n# comment\n" + short + "\n", "line 3"},
		"garbage":          {good + "\n" + other + "\nnot a key\n", "line 3"},
		"repeated key":     {good + "\n" + other + "\n" + good + "\n", "line 3"},
		"only comments":    {"# nothing here\n\n", "holds no key"},
		"bad primary line": {"!!\n" + good + "\n", "line 1"},
	}
	for name, tc := range files {
		t.Run("file/"+name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			path := writeMasterKey(t, dir, tc.content, 0o600)
			_, _, err := identity.LoadKeyring(dir, "")
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) {
				t.Fatalf("error %v, want one naming %s, %s", err, path, tc.want)
			}
			for _, k := range []string{good, other, short} {
				if strings.Contains(err.Error(), k) {
					t.Errorf("error %q repeats a key", err)
				}
			}
			if after, _ := os.ReadFile(path); string(after) != tc.content {
				t.Error("the refused file was changed")
			}
		})
	}
	envs := map[string]struct {
		value, want string
	}{
		"bad second key":  {good + "," + short, "key 2"},
		"empty second":    {good + ",", "key 2"},
		"repeated key":    {good + "," + other + "," + good, "key 3"},
		"bad first key":   {"nope," + good, "key 1"},
		"newline between": {good + "\n" + other, "key 1"},
	}
	for name, tc := range envs {
		t.Run("environment/"+name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			_, _, err := identity.LoadKeyring(dir, tc.value)
			if err == nil || !strings.Contains(err.Error(), "PALYRA_MASTER_KEY") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one naming PALYRA_MASTER_KEY, %s", err, tc.want)
			}
			for _, k := range []string{good, other, short} {
				if strings.Contains(err.Error(), k) {
					t.Errorf("error %q repeats a key", err)
				}
			}
			if _, err := os.Stat(filepath.Join(dir, identity.MasterKeyFile)); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("a master key file was created: %v", err)
			}
		})
	}
}

// TestRotateMasterKeyFile: the new key goes first, the older ones stay after it, the
// file keeps mode 0600; a missing or unsafe file is not rotated.
func TestRotateMasterKeyFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	first, _, err := identity.LoadKeyring(dir, "") // creates master.key
	if err != nil {
		t.Fatal(err)
	}
	second, err := identity.RotateMasterKeyFile(dir, testEpoch)
	if err != nil {
		t.Fatal(err)
	}
	third, err := identity.RotateMasterKeyFile(dir, testEpoch)
	if err != nil {
		t.Fatal(err)
	}
	loaded, _, err := identity.LoadKeyring(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{third.Primary().ID(), second.Primary().ID(), first.Primary().ID()}
	if !slices.Equal(loaded.IDs(), want) || !slices.Equal(third.IDs(), want) || len(slices.Compact(slices.Sorted(slices.Values(want)))) != 3 {
		t.Errorf("keys after two rotations %v (returned %v), want three keys, the newest first: %v", loaded.IDs(), third.IDs(), want)
	}
	path := filepath.Join(dir, identity.MasterKeyFile)
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("master.key after rotation: %v, %v", fi, err)
	}
	raw, _ := os.ReadFile(path)
	if !strings.Contains(string(raw), "# "+third.Primary().ID()+", added 2031-03-14T15:09:26Z") {
		t.Errorf("master.key does not name the new key in a comment:\n%s", raw)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("the data directory holds %d entries, want master.key alone", len(entries))
	}

	if _, err := identity.RotateMasterKeyFile(t.TempDir(), testEpoch); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("rotating a missing master.key: %v, want not-exist", err)
	}
	unsafe := t.TempDir()
	content := identity.GenerateMasterKey() + "\n"
	writeMasterKey(t, unsafe, content, 0o644)
	if _, err := identity.RotateMasterKeyFile(unsafe, testEpoch); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("rotating a world-readable master.key: %v", err)
	}
	if after, _ := os.ReadFile(filepath.Join(unsafe, identity.MasterKeyFile)); string(after) != content {
		t.Error("the refused file was changed")
	}
}

// rewrapAll runs AuthorityKeys.RewrapBatch until nothing is left and returns the count.
func rewrapAll(t *testing.T, s *store.Store, keys *identity.Keyring) (int, error) {
	t.Helper()
	total := 0
	for {
		var n int
		err := s.InTx(t.Context(), func(tx *store.Tx) error {
			var err error
			n, err = identity.AuthorityKeys{}.RewrapBatch(t.Context(), tx, keys, 1)
			return err
		})
		if err != nil || n == 0 {
			return total, err
		}
		total += n
	}
}

// TestAuthorityKeysRewrap: the CA's key is re-sealed under the new primary, and only
// its wrapping changes; a replica that lacks the new key refuses to sign once it has
// read the new wrapping, naming the key, and cannot load the CA.
func TestAuthorityKeysRewrap(t *testing.T) {
	t.Parallel()
	b := setup(t)
	old := b.kek
	newKey := newKEK(t)
	before := activeRow(t, b.store)

	// A ring that lacks the CA's key cannot re-wrap it, and says which key it needs.
	if _, err := rewrapAll(t, b.store, identity.NewKeyring(newKey)); errdefs.KindOf(err) != errdefs.FailedPrecondition ||
		!strings.Contains(err.Error(), old.ID()) {
		t.Fatalf("re-wrap without the old key: %v", err)
	}
	use, err := identity.AuthorityKeys{}.KeyUsage(t.Context(), b.store)
	if err != nil || len(use) != 1 || use[old.ID()] != 1 {
		t.Fatalf("usage before: %v, %v", use, err)
	}

	ring := identity.NewKeyring(newKey, old)
	if n, err := rewrapAll(t, b.store, ring); err != nil || n != 1 {
		t.Fatalf("re-wrap: %d, %v", n, err)
	}
	if n, err := rewrapAll(t, b.store, ring); err != nil || n != 0 {
		t.Errorf("a second re-wrap: %d, %v; want nothing to do", n, err)
	}
	after := activeRow(t, b.store)
	if after.KekID != newKey.ID() || after.Fingerprint != before.Fingerprint || string(after.CertificateDer) != string(before.CertificateDer) {
		t.Errorf("after the re-wrap: kek %s, fingerprint %s; want %s, %s", after.KekID, after.Fingerprint, newKey.ID(), before.Fingerprint)
	}
	if string(after.KeyCiphertext) == string(before.KeyCiphertext) {
		t.Error("the sealed key did not change")
	}
	use, err = identity.AuthorityKeys{}.KeyUsage(t.Context(), b.store)
	if err != nil || len(use) != 1 || use[newKey.ID()] != 1 {
		t.Errorf("usage after: %v, %v", use, err)
	}

	// The new key alone opens the same CA.
	a, err := identity.LoadOrCreateAuthority(t.Context(), identity.AuthorityOptions{Store: b.store, Keys: identity.NewKeyring(newKey), Now: b.clock.Now})
	if err != nil || a.Fingerprint() != b.authority.Fingerprint() {
		t.Fatalf("load with the new key: %v", err)
	}
	sign := func(a *identity.Authority) error {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		_, err = a.Sign(&key.PublicKey, identity.DeviceIdentity(ulid.Make().String()), identity.Lifetime(time.Hour))
		return err
	}
	if err := sign(a); err != nil {
		t.Errorf("sign with the new key: %v", err)
	}
	// The old key alone: the CA does not load, and an authority loaded before the
	// re-wrap refuses to sign once it has read the new wrapping.
	_, err = identity.LoadOrCreateAuthority(t.Context(), identity.AuthorityOptions{Store: b.store, Keys: identity.NewKeyring(old), Now: b.clock.Now})
	if !errors.Is(err, identity.ErrMasterKeyMismatch) || !strings.Contains(err.Error(), newKey.ID()) {
		t.Errorf("load with the old key alone: %v", err)
	}
	if err := sign(b.authority); err != nil {
		t.Fatalf("sign before the refresh: %v", err)
	}
	if err := b.authority.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	err = sign(b.authority)
	if errdefs.KindOf(err) != errdefs.FailedPrecondition || !strings.Contains(err.Error(), newKey.ID()) || !errors.Is(err, identity.ErrMasterKeyMismatch) {
		t.Errorf("sign with the old key alone after the re-wrap: %v", err)
	}
}
