package store_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/palyra/palyra/server/internal/store"
)

// TestGroupedStatementsCommitTogether writes many statements through Grouped at once,
// each with a companion: every one commits with its companion, whatever group it went
// in, and each caller reads its own statement's rows.
func TestGroupedStatementsCommitTogether(t *testing.T) {
	t.Parallel()
	s := companionSetup(t)
	db := s.GroupedDB()
	const n = 200
	companions := make([]*testCompanion, n)
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		companions[i] = &testCompanion{id: fmt.Sprintf("grouped-%d", i)}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := store.WithCompanion(t.Context(), companions[i])
			if i%2 == 0 {
				var k int
				var v string
				errs[i] = db.QueryRow(ctx, "insert into t (k, v) values ($1, $2) returning k, v", i, fmt.Sprint("v", i)).Scan(&k, &v)
				if errs[i] == nil && (k != i || v != fmt.Sprint("v", i)) {
					errs[i] = fmt.Errorf("statement %d read back (%d, %q)", i, k, v)
				}
				return
			}
			rows, err := db.Query(ctx, "insert into t (k, v) values ($1, $2), ($1 + 10000, $2) returning k, v", i, fmt.Sprint("v", i))
			if err != nil {
				errs[i] = err
				return
			}
			defer rows.Close()
			var got []int
			for rows.Next() {
				var k int
				var v string
				if err := rows.Scan(&k, &v); err != nil {
					errs[i] = err
					return
				}
				got = append(got, k)
			}
			if errs[i] = rows.Err(); errs[i] == nil && (len(got) != 2 || got[0]%10000 != i || got[1]%10000 != i) {
				errs[i] = fmt.Errorf("statement %d read back %v", i, got)
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	for _, c := range companions {
		if !companionRow(t, s, c) || c.committed.Load() != 1 {
			t.Errorf("companion %s: stored %v, told %d times", c.id, companionRow(t, s, c), c.committed.Load())
		}
	}
	var rows int
	if err := s.Pool().QueryRow(t.Context(), "select count(*) from t").Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if want := n + n/2; rows != want {
		t.Errorf("%d rows in t, want %d", rows, want)
	}
}

// TestGroupedFailureIsTheStatementsOwn has some statements of concurrent groups fail
// (a check constraint, a duplicate key): they alone fail, with their own error and
// without their companion's row, and the others commit.
func TestGroupedFailureIsTheStatementsOwn(t *testing.T) {
	t.Parallel()
	s := companionSetup(t)
	db := s.GroupedDB()
	if _, err := s.Pool().Exec(t.Context(), "insert into t (k, v) values (-1, 'taken')"); err != nil {
		t.Fatal(err)
	}
	const n = 120
	companions := make([]*testCompanion, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		companions[i] = &testCompanion{id: fmt.Sprintf("failing-%d", i)}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := store.WithCompanion(t.Context(), companions[i])
			k, v := i, "ok"
			switch i % 10 {
			case 3:
				v = "refused"
			case 7:
				k = -1
			}
			_, errs[i] = db.Exec(ctx, "insert into t (k, v) values ($1, $2)", k, v)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		c := companions[i]
		stored, told := companionRow(t, s, c), c.committed.Load()
		switch i % 10 {
		case 3:
			if !errors.Is(err, store.ErrInvalid) || stored || told != 0 {
				t.Errorf("statement %d (check): err %v, companion stored %v, told %d", i, err, stored, told)
			}
		case 7:
			if !errors.Is(err, store.ErrConflict) || stored || told != 0 {
				t.Errorf("statement %d (duplicate): err %v, companion stored %v, told %d", i, err, stored, told)
			}
		default:
			if err != nil || !stored || told != 1 {
				t.Errorf("statement %d: err %v, companion stored %v, told %d", i, err, stored, told)
			}
		}
	}
}

// TestGroupedStatementOfAnEndedContext is refused before it is written.
func TestGroupedStatementOfAnEndedContext(t *testing.T) {
	t.Parallel()
	s := companionSetup(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := s.GroupedDB().Exec(ctx, "insert into t (k, v) values (1, 'a')"); err == nil {
		t.Fatal("a statement of an ended context was written")
	}
	var rows int
	if err := s.Pool().QueryRow(t.Context(), "select count(*) from t").Scan(&rows); err != nil || rows != 0 {
		t.Fatalf("%d rows in t (%v), want none", rows, err)
	}
}

// TestGroupedRiders: a rider alone is written once its wait is over and commits with
// its companion; riders among other statements commit with them, whatever group they
// joined.
func TestGroupedRiders(t *testing.T) {
	t.Parallel()
	s := companionSetup(t)
	db := s.GroupedDB()
	c := &testCompanion{id: "rider-alone"}
	var k int
	if err := db.QueryRow(store.WithRider(store.WithCompanion(t.Context(), c)), "insert into t (k, v) values (1, 'alone') returning k").Scan(&k); err != nil || k != 1 {
		t.Fatalf("a rider alone: %v, read back %d", err, k)
	}
	if !companionRow(t, s, c) || c.committed.Load() != 1 {
		t.Errorf("the lone rider's companion: stored %v, told %d times", companionRow(t, s, c), c.committed.Load())
	}
	const n = 60
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := t.Context()
			if i%3 != 0 {
				ctx = store.WithRider(ctx)
			}
			_, errs[i] = db.Exec(ctx, "insert into t (k, v) values ($1, 'mixed')", 100+i)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	var rows int
	if err := s.Pool().QueryRow(t.Context(), "select count(*) from t").Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != n+1 {
		t.Errorf("%d rows in t, want %d", rows, n+1)
	}
}
