package identity

import (
	"context"
	"errors"
	"fmt"

	"github.com/palyra/palyra/gen/dbsqlc"
	"github.com/palyra/palyra/server/internal/errdefs"
	"github.com/palyra/palyra/server/internal/store"
)

// AuthorityKeys re-wraps the sealed private keys of the CA (every authority, active or
// retired) when the master key rotates: a masterkey.Rewrapper. Only the wrapping
// changes: the CA's key, certificate and fingerprint stay.
type AuthorityKeys struct{}

// Kind names what AuthorityKeys re-wraps: "ca".
func (AuthorityKeys) Kind() string { return "ca" }

// KeyUsage counts the authority keys sealed under each key-encryption key.
func (AuthorityKeys) KeyUsage(ctx context.Context, db store.Queryer) (map[string]int64, error) {
	rows, err := db.Q().CountAuthorityKeysByKEK(ctx)
	if err != nil {
		return nil, fmt.Errorf("identity: count the CA keys by key-encryption key: %w", err)
	}
	out := make(map[string]int64, len(rows))
	for _, r := range rows {
		out[r.KekID] = r.Keys
	}
	return out, nil
}

// RewrapBatch re-seals, in tx, up to limit authority keys sealed under a key other
// than the primary of keys, under the primary, and returns how many it re-sealed: 0
// when none is left. A key sealed under a key-encryption key that keys lacks fails it
// with FailedPrecondition naming that key.
func (AuthorityKeys) RewrapBatch(ctx context.Context, tx *store.Tx, keys *Keyring, limit int) (int, error) {
	primary := keys.Primary()
	rows, err := tx.Q().LockAuthoritiesToRewrap(ctx, dbsqlc.LockAuthoritiesToRewrapParams{KekID: primary.ID(), PageLimit: int32(limit)})
	if err != nil {
		return 0, fmt.Errorf("identity: list the CA keys to re-wrap: %w", err)
	}
	for _, row := range rows {
		kek, ok := keys.Key(row.KekID)
		if !ok {
			return 0, missingKeyError(row.KekID, keys)
		}
		pkcs8, err := kek.Open(row.KeyNonce, row.KeyCiphertext, authorityAAD(row.ID))
		if err != nil {
			return 0, &errdefs.Error{Kind: errdefs.Internal, Message: "a sealed CA key is corrupt",
				Cause: fmt.Errorf("identity: CA %s: %w", row.ID, err)}
		}
		nonce, sealed := primary.Seal(pkcs8, authorityAAD(row.ID))
		n, err := tx.Q().RewrapAuthorityKey(ctx, dbsqlc.RewrapAuthorityKeyParams{
			ID: row.ID, OldKekID: row.KekID, KekID: primary.ID(), KeyNonce: nonce, KeyCiphertext: sealed,
		})
		if err != nil {
			return 0, fmt.Errorf("identity: re-wrap CA %s: %w", row.ID, err)
		}
		if n != 1 {
			return 0, errors.New("identity: re-wrap CA " + row.ID + ": the row changed meanwhile")
		}
	}
	return len(rows), nil
}
