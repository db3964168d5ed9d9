package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/palyra/palyra/gen/dbsqlc"
)

// Group commit: Grouped returns queries whose statements are written together with
// those of the other callers of Grouped waiting at the same moment, as one implicit
// transaction sent in one round trip (a pgx batch with one Sync): one commit, one WAL
// flush, and one hold of PostgreSQL's NOTIFY lock (which every notifying transaction
// takes at commit, serialising them cluster-wide) for the whole group.
//
// There is no window: a statement that finds no group being written is written at once,
// alone, by its own caller, as Q would; those that arrive while a group is being written
// wait, and the next group is all of them (up to maxGroup), written by the first of them.
// A statement returns once its group committed, never before: its result then is as
// durable as Q's.
//
// A statement that fails aborts its group, which commits nothing; each statement of the
// group is then written again alone, so that the failure is the failing statement's
// only. Statements of a group must therefore be independent of each other's outcome,
// and each is run the way Q would run it: the context's Companion is added to a
// statement that writes.

// A rider (WithRider) is a statement no caller waits for on its way to an answer: the
// audit event of a call that answered already. Finding no group being written, it does
// not write at once but waits up to riderWait for a statement that is not a rider, whose
// group it joins (one commit and one flush for both), and writes itself only when none
// came. Any other statement is written at once as described above, riders waiting or not.

// riderWait bounds how long a rider waits for a group to join.
const riderWait = 5 * time.Millisecond

// riderKey is the context key of WithRider.
type riderKey struct{}

// WithRider returns ctx marking the statements of Grouped written with it as riders
// (see above).
func WithRider(ctx context.Context) context.Context {
	return context.WithValue(ctx, riderKey{}, true)
}

// maxGroup bounds the statements written in one group.
const maxGroup = 128

// groupTimeout bounds the writing of one group. A caller waits for its group whatever
// its own context does: the statement may have committed, and the caller must learn
// whether it did.
const groupTimeout = 30 * time.Second

// grouper writes the statements of Grouped, a group at a time.
type grouper struct {
	pool *pgxpool.Pool

	mu      sync.Mutex // guards the following
	pending []*groupedStmt
	writing bool        // a caller is writing a group; the next group waits for it
	riders  *time.Timer // ends the wait of the riders pending while no group is written
}

// groupedStmt is one statement waiting for its group to be written.
type groupedStmt struct {
	sql       string
	args      []any
	companion Companion // told once the group committed; nil for none
	rider     bool      // WithRider
	// dest, for a statement run for one row (QueryRow), is where the writer scans it;
	// for a statement run for rows (Query), the writer keeps them in fields and rows.
	many   bool
	dest   []any
	fields []pgconn.FieldDescription
	rows   [][][]byte
	err    error
	// done receives false once the statement's group was written, or true: the caller
	// must write the next group itself.
	done chan bool
}

// Grouped returns the generated queries bound to the group writer (see above). A
// statement that writes gains a shared commit; a read, run once per operation by
// concurrent callers, gains the shared round trip.
func (s *Store) Grouped() *dbsqlc.Queries { return dbsqlc.New(groupingDB{g: s.group}) }

// groupingDB is the dbsqlc.DBTX of Grouped.
type groupingDB struct {
	g *grouper
}

var _ dbsqlc.DBTX = groupingDB{}

// stmt returns the statement to write for sql and args in ctx, its companion added.
func (d groupingDB) stmt(ctx context.Context, sql string, args []any) *groupedStmt {
	sql, args, c := translatingDB{}.companion(ctx, sql, args)
	rider, _ := ctx.Value(riderKey{}).(bool)
	return &groupedStmt{sql: sql, args: args, companion: c, rider: rider, done: make(chan bool, 1)}
}

// Exec implements dbsqlc.DBTX.
func (d groupingDB) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	rows, err := d.Query(ctx, sql, args...)
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	rows.Close()
	return rows.CommandTag(), nil
}

