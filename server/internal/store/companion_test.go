package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/palyra/palyra/gen/dbsqlc"
	"github.com/palyra/palyra/server/internal/store"
	"github.com/palyra/palyra/server/internal/store/storetest"
)

// testCompanion inserts its id into companion_rows, the way the audit log's outbox
// row rides along with a call's changes.
type testCompanion struct {
	id        string
	committed atomic.Int32
}

func (c *testCompanion) CompanionStatement() (string, []any, bool) {
	return "insert into companion_rows (id) values ($1::text) on conflict (id) do nothing", []any{c.id}, true
}

func (c *testCompanion) Committed() { c.committed.Add(1) }

// companionSetup is a store on a database of its own with a companion_rows table and
// a table t to change.
func companionSetup(t *testing.T) *store.Store {
	t.Helper()
	s := storetest.New(t)
	if _, err := s.Pool().Exec(t.Context(), `
		create table companion_rows (id text primary key);
		create table t (k int primary key, v text not null check (v <> 'refused'))`); err != nil {
		t.Fatal(err)
	}
	return s
}

// companionRow says whether c's row is in companion_rows.
func companionRow(t *testing.T, s *store.Store, c *testCompanion) bool {
	t.Helper()
	var n int
	if err := s.Pool().QueryRow(t.Context(), "select count(*) from companion_rows where id = $1", c.id).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n == 1
}

func TestCompanionRidesWithWritesThroughThePool(t *testing.T) {
	t.Parallel()
	s := companionSetup(t)
	db := s.PoolDB()
	tests := map[string]struct {
		run      func(ctx context.Context) error
		carried  bool // the companion's row was written
		told     bool // Committed was called
		unstored bool // the statement's own change is not there
	}{
		"exec insert": {
			run: func(ctx context.Context) error {
				_, err := db.Exec(ctx, "-- name: X :exec\ninsert into t (k, v) values ($1, $2)", 1, "a")
				return err
			},
			carried: true, told: true,
		},
		"query row of an update that matches nothing": {
			run: func(ctx context.Context) error {
				var k int
				err := db.QueryRow(ctx, "update t set v = $1 where k = -1 returning k", "b").Scan(&k)
				if errors.Is(err, store.ErrNotFound) {
					return nil
				}
				return err
			},
			carried: true, told: true,
		},
		"query of a with statement that writes": {
			run: func(ctx context.Context) error {
				rows, err := db.Query(ctx, "with gone as (delete from t where k = $1 returning k) select k from gone", 99)
				if err != nil {
					return err
				}
				for rows.Next() {
				}
				return rows.Err()
			},
			carried: true, told: true,
		},
		"a refused write takes the companion with it": {
			run: func(ctx context.Context) error {
				_, err := db.Exec(ctx, "insert into t (k, v) values ($1, $2)", 2, "refused")
				if !errors.Is(err, store.ErrInvalid) {
					return errors.New("the check constraint did not refuse the row")
				}
				return nil
			},
			unstored: true,
		},
		"a read carries nothing": {
			run: func(ctx context.Context) error {
				var n int
				return db.QueryRow(ctx, "select count(*) from t where v <> $1", "x").Scan(&n)
			},
		},
		"a locking read carries nothing": {
			run: func(ctx context.Context) error {
				rows, err := db.Query(ctx, "with c as (select k from t for update skip locked) select k from c")
				if err != nil {
					return err
				}
				rows.Close()
				return rows.Err()
			},
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			c := &testCompanion{id: name}
			if err := tt.run(store.WithCompanion(t.Context(), c)); err != nil {
				t.Fatal(err)
			}
			if got := companionRow(t, s, c); got != tt.carried {
				t.Errorf("companion row stored: %v, want %v", got, tt.carried)
			}
			if got := c.committed.Load() > 0; got != tt.told {
				t.Errorf("Committed called: %v, want %v", got, tt.told)
			}
		})
	}

	// Without a companion in the context, or with it taken out, nothing rides along.
	c := &testCompanion{id: "removed"}
	ctx := store.WithoutCompanion(store.WithCompanion(t.Context(), c))
	if _, err := db.Exec(ctx, "insert into t (k, v) values ($1, $2)", 3, "c"); err != nil {
		t.Fatal(err)
	}
	if companionRow(t, s, c) || c.committed.Load() != 0 {
		t.Error("a context without its companion still carried it")
	}
}

