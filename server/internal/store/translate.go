package store

import (
	"context"
	"errors"
	"slices"
	"sync"

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
// a transaction, adds the context's Companion to statements that write (companion.go),
// and translates every error that comes back, so no caller sees a raw pgx error.
type translatingDB struct {
	q querier
	// tx is the transaction's companions; nil on a pool, where every statement is a
	// transaction of its own.
	tx *txCompanions
}

var _ dbsqlc.DBTX = translatingDB{}

// txCompanions are the companions a transaction carries, told once it commits.
type txCompanions struct {
	mu    sync.Mutex // guards added
	added []Companion
}

// companion returns sql and args with ctx's companion added when sql writes and the
// companion is not in the transaction yet, and the companion to tell when the
// statement commits (nil when none was added, or when the transaction's commit tells).
func (d translatingDB) companion(ctx context.Context, sql string, args []any) (string, []any, Companion) {
	c := companionOf(ctx)
	if c == nil || !cachedWrites(sql) {
		return sql, args, nil
	}
	if d.tx != nil {
		d.tx.mu.Lock()
		defer d.tx.mu.Unlock()
		if slices.Contains(d.tx.added, c) {
			return sql, args, nil
		}
	}
	csql, cargs, ok := c.CompanionStatement()
	if !ok {
		return sql, args, nil
	}
	sql = cachedWithCompanion(sql, len(args), csql)
	args = append(slices.Clip(args), cargs...)
	if d.tx != nil {
		d.tx.added = append(d.tx.added, c)
		return sql, args, nil
	}
	return sql, args, c
}

// committed tells the companions a transaction carried that it committed.
func (t *txCompanions) committed() {
	t.mu.Lock()
	added := t.added
	t.mu.Unlock()
	for _, c := range added {
		c.Committed()
	}
}

// Exec implements dbsqlc.DBTX.
func (d translatingDB) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	sql, args, c := d.companion(ctx, sql, args)
	tag, err := d.q.Exec(ctx, sql, args...)
	if err == nil && c != nil {
		c.Committed()
	}
	return tag, translate(err)
}

// Query implements dbsqlc.DBTX.
func (d translatingDB) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	sql, args, c := d.companion(ctx, sql, args)
	rows, err := d.q.Query(ctx, sql, args...)
	if err != nil {
		return nil, translate(err)
	}
	return &translatingRows{Rows: rows, companion: c}, nil
}

// QueryRow implements dbsqlc.DBTX.
func (d translatingDB) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	sql, args, c := d.companion(ctx, sql, args)
	return translatingRow{Row: d.q.QueryRow(ctx, sql, args...), companion: c}
}

// translatingRow translates the error of Scan, where pgx reports a QueryRow's failure.
type translatingRow struct {
	pgx.Row
	companion Companion // told when the statement succeeded; nil for none
}

// Scan implements pgx.Row. A statement that returned no row succeeded all the same.
func (r translatingRow) Scan(dest ...any) error {
	err := r.Row.Scan(dest...)
	if r.companion != nil && (err == nil || errors.Is(err, pgx.ErrNoRows)) {
		r.companion.Committed()
	}
	return translate(err)
}

// translatingRows translates the errors of a result set.
type translatingRows struct {
	pgx.Rows
	companion Companion // told once every row was read without error; nil for none
}

// Next implements pgx.Rows.
func (r *translatingRows) Next() bool {
	if r.Rows.Next() {
		return true
	}
	if r.companion != nil && r.Rows.Err() == nil {
		r.companion.Committed()
		r.companion = nil
	}
	return false
}

// Scan implements pgx.Rows.
func (r *translatingRows) Scan(dest ...any) error { return translate(r.Rows.Scan(dest...)) }

// Err implements pgx.Rows.
func (r *translatingRows) Err() error { return translate(r.Rows.Err()) }