// Query implements dbsqlc.DBTX: the rows are read whole before it returns.
func (d groupingDB) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	if err := ctx.Err(); err != nil {
		return nil, translate(err)
	}
	s := d.stmt(ctx, sql, args)
	s.many = true
	d.g.run(ctx, s)
	if s.err != nil {
		return nil, translate(s.err)
	}
	return &bufferedRows{fields: s.fields, rows: s.rows, types: pgtype.NewMap()}, nil
}

// QueryRow implements dbsqlc.DBTX: the statement is written when its row is scanned.
func (d groupingDB) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	return groupedRow{d: d, ctx: ctx, sql: sql, args: args}
}

// groupedRow is the row of a QueryRow of Grouped.
type groupedRow struct {
	d    groupingDB
	ctx  context.Context
	sql  string
	args []any
}

// Scan implements pgx.Row. A statement that returned no row succeeded all the same
// (pgx.ErrNoRows, translated).
func (r groupedRow) Scan(dest ...any) error {
	if err := r.ctx.Err(); err != nil {
		return translate(err)
	}
	s := r.d.stmt(r.ctx, r.sql, r.args)
	s.dest = dest
	r.d.g.run(r.ctx, s)
	return translate(s.err)
}

// run adds s to the next group and returns once s's group was written, writing groups
// itself when it finds none being written or is handed the next.
func (g *grouper) run(ctx context.Context, s *groupedStmt) {
	g.mu.Lock()
	g.pending = append(g.pending, s)
	lead := !g.writing && !s.rider
	switch {
	case lead:
		g.writing = true
	case !g.writing && g.riders == nil:
		g.riders = time.AfterFunc(riderWait, g.ridersDue)
	}
	g.mu.Unlock()
	for {
		if lead {
			// The group holds other callers' statements: it is not cut short by this
			// caller's context, only bounded in time.
			wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), groupTimeout)
			g.writeNext(wctx)
			cancel()
		}
		if lead = <-s.done; !lead {
			return
		}
	}
}

// ridersDue hands the writing of a group to the first statement pending, a rider that
// waited riderWait, unless a group is being written (its writer hands the next group
// on).
func (g *grouper) ridersDue() {
	g.mu.Lock()
	g.riders = nil
	if g.writing || len(g.pending) == 0 {
		g.mu.Unlock()
		return
	}
	g.writing = true
	first := g.pending[0]
	g.mu.Unlock()
	first.done <- true
}

// writeNext writes the waiting statements as one group, and hands the writing of the
// next group to the first statement that arrived meanwhile, or ends the writing when
// none did.
func (g *grouper) writeNext(ctx context.Context) {
	g.mu.Lock()
	n := min(len(g.pending), maxGroup)
	group := slices.Clone(g.pending[:n])
	g.pending = slices.Delete(g.pending, 0, n)
	g.mu.Unlock()

	if err := g.write(ctx, group); err != nil && len(group) > 1 && serverError(err) {
		// Nothing of the group committed: each alone, so that only the failing
		// statement fails.
		for _, s := range group {
			_ = g.write(ctx, []*groupedStmt{s})
		}
	}
	for _, s := range group {
		s.done <- false
	}

	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.pending) == 0 {
		g.writing = false
		return
	}
	g.pending[0].done <- true
}

// write sends group as one implicit transaction and reads every statement's result
// into it; when the transaction did not commit, every statement's error is the one that
// ended it, which write returns. Companions are told of the commit.
func (g *grouper) write(ctx context.Context, group []*groupedStmt) error {
	b := &pgx.Batch{QueuedQueries: make([]*pgx.QueuedQuery, 0, len(group))}
	for _, s := range group {
		b.Queue(s.sql, s.args...)
	}
	br := g.pool.SendBatch(ctx, b)
	var failed error
	for _, s := range group {
		s.fields, s.rows, s.err = nil, nil, nil
		if s.many {
			s.err = s.readRows(br)
		} else {
			s.err = br.QueryRow().Scan(s.dest...)
		}
		if failed == nil && serverError(s.err) {
			failed = s.err
		}
	}
	if err := br.Close(); failed == nil {
		failed = err
	}
	if failed != nil {
		for _, s := range group {
			s.err = failed
		}
		return failed
	}
	for _, s := range group {
		if s.companion != nil {
			s.companion.Committed()
		}
	}
	return nil
}

