package vault

import (
	"context"
	"fmt"

	"github.com/palyra/palyra/gen/dbsqlc"
	"github.com/palyra/palyra/server/internal/errdefs"
	"github.com/palyra/palyra/server/internal/store"
)

// rewrapBatch is how many data keys RewrapDataKeys re-wraps per transaction.
const rewrapBatch = 100

// RewrapDataKeys re-wraps every data key wrapped under the key-encryption key fromKEK
// with the ring's primary, a batch per transaction, and returns how many it re-wrapped.
// The sealed values are not touched: a master key rotation costs one small write per
// version. fromKEK must be in the ring (FailedPrecondition otherwise); a version
// destroyed or re-wrapped meanwhile by another replica is skipped. It is the one place
// that lists and updates wrapped data keys by key-encryption key.
func (v *Vault) RewrapDataKeys(ctx context.Context, fromKEK string) (int, error) {
	from, ok := v.keys.Key(fromKEK)
	if !ok {
		return 0, errdefs.New(errdefs.FailedPrecondition, "the key-encryption key %s is not in this replica's keyring", fromKEK)
	}
	to := v.keys.Primary()
	if to.ID() == fromKEK {
		return 0, nil
	}
	total := 0
	after := dbsqlc.ListWrappedDataKeysParams{KekID: fromKEK, MaxRows: rewrapBatch}
	for {
		var n int
		err := v.store.InTx(ctx, func(tx *store.Tx) error {
			q := tx.Q()
			rows, err := q.ListWrappedDataKeys(ctx, after)
			if err != nil {
				return err
			}
			for _, r := range rows {
				row := rowID{secretID: r.SecretID, name: r.Name, version: r.Version}
				dataKey, err := v.wrap.unwrap(from, row, r.DataKeyNonce, r.WrappedDataKey)
				if err != nil {
					return err
				}
				wrap, err := v.wrap.of(to)
				if err != nil {
					clear(dataKey)
					return err
				}
				nonce := nonce(wrap)
				wrapped := wrap.Seal(nil, nonce, dataKey, row.aad(partDataKey))
				clear(dataKey)
				changed, err := q.RewrapDataKey(ctx, dbsqlc.RewrapDataKeyParams{
					SecretID: r.SecretID, Version: r.Version, FromKekID: fromKEK,
					ToKekID: to.ID(), DataKeyNonce: nonce, WrappedDataKey: wrapped,
				})
				if err != nil {
					return err
				}
				n += int(changed)
				after.AfterSecretID, after.AfterVersion = r.SecretID, r.Version
			}
			if len(rows) < rewrapBatch {
				after.MaxRows = 0 // done
			}
			return nil
		})
		if err != nil {
			return total, wrapErr(fmt.Sprintf("re-wrap the data keys under %s", fromKEK), err)
		}
		total += n
		if after.MaxRows == 0 {
			return total, nil
		}
	}
}