func TestCompanionCommitsWithTheTransaction(t *testing.T) {
	t.Parallel()
	s := companionSetup(t)
	// Committed: one companion row, however many writes, told after the commit.
	c := &testCompanion{id: "committed"}
	ctx := store.WithCompanion(t.Context(), c)
	err := s.InTxDB(ctx, func(db dbsqlc.DBTX) error {
		for k := range 3 {
			if _, err := db.Exec(ctx, "insert into t (k, v) values ($1, 'x')", k); err != nil {
				return err
			}
			if c.committed.Load() != 0 {
				return errors.New("Committed before the commit")
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !companionRow(t, s, c) || c.committed.Load() != 1 {
		t.Errorf("after the commit: stored %v, told %d times; want stored, told once", companionRow(t, s, c), c.committed.Load())
	}

	// Rolled back: neither the change nor the companion, and nothing told.
	c = &testCompanion{id: "rolled back"}
	ctx = store.WithCompanion(t.Context(), c)
	err = s.InTxDB(ctx, func(db dbsqlc.DBTX) error {
		if _, err := db.Exec(ctx, "insert into t (k, v) values (10, 'y')"); err != nil {
			return err
		}
		return errors.New("changed my mind")
	})
	if err == nil || companionRow(t, s, c) || c.committed.Load() != 0 {
		t.Errorf("after a rollback: err %v, stored %v, told %d times", err, companionRow(t, s, c), c.committed.Load())
	}

	// A transaction that only reads carries nothing.
	c = &testCompanion{id: "read only"}
	ctx = store.WithCompanion(t.Context(), c)
	err = s.InTxDB(ctx, func(db dbsqlc.DBTX) error {
		var n int
		return db.QueryRow(ctx, "select count(*) from t").Scan(&n)
	})
	if err != nil || companionRow(t, s, c) || c.committed.Load() != 0 {
		t.Errorf("read-only transaction: err %v, stored %v, told %d times", err, companionRow(t, s, c), c.committed.Load())
	}
}

func TestWithCompanion(t *testing.T) {
	t.Parallel()
	const c = "insert into x values ($1, $2)"
	tests := map[string]struct{ sql, want string }{
		"plain": {
			"-- name: A :exec\ninsert into t values ($1)",
			"-- name: A :exec\nwith store_companion as (insert into x values ($2, $3)) insert into t values ($1)",
		},
		"with": {
			"-- name: B :many\nWITH a as (update t set v = $1 returning k) select k from a",
			"-- name: B :many\nwith store_companion as (insert into x values ($2, $3)), a as (update t set v = $1 returning k) select k from a",
		},
		"with recursive": {
			"with recursive r(n) as (select 1) delete from t where k in (select n from r)",
			"with recursive store_companion as (insert into x values ($1, $2)), r(n) as (select 1) delete from t where k in (select n from r)",
		},
		"a table named withheld": {
			"update withheld set v = $1",
			"with store_companion as (insert into x values ($2, $3)) update withheld set v = $1",
		},
	}
	for name, tt := range tests {
		n := strings.Count(tt.sql, "$")
		if got := store.WithCompanionSQL(tt.sql, n, c); got != tt.want {
			t.Errorf("%s:\n got %q\nwant %q", name, got, tt.want)
		}
	}
}

// TestWritesMatchesThePlan checks writes against PostgreSQL: every query sqlc generated
// (gen/dbsqlc) is a write exactly when its plan modifies a table. A query the check
// gets wrong would change state without the audit outbox row of its call, or write the
// row for a call that changed nothing.
func TestWritesMatchesThePlan(t *testing.T) {
	t.Parallel()
	queries := generatedQueries(t)
	if len(queries) < 50 {
		t.Fatalf("found %d generated queries; the parser of gen/dbsqlc is broken", len(queries))
	}
	conn, err := pgx.Connect(t.Context(), storetest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var nWrites int
	for name, sql := range queries {
		sd, err := conn.Prepare(t.Context(), name, sql)
		if err != nil {
			t.Errorf("%s: prepare: %v", name, err)
			continue
		}
		params := make([]string, len(sd.ParamOIDs))
		for i := range params {
			params[i] = "null"
		}
		explain := "explain (format json) execute " + pgx.Identifier{name}.Sanitize()
		if len(params) > 0 {
			explain += "(" + strings.Join(params, ", ") + ")"
		}
		var plan []byte
		if err := conn.QueryRow(t.Context(), explain).Scan(&plan); err != nil {
			t.Errorf("%s: %s: %v", name, explain, err)
			continue
		}
		modifies := planModifies(t, plan)
		if modifies {
			nWrites++
		}
		if got := store.Writes(sql); got != modifies {
			t.Errorf("%s: writes says %v, PostgreSQL's plan modifies a table: %v", name, got, modifies)
		}
	}
	if nWrites == 0 || nWrites == len(queries) {
		t.Errorf("%d of %d queries write: the check cannot tell them apart", nWrites, len(queries))
	}
}

// planModifies reports whether an EXPLAIN (FORMAT JSON) plan holds a ModifyTable node.
func planModifies(t *testing.T, plan []byte) bool {
	t.Helper()
	var doc []struct{ Plan any }
	if err := json.Unmarshal(plan, &doc); err != nil {
		t.Fatal(err)
	}
	var walk func(v any) bool
	walk = func(v any) bool {
		switch v := v.(type) {
		case map[string]any:
			if v["Node Type"] == "ModifyTable" {
				return true
			}
			for _, c := range v {
				if walk(c) {
					return true
				}
			}
		case []any:
			for _, c := range v {
				if walk(c) {
					return true
				}
			}
		}
		return false
	}
	return walk(doc[0].Plan)
}

// generatedQueries reads the SQL of every query in gen/dbsqlc, by query name.
func generatedQueries(t *testing.T) map[string]string {
	t.Helper()
	files, err := filepath.Glob("../../../gen/dbsqlc/*.sql.go")
	if err != nil || len(files) == 0 {
		t.Fatalf("gen/dbsqlc: %v", err)
	}
	out := map[string]string{}
	fset := token.NewFileSet()
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		file, err := parser.ParseFile(fset, f, src, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(file, func(n ast.Node) bool {
			lit, ok := n.(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return true
			}
			sql, err := strconv.Unquote(lit.Value)
			if err != nil || !strings.HasPrefix(sql, "-- name: ") {
				return true
			}
			name, _, _ := strings.Cut(strings.TrimPrefix(sql, "-- name: "), " ")
			out[name] = sql
			return true
		})
	}
	return out
}
