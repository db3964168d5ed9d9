package envelope_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/palyra/palyra/server/internal/envelope"
	"github.com/palyra/palyra/server/internal/identity"
)

func newKEK(t *testing.T) *identity.KeyEncryptionKey {
	t.Helper()
	ring, _, err := identity.LoadKeyring(t.TempDir(), identity.GenerateMasterKey())
	if err != nil {
		t.Fatal(err)
	}
	return ring.Primary()
}

// TestSealOpenAndRewrap seals a value, opens it, re-wraps its data key under another
// key-encryption key, and checks that the seals open only with their own associated
// data and purpose.
func TestSealOpenAndRewrap(t *testing.T) {
	t.Parallel()
	var w envelope.Wrapper
	kek := newKEK(t)
	value := []byte("cookie=s3cr3t")
	s, err := w.Seal(kek, "test", value, []byte("row 1 value"), []byte("row 1 key"))
	if err != nil {
		t.Fatal(err)
	}
	if s.KEKID != kek.ID() || bytes.Contains(s.Ciphertext, value) || len(s.WrappedDataKey) == 0 {
		t.Fatalf("sealed %+v", s)
	}
	open := func(kek *identity.KeyEncryptionKey, purpose string, s envelope.Sealed, valueAAD, keyAAD string) ([]byte, error) {
		dataKey, err := w.Unwrap(kek, purpose, s.DataKeyNonce, s.WrappedDataKey, []byte(keyAAD))
		if err != nil {
			return nil, err
		}
		return envelope.OpenValue(dataKey, s, []byte(valueAAD))
	}
	if got, err := open(kek, "test", s, "row 1 value", "row 1 key"); err != nil || !bytes.Equal(got, value) {
		t.Errorf("open: %q %v", got, err)
	}
	for name, try := range map[string]func() error{
		"another row's value AAD": func() error { _, err := open(kek, "test", s, "row 2 value", "row 1 key"); return err },
		"another row's key AAD":   func() error { _, err := open(kek, "test", s, "row 1 value", "row 2 key"); return err },
		"another purpose":         func() error { _, err := open(kek, "other", s, "row 1 value", "row 1 key"); return err },
		"another master key":      func() error { _, err := open(newKEK(t), "test", s, "row 1 value", "row 1 key"); return err },
	} {
		if err := try(); !errors.Is(err, envelope.ErrCorrupt) {
			t.Errorf("%s: %v, want ErrCorrupt", name, err)
		}
	}
	other := newKEK(t)
	dataKey, err := w.Unwrap(kek, "test", s.DataKeyNonce, s.WrappedDataKey, []byte("row 1 key"))
	if err != nil {
		t.Fatal(err)
	}
	rewrapped := s
	rewrapped.KEKID = other.ID()
	if rewrapped.DataKeyNonce, rewrapped.WrappedDataKey, err = w.Wrap(other, "test", dataKey, []byte("row 1 key")); err != nil {
		t.Fatal(err)
	}
	if got, err := open(other, "test", rewrapped, "row 1 value", "row 1 key"); err != nil || !bytes.Equal(got, value) {
		t.Errorf("open after the re-wrap: %q %v", got, err)
	}
}
