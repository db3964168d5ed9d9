package browser

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"sync"

	"github.com/palyra/palyra/gen/dbsqlc"
	"github.com/palyra/palyra/server/internal/errdefs"
	"github.com/palyra/palyra/server/internal/identity"
	"github.com/palyra/palyra/server/internal/store"
)

// wrapPurpose names the key derived from a master key that wraps the states' data keys
// (identity.KeyEncryptionKey.DeriveKey); the vault's secrets use another.
const wrapPurpose = "browser-state-data-key"

// The parts of a state version that are sealed, each with associated data of its own.
const (
	partState   = "state"
	partDataKey = "data-key"
)

// version names a state version: what the associated data of its seals binds them to.
type version struct {
	profileID string
	number    int64
}

// aad returns the associated data of one part of the version:
//
//	"palyra/v1/browser-state/" part 0x00 uvarint(len(profile id)) profile id uvarint(number)
func (v version) aad(part string) []byte {
	b := make([]byte, 0, 64+len(v.profileID))
	b = append(b, "palyra/v1/browser-state/"...)
	b = append(b, part...)
	b = append(b, 0)
	b = binary.AppendUvarint(b, uint64(len(v.profileID)))
	b = append(b, v.profileID...)
	return binary.AppendUvarint(b, uint64(v.number))
}

// sealedState is a state version as stored.
type sealedState struct {
	kekID                        string
	dataKeyNonce, wrappedDataKey []byte
	stateNonce, ciphertext       []byte
}

// wrapper holds the AEAD that wraps data keys for each key-encryption key, derived on
// first use. Its zero value is ready; it is safe for concurrent use.
type wrapper struct {
	mu    sync.Mutex // guards byKEK
	byKEK map[string]cipher.AEAD
}

// aeadOf returns the wrapping AEAD of kek.
func (w *wrapper) aeadOf(kek *identity.KeyEncryptionKey) (cipher.AEAD, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if a := w.byKEK[kek.ID()]; a != nil {
		return a, nil
	}
	key, err := kek.DeriveKey(wrapPurpose)
	if err != nil {
		return nil, err
	}
	defer clear(key)
	a, err := gcm(key)
	if err != nil {
		return nil, err
	}
	if w.byKEK == nil {
		w.byKEK = map[string]cipher.AEAD{}
	}
	w.byKEK[kek.ID()] = a
	return a, nil
}

// gcm returns AES-GCM under key.
func gcm(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("browser: %w", err)
	}
	return cipher.NewGCM(block)
}

// randomNonce returns a random nonce for a.
func randomNonce(a cipher.AEAD) []byte {
	n := make([]byte, a.NonceSize())
	rand.Read(n)
	return n
}

// seal encrypts state for v under a new random data key (AES-256), wrapped under kek.
func (w *wrapper) seal(kek *identity.KeyEncryptionKey, v version, state []byte) (sealedState, error) {
	wrap, err := w.aeadOf(kek)
	if err != nil {
		return sealedState{}, err
	}
	dataKey := make([]byte, 32)
	rand.Read(dataKey)
	defer clear(dataKey)
	a, err := gcm(dataKey)
	if err != nil {
		return sealedState{}, err
	}
	s := sealedState{kekID: kek.ID(), stateNonce: randomNonce(a), dataKeyNonce: randomNonce(wrap)}
	s.ciphertext = a.Seal(nil, s.stateNonce, state, v.aad(partState))
	s.wrappedDataKey = wrap.Seal(nil, s.dataKeyNonce, dataKey, v.aad(partDataKey))
	return s, nil
}

// open decrypts what seal produced for v. A key-encryption key the ring lacks is
// FailedPrecondition; anything that does not decrypt is DataLoss. The caller clears the
// state once used.
func (w *wrapper) open(keys *identity.Keyring, v version, s sealedState) ([]byte, error) {
	dataKey, err := w.unwrap(keys, v, s.kekID, s.dataKeyNonce, s.wrappedDataKey)
	if err != nil {
		return nil, err
	}
	defer clear(dataKey)
	a, err := gcm(dataKey)
	if err != nil || len(s.stateNonce) != a.NonceSize() {
		return nil, corrupt(v, partState)
	}
	state, err := a.Open(nil, s.stateNonce, s.ciphertext, v.aad(partState))
	if err != nil {
		return nil, corrupt(v, partState)
	}
	return state, nil
}

