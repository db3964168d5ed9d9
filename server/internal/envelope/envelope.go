// Package envelope is the envelope encryption of what palyrad stores sealed under its
// master keys: the vault's secret versions and the browser profiles' states.
//
// A value is sealed under a random 256-bit data key of its own (AES-256-GCM); the data
// key is wrapped (AES-256-GCM) under a key derived from a master key's key-encryption key
// for one purpose (identity.KeyEncryptionKey.DeriveKey), whose id the row records. The
// caller gives the associated data of each seal — the identity of the row, a different
// one for the value and for the data key — so that neither can be moved to another row
// unnoticed. A master key rotation re-wraps the data keys (Unwrap, then Wrap under the
// new primary) and never touches the sealed values.
package envelope

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"

	"github.com/palyra/palyra/server/internal/identity"
)

// DataKeySize is the length of a data key: AES-256.
const DataKeySize = 32

// ErrCorrupt reports a seal that does not open: altered, truncated, or moved from
// another row (its associated data differs).
var ErrCorrupt = errors.New("envelope: does not decrypt")

// Sealed is a value as stored: the value under its data key, and the data key wrapped
// under the key derived from the key-encryption key KEKID.
type Sealed struct {
	KEKID          string
	DataKeyNonce   []byte
	WrappedDataKey []byte
	ValueNonce     []byte
	Ciphertext     []byte
}

// Wrapper wraps data keys. It keeps the AEAD of each key-encryption key and purpose,
// derived on first use. Its zero value is ready; it is safe for concurrent use.
type Wrapper struct {
	mu    sync.Mutex // guards byKey
	byKey map[string]cipher.AEAD
}

// AEAD returns the AEAD that wraps data keys under kek for purpose.
func (w *Wrapper) AEAD(kek *identity.KeyEncryptionKey, purpose string) (cipher.AEAD, error) {
	k := purpose + "\x00" + kek.ID()
	w.mu.Lock()
	defer w.mu.Unlock()
	if a := w.byKey[k]; a != nil {
		return a, nil
	}
	key, err := kek.DeriveKey(purpose)
	if err != nil {
		return nil, err
	}
	defer clear(key)
	a, err := NewGCM(key)
	if err != nil {
		return nil, err
	}
	if w.byKey == nil {
		w.byKey = map[string]cipher.AEAD{}
	}
	w.byKey[k] = a
	return a, nil
}

// NewGCM returns AES-GCM under key.
func NewGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("envelope: %w", err)
	}
	return cipher.NewGCM(block)
}

// nonce returns a random nonce for a.
func nonce(a cipher.AEAD) []byte {
	n := make([]byte, a.NonceSize())
	rand.Read(n)
	return n
}

// Seal seals value under a new random data key, wrapped under kek for purpose; valueAAD
// and keyAAD are the associated data of the value's seal and of the data key's.
func (w *Wrapper) Seal(kek *identity.KeyEncryptionKey, purpose string, value, valueAAD, keyAAD []byte) (Sealed, error) {
	dataKey := make([]byte, DataKeySize)
	rand.Read(dataKey)
	defer clear(dataKey)
	a, err := NewGCM(dataKey)
	if err != nil {
		return Sealed{}, err
	}
	s := Sealed{KEKID: kek.ID(), ValueNonce: nonce(a)}
	s.Ciphertext = a.Seal(nil, s.ValueNonce, value, valueAAD)
	if s.DataKeyNonce, s.WrappedDataKey, err = w.Wrap(kek, purpose, dataKey, keyAAD); err != nil {
		return Sealed{}, err
	}
	return s, nil
}

// Wrap wraps dataKey under kek for purpose, with keyAAD as associated data.
func (w *Wrapper) Wrap(kek *identity.KeyEncryptionKey, purpose string, dataKey, keyAAD []byte) (dataKeyNonce, wrapped []byte, err error) {
	wrap, err := w.AEAD(kek, purpose)
	if err != nil {
		return nil, nil, err
	}
	dataKeyNonce = nonce(wrap)
	return dataKeyNonce, wrap.Seal(nil, dataKeyNonce, dataKey, keyAAD), nil
}

// Unwrap returns the data key wrapped under kek for purpose; ErrCorrupt (wrapped) when it
// does not open. The caller clears it once used.
func (w *Wrapper) Unwrap(kek *identity.KeyEncryptionKey, purpose string, dataKeyNonce, wrapped, keyAAD []byte) ([]byte, error) {
	wrap, err := w.AEAD(kek, purpose)
	if err != nil {
		return nil, err
	}
	if len(dataKeyNonce) != wrap.NonceSize() {
		return nil, fmt.Errorf("%w: a nonce of %d bytes", ErrCorrupt, len(dataKeyNonce))
	}
	dataKey, err := wrap.Open(nil, dataKeyNonce, wrapped, keyAAD)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if len(dataKey) != DataKeySize {
		clear(dataKey)
		return nil, fmt.Errorf("%w: a data key of %d bytes", ErrCorrupt, len(dataKey))
	}
	return dataKey, nil
}

// OpenValue opens s's value with its data key; ErrCorrupt (wrapped) when it does not.
// The caller clears the value once used.
func OpenValue(dataKey []byte, s Sealed, valueAAD []byte) ([]byte, error) {
	a, err := NewGCM(dataKey)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if len(s.ValueNonce) != a.NonceSize() {
		return nil, fmt.Errorf("%w: a nonce of %d bytes", ErrCorrupt, len(s.ValueNonce))
	}
	value, err := a.Open(nil, s.ValueNonce, s.Ciphertext, valueAAD)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return value, nil
}
