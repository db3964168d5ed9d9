package store

import (
	"context"

	"github.com/palyra/palyra/gen/dbsqlc"
)

// PoolDB is what Q binds the generated queries to, for tests that run statements of
// their own through it.
func (s *Store) PoolDB() dbsqlc.DBTX { return s.db }

// InTxDB is InTx handing fn the transaction's DBTX, which the generated queries hide.
func (s *Store) InTxDB(ctx context.Context, fn func(db dbsqlc.DBTX) error) error {
	return s.inTx(ctx, func(db translatingDB) error { return fn(db) })
}

// WithCompanionSQL and Writes expose the rewriting of statements that write.
var (
	WithCompanionSQL = withCompanion
	Writes           = writes
)

// GroupedDB is what Grouped binds the generated queries to.
func (s *Store) GroupedDB() dbsqlc.DBTX { return groupingDB{g: s.group} }
