package browser

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/palyra/palyra/gen/dbsqlc"
	"github.com/palyra/palyra/server/internal/envelope"
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

// wrapper seals the states. Its zero value is ready; it is safe for concurrent use.
type wrapper struct {
	w envelope.Wrapper
}

// seal encrypts state for v under a new random data key, wrapped under kek.
func (w *wrapper) seal(kek *identity.KeyEncryptionKey, v version, state []byte) (envelope.Sealed, error) {
	return w.w.Seal(kek, wrapPurpose, state, v.aad(partState), v.aad(partDataKey))
}

// open decrypts what seal produced for v. A key-encryption key the ring lacks is
// FailedPrecondition; anything that does not decrypt is DataLoss. The caller clears the
// state once used.
func (w *wrapper) open(keys *identity.Keyring, v version, s envelope.Sealed) ([]byte, error) {
	dataKey, err := w.unwrap(keys, v, s.KEKID, s.DataKeyNonce, s.WrappedDataKey)
	if err != nil {
		return nil, err
	}
	defer clear(dataKey)
	state, err := envelope.OpenValue(dataKey, s, v.aad(partState))
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
	dataKey, err := w.w.Unwrap(kek, wrapPurpose, nonce, wrapped, v.aad(partDataKey))
	if errors.Is(err, envelope.ErrCorrupt) {
		return nil, corrupt(v, partDataKey)
	}
	return dataKey, err
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
	for _, r := range rows {
		v := version{profileID: r.ProfileID, number: r.Version}
		dataKey, err := k.wrap.unwrap(keys, v, r.KekID, r.DataKeyNonce, r.WrappedDataKey)
		if err != nil {
			return 0, err
		}
		nonce, wrapped, err := k.wrap.w.Wrap(to, wrapPurpose, dataKey, v.aad(partDataKey))
		clear(dataKey)
		if err != nil {
			return 0, err
		}
		if _, err := tx.Q().RewrapBrowserStateKey(ctx, dbsqlc.RewrapBrowserStateKeyParams{
			ProfileID: r.ProfileID, Version: r.Version, FromKekID: r.KekID,
			ToKekID: to.ID(), DataKeyNonce: nonce, WrappedDataKey: wrapped,
		}); err != nil {
			return 0, fmt.Errorf("browser: re-wrap state version %d of browser profile %s: %w", r.Version, r.ProfileID, err)
		}
	}
	return len(rows), nil
}
