package vault

import (
	"encoding/binary"
	"errors"

	"github.com/palyra/palyra/server/internal/envelope"
	"github.com/palyra/palyra/server/internal/errdefs"
	"github.com/palyra/palyra/server/internal/identity"
)

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
// wrapped under the key derived from the key-encryption key KEKID.
type sealed = envelope.Sealed

// wrappers wraps the data keys of versions (wrapPurpose). Its zero value is ready; it
// is safe for concurrent use.
type wrappers struct {
	w envelope.Wrapper
}

// seal encrypts value for row under a new random data key, and wraps the data key
// under kek.
func (w *wrappers) seal(kek *identity.KeyEncryptionKey, row rowID, value []byte) (sealed, error) {
	return w.w.Seal(kek, wrapPurpose, value, row.aad(partValue), row.aad(partDataKey))
}

// open decrypts what seal produced for row, with the key-encryption key of keys that
// s names. A key the ring lacks is FailedPrecondition; anything that does not decrypt
// (a ciphertext or data key altered, or moved from another row) is DataLoss. The
// caller clears the value once used.
func (w *wrappers) open(keys *identity.Keyring, row rowID, s sealed) ([]byte, error) {
	kek, ok := keys.Key(s.KEKID)
	if !ok {
		return nil, missingKEK(row, s.KEKID)
	}
	dataKey, err := w.unwrap(kek, row, s.DataKeyNonce, s.WrappedDataKey)
	if err != nil {
		return nil, err
	}
	defer clear(dataKey)
	value, err := envelope.OpenValue(dataKey, s, row.aad(partValue))
	if err != nil {
		return nil, corrupt(row, "value", err)
	}
	return value, nil
}

// unwrap returns the data key of row wrapped under kek. The caller clears it once used.
func (w *wrappers) unwrap(kek *identity.KeyEncryptionKey, row rowID, dataKeyNonce, wrapped []byte) ([]byte, error) {
	dataKey, err := w.w.Unwrap(kek, wrapPurpose, dataKeyNonce, wrapped, row.aad(partDataKey))
	if errors.Is(err, envelope.ErrCorrupt) {
		return nil, corrupt(row, "data key", err)
	}
	return dataKey, err
}

// wrap wraps dataKey of row under kek.
func (w *wrappers) wrap(kek *identity.KeyEncryptionKey, row rowID, dataKey []byte) (nonce, wrapped []byte, err error) {
	return w.w.Wrap(kek, wrapPurpose, dataKey, row.aad(partDataKey))
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
