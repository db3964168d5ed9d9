package vault

import (
	"context"
	"fmt"

	"github.com/palyra/palyra/gen/dbsqlc"
	"github.com/palyra/palyra/server/internal/identity"
	"github.com/palyra/palyra/server/internal/store"
)

// DataKeys re-wraps the secrets' data keys when the master key rotates: a
// masterkey.Rewrapper. Only the wrapping changes; the sealed values are not touched, so
// a rotation costs one small write per version. Its zero value is ready to use.
type DataKeys struct {
	wrap wrappers
}

// Kind names what DataKeys re-wraps: "secret".
func (*DataKeys) Kind() string { return "secret" }

// KeyUsage counts the data keys wrapped under each key-encryption key.
func (*DataKeys) KeyUsage(ctx context.Context, db store.Queryer) (map[string]int64, error) {
	rows, err := db.Q().CountDataKeysByKEK(ctx)
	if err != nil {
		return nil, fmt.Errorf("vault: count the data keys by key-encryption key: %w", err)
	}
	out := make(map[string]int64, len(rows))
	for _, r := range rows {
		out[r.KekID] = r.Keys
	}
	return out, nil
}

// RewrapBatch re-wraps, in tx, up to limit data keys wrapped under a key other than the
// primary of keys, under the primary, and returns how many it re-wrapped: fewer than
// limit when none is left. A data key wrapped under a key-encryption key that keys
// lacks fails it with FailedPrecondition naming that key; one that does not unwrap,
// with DataLoss.
func (d *DataKeys) RewrapBatch(ctx context.Context, tx *store.Tx, keys *identity.Keyring, limit int) (int, error) {
	to := keys.Primary()
	rows, err := tx.Q().LockDataKeysToRewrap(ctx, dbsqlc.LockDataKeysToRewrapParams{KekID: to.ID(), PageLimit: int32(limit)})
	if err != nil {
		return 0, fmt.Errorf("vault: list the data keys to re-wrap: %w", err)
	}
	for _, r := range rows {
		row := rowID{secretID: r.SecretID, name: r.Name, version: r.Version}
		from, ok := keys.Key(r.KekID)
		if !ok {
			return 0, missingKEK(row, r.KekID)
		}
		dataKey, err := d.wrap.unwrap(from, row, r.DataKeyNonce, r.WrappedDataKey)
		if err != nil {
			return 0, err
		}
		nonce, wrapped, err := d.wrap.wrap(to, row, dataKey)
		clear(dataKey)
		if err != nil {
			return 0, err
		}
		if _, err := tx.Q().RewrapDataKey(ctx, dbsqlc.RewrapDataKeyParams{
			SecretID: r.SecretID, Version: r.Version, FromKekID: r.KekID,
			ToKekID: to.ID(), DataKeyNonce: nonce, WrappedDataKey: wrapped,
		}); err != nil {
			return 0, fmt.Errorf("vault: re-wrap version %d of secret %q: %w", r.Version, r.Name, err)
		}
	}
	return len(rows), nil
}