// readRows reads the rows of s's result, copying them out of the connection's buffer.
func (s *groupedStmt) readRows(br pgx.BatchResults) error {
	rows, err := br.Query()
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		raw := rows.RawValues()
		row := make([][]byte, len(raw))
		for i, v := range raw {
			if v != nil {
				row[i] = slices.Clone(v)
			}
		}
		s.rows = append(s.rows, row)
	}
	s.fields = slices.Clone(rows.FieldDescriptions())
	return rows.Err()
}

// serverError reports whether err is PostgreSQL's refusal of a statement, which aborts
// the transaction it is in: a group that failed so committed nothing, and its
// statements can be written again (unlike after a lost connection, when the commit may
// have happened).
func serverError(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr)
}

// bufferedRows are the rows of a Query of Grouped, read whole.
type bufferedRows struct {
	fields []pgconn.FieldDescription
	rows   [][][]byte
	next   int // the index of the row after the current one
	err    error
	types  *pgtype.Map
}

// Close implements pgx.Rows.
func (r *bufferedRows) Close() { r.next = len(r.rows) + 1 }

// Err implements pgx.Rows.
func (r *bufferedRows) Err() error { return r.err }

// CommandTag implements pgx.Rows: only the rows' count is known.
func (r *bufferedRows) CommandTag() pgconn.CommandTag {
	return pgconn.NewCommandTag(fmt.Sprintf("SELECT %d", len(r.rows)))
}

// FieldDescriptions implements pgx.Rows.
func (r *bufferedRows) FieldDescriptions() []pgconn.FieldDescription { return r.fields }

// Next implements pgx.Rows.
func (r *bufferedRows) Next() bool {
	if r.next >= len(r.rows) {
		r.next = len(r.rows) + 1
		return false
	}
	r.next++
	return true
}

// current returns the row Next moved to.
func (r *bufferedRows) current() ([][]byte, error) {
	if r.next < 1 || r.next > len(r.rows) {
		return nil, errors.New("store: no current row")
	}
	return r.rows[r.next-1], nil
}

// Scan implements pgx.Rows.
func (r *bufferedRows) Scan(dest ...any) error {
	row, err := r.current()
	if err != nil {
		return err
	}
	if err := pgx.ScanRow(r.types, r.fields, row, dest...); err != nil {
		r.err = err
		return translate(err)
	}
	return nil
}

// Values implements pgx.Rows.
func (r *bufferedRows) Values() ([]any, error) {
	row, err := r.current()
	if err != nil {
		return nil, err
	}
	m := r.types
	values := make([]any, len(row))
	for i, f := range r.fields {
		if row[i] == nil {
			continue
		}
		t, ok := m.TypeForOID(f.DataTypeOID)
		if !ok {
			values[i] = slices.Clone(row[i])
			continue
		}
		if values[i], err = t.Codec.DecodeValue(m, f.DataTypeOID, f.Format, row[i]); err != nil {
			return nil, translate(err)
		}
	}
	return values, nil
}

// RawValues implements pgx.Rows.
func (r *bufferedRows) RawValues() [][]byte {
	row, _ := r.current()
	return row
}

// Conn implements pgx.Rows: the rows outlived their connection.
func (r *bufferedRows) Conn() *pgx.Conn { return nil }

// TypeMap implements pgx.Rows.
func (r *bufferedRows) TypeMap() *pgtype.Map { return r.types }
