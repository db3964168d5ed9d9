package vault

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"sync"

	"github.com/palyra/palyra/server/internal/errdefs"
	"github.com/palyra/palyra/server/internal/identity"
)

// dataKeySize is the length of a version's data key: AES-256.
const dataKeySize = 32

// wrapPurpose names the key derived from a master key that wraps data keys
// (identity.KeyEncryptionKey.DeriveKey).
const wrapPurpose = "secret-data-key"

// The parts of a row that are sealed, each with associated data of its own.
const (
	partValue   = "value"
	partDataKey = "data-key"
)

// rowID is what the associated data of a version's seals binds them to.
type rowID struct {
	secretID string
	name     string
	version  int64
}

// aad returns the associated data of one part of the row:
//
//	"palyra/v1/secret/" part 0x00 uvarint(len(id)) id uvarint(len(name)) name uvarint(version)
//
// The length prefixes make it unambiguous.
func (r rowID) aad(part string) []byte {
	b := make([]byte, 0, 64+len(r.secretID)+len(r.name))
	b = append(b, "palyra/v1/secret/"...)
	b = append(b, part...)
	b = append(b, 0)
	b = binary.AppendUvarint(b, uint64(len(r.secretID)))
	b = append(b, r.secretID...)
	b = binary.AppendUvarint(b, uint64(len(r.name)))
	b = append(b, r.name...)
	return binary.AppendUvarint(b, uint64(r.version))
}

// sealed is a version's value as stored: the value under the data key, and the data key
// wrapped under the key derived from the key-encryption key kekID.
type sealed struct {
	kekID          string
	dataKeyNonce   []byte
	wrappedDataKey []byte
	valueNonce     []byte
	ciphertext     []byte
}

// wrappers holds the AEAD that wraps data keys for each key-encryption key, derived on
// first use. It is safe for concurrent use.
type wrappers struct {
	mu    sync.Mutex // guards byKEK
	byKEK map[string]cipher.AEAD
}

// of returns the wrapping AEAD of kek.
func (w *wrappers) of(kek *identity.KeyEncryptionKey) (cipher.AEAD, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if a, ok := w.byKEK[kek.ID()]; ok {
		return a, nil
	}
	key, err := kek.DeriveKey(wrapPurpose)
	if err != nil {
		return nil, err
	}
	defer clear(key)
	a, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	if w.byKEK == nil {
		w.byKEK = map[string]cipher.AEAD{}
	}
	w.byKEK[kek.ID()] = a
	return a, nil
}

// newGCM returns AES-GCM under key.
func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("vault: %w", err)
	}
	return cipher.NewGCM(block)
}

// seal encrypts value for row under a new random data key, and wraps the data key
// under kek.
func (w *wrappers) seal(kek *identity.KeyEncryptionKey, row rowID, value []byte) (sealed, error) {
	wrap, err := w.of(kek)
	if err != nil {
		return sealed{}, err
	}
	dataKey := make([]byte, dataKeySize)
	rand.Read(dataKey)
	defer clear(dataKey)
	aead, err := newGCM(dataKey)
	if err != nil {
		return sealed{}, err
	}
	s := sealed{kekID: kek.ID(), valueNonce: nonce(aead), dataKeyNonce: nonce(wrap)}
	s.ciphertext = aead.Seal(nil, s.valueNonce, value, row.aad(partValue))
	s.wrappedDataKey = wrap.Seal(nil, s.dataKeyNonce, dataKey, row.aad(partDataKey))
	return s, nil
}

// nonce returns a random nonce for a.
func nonce(a cipher.AEAD) []byte {
	n := make([]byte, a.NonceSize())
	rand.Read(n)
	return n
}

// open decrypts what seal produced for row, with the key-encryption key of keys that
// s names. A key the ring lacks is FailedPrecondition; anything that does not decrypt
// (a ciphertext or data key altered, or moved from another row) is DataLoss. The
// caller clears the value once used.
func (w *wrappers) open(keys *identity.Keyring, row rowID, s sealed) ([]byte, error) {
	kek, ok := keys.Key(s.kekID)
	if !ok {
		return nil, missingKEK(row, s.kekID)
	}
	dataKey, err := w.unwrap(kek, row, s.dataKeyNonce, s.wrappedDataKey)
	if err != nil {
		return nil, err
	}
	defer clear(dataKey)
	aead, err := newGCM(dataKey)
	if err != nil {
		return nil, corrupt(row, "data key", err)
	}
	if len(s.valueNonce) != aead.NonceSize() {
		return nil, corrupt(row, "value", fmt.Errorf("a nonce of %d bytes", len(s.valueNonce)))
	}
	value, err := aead.Open(nil, s.valueNonce, s.ciphertext, row.aad(partValue))
	if err != nil {
		return nil, corrupt(row, "value", err)
	}
	return value, nil
}

// unwrap returns the data key of row wrapped under kek. The caller clears it once used.
func (w *wrappers) unwrap(kek *identity.KeyEncryptionKey, row rowID, dataKeyNonce, wrapped []byte) ([]byte, error) {
	wrap, err := w.of(kek)
	if err != nil {
		return nil, err
	}
	if len(dataKeyNonce) != wrap.NonceSize() {
		return nil, corrupt(row, "data key", fmt.Errorf("a nonce of %d bytes", len(dataKeyNonce)))
	}
	dataKey, err := wrap.Open(nil, dataKeyNonce, wrapped, row.aad(partDataKey))
	if err != nil {
		return nil, corrupt(row, "data key", err)
	}
	if len(dataKey) != dataKeySize {
		clear(dataKey)
		return nil, corrupt(row, "data key", fmt.Errorf("a data key of %d bytes", len(dataKey)))
	}
	return dataKey, nil
}

// missingKEK is the FailedPrecondition error of a version of row wrapped under the
// key-encryption key kekID, which the replica's ring lacks.
func missingKEK(row rowID, kekID string) error {
	return errdefs.New(errdefs.FailedPrecondition,
		"version %d of secret %q is sealed under the key-encryption key %s, which this replica does not hold: "+
			"start it with that master key too", row.version, row.name, kekID)
}

// corrupt is the DataLoss error of a part of row that does not decrypt.
func corrupt(row rowID, part string, cause error) error {
	return errdefs.Wrap(cause, errdefs.DataLoss,
		"version %d of secret %q does not decrypt: its stored %s is corrupt or was moved from another row",
		row.version, row.name, part)
}
