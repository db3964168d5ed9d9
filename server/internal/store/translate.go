package store

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/palyra/palyra/gen/dbsqlc"
)

// querier is what a pool and a transaction have in common.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// translatingDB is the dbsqlc.DBTX handed to generated queries: it forwards to a pool or
// a transaction and translates every error that comes back, so no caller sees a raw
// pgx error.
type translatingDB struct{ q querier }

var _ dbsqlc.DBTX = translatingDB{}

// Exec implements dbsqlc.DBTX.
func (d translatingDB) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	tag, err := d.q.Exec(ctx, sql, args...)
	return tag, translate(err)
}

// Query implements dbsqlc.DBTX.
func (d translatingDB) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	rows, err := d.q.Query(ctx, sql, args...)
	if err != nil {
		return nil, translate(err)
	}
	return translatingRows{rows}, nil
}

// QueryRow implements dbsqlc.DBTX.
func (d translatingDB) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	return translatingRow{d.q.QueryRow(ctx, sql, args...)}
}

// translatingRow translates the error of Scan, where pgx reports a QueryRow's failure.
type translatingRow struct{ pgx.Row }

// Scan implements pgx.Row.
func (r translatingRow) Scan(dest ...any) error { return translate(r.Row.Scan(dest...)) }

// translatingRows translates the errors of a result set.
type translatingRows struct{ pgx.Rows }

// Scan implements pgx.Rows.
func (r translatingRows) Scan(dest ...any) error { return translate(r.Rows.Scan(dest...)) }

// Err implements pgx.Rows.
func (r translatingRows) Err() error { return translate(r.Rows.Err()) }