// unwrap returns the data key of v wrapped under the key-encryption key kekID of keys.
// The caller clears it once used.
func (w *wrapper) unwrap(keys *identity.Keyring, v version, kekID string, nonce, wrapped []byte) ([]byte, error) {
	kek, ok := keys.Key(kekID)
	if !ok {
		return nil, errdefs.New(errdefs.FailedPrecondition,
			"state version %d of browser profile %s is sealed under the key-encryption key %s, which this replica does not hold: "+
				"start it with that master key too", v.number, v.profileID, kekID)
	}
	wrap, err := w.aeadOf(kek)
	if err != nil {
		return nil, err
	}
	if len(nonce) != wrap.NonceSize() {
		return nil, corrupt(v, partDataKey)
	}
	dataKey, err := wrap.Open(nil, nonce, wrapped, v.aad(partDataKey))
	if err != nil || len(dataKey) != 32 {
		clear(dataKey)
		return nil, corrupt(v, partDataKey)
	}
	return dataKey, nil
}

// corrupt is the DataLoss error of a part of v that does not decrypt.
func corrupt(v version, part string) error {
	return errdefs.New(errdefs.DataLoss,
		"state version %d of browser profile %s does not decrypt: its stored %s is corrupt or was moved from another row",
		v.number, v.profileID, part)
}

// StateKeys re-wraps the data keys of the profiles' states when the master key rotates:
// a masterkey.Rewrapper. Only the wrapping changes, never the sealed states. Its zero
// value is ready to use.
type StateKeys struct {
	wrap wrapper
}

// Kind names what StateKeys re-wraps: "browser-state".
func (*StateKeys) Kind() string { return "browser-state" }

// KeyUsage counts the data keys wrapped under each key-encryption key.
func (*StateKeys) KeyUsage(ctx context.Context, db store.Queryer) (map[string]int64, error) {
	rows, err := db.Q().CountBrowserStateKeysByKEK(ctx)
	if err != nil {
		return nil, fmt.Errorf("browser: count the state keys by key-encryption key: %w", err)
	}
	out := make(map[string]int64, len(rows))
	for _, r := range rows {
		out[r.KekID] = r.Keys
	}
	return out, nil
}

// RewrapBatch re-wraps, in tx, up to limit data keys wrapped under a key other than the
// primary of keys, under the primary, and returns how many it re-wrapped.
func (k *StateKeys) RewrapBatch(ctx context.Context, tx *store.Tx, keys *identity.Keyring, limit int) (int, error) {
	to := keys.Primary()
	rows, err := tx.Q().LockBrowserStateKeysToRewrap(ctx, dbsqlc.LockBrowserStateKeysToRewrapParams{KekID: to.ID(), PageLimit: int32(limit)})
	if err != nil {
		return 0, fmt.Errorf("browser: list the state keys to re-wrap: %w", err)
	}
	wrap, err := k.wrap.aeadOf(to)
	if err != nil {
		return 0, err
	}
	for _, r := range rows {
		v := version{profileID: r.ProfileID, number: r.Version}
		dataKey, err := k.wrap.unwrap(keys, v, r.KekID, r.DataKeyNonce, r.WrappedDataKey)
		if err != nil {
			return 0, err
		}
		nonce := randomNonce(wrap)
		wrapped := wrap.Seal(nil, nonce, dataKey, v.aad(partDataKey))
		clear(dataKey)
		if _, err := tx.Q().RewrapBrowserStateKey(ctx, dbsqlc.RewrapBrowserStateKeyParams{
			ProfileID: r.ProfileID, Version: r.Version, FromKekID: r.KekID,
			ToKekID: to.ID(), DataKeyNonce: nonce, WrappedDataKey: wrapped,
		}); err != nil {
			return 0, fmt.Errorf("browser: re-wrap state version %d of browser profile %s: %w", r.Version, r.ProfileID, err)
		}
	}
	return len(rows), nil
}
