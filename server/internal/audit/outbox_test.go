package audit_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/oklog/ulid/v2"

	"github.com/palyra/palyra/gen/dbsqlc"
	"github.com/palyra/palyra/internal/eventually"
	"github.com/palyra/palyra/server/internal/audit"
	"github.com/palyra/palyra/server/internal/store"
)

// tick runs l.Tick, whose lock on a connection of its own is released at the test's end
// (as Run's end does).
func tick(t *testing.T, l *audit.Log) error {
	t.Helper()
	t.Cleanup(func() { _ = audit.Die(l) })
	return l.Tick(t.Context())
}

// callEvent is the event an audited call begins with.
func callEvent(i int) audit.Event {
	return audit.Event{
		Principal: fmt.Sprintf("token:%02d", i), Procedure: "/palyra.access.v1.AccessService/CreateToken",
		RemoteAddress: "192.0.2.7", RequestID: fmt.Sprintf("req-%02d", i), RequestIDSource: audit.FromClient,
	}
}

// change makes a change with ctx, the way a handler does: a user row.
func change(t *testing.T, s *store.Store, ctx context.Context, name string) {
	t.Helper()
	if _, err := s.Q().InsertUserIfMissing(ctx, dbsqlc.InsertUserIfMissingParams{ID: ulid.Make().String(), Name: name, Role: "operator"}); err != nil {
		t.Fatalf("change: %v", err)
	}
}

// outbox returns the ids and targets of the outbox rows.
func outbox(t *testing.T, s *store.Store) map[string]string {
	t.Helper()
	rows, err := s.Pool().Query(t.Context(), "select id, target from audit_outbox")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for rows.Next() {
		var id, target string
		if err := rows.Scan(&id, &target); err != nil {
			t.Fatal(err)
		}
		out[id] = target
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// only returns the one event of the log, failing unless there is exactly one.
func only(t *testing.T, l *audit.Log) audit.Record {
	t.Helper()
	recs, err := l.List(t.Context(), audit.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 {
		t.Fatalf("%d events in the log, want 1: %+v", len(recs), recs)
	}
	return recs[0]
}

// TestCallCommitsItsOutboxRowWithItsChange follows one call: its change commits with
// its outbox row, naming the target set before it; End moves the row into the log.
func TestCallCommitsItsOutboxRowWithItsChange(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx, call := b.log.Begin(t.Context(), callEvent(1))
	audit.SetTarget(ctx, "user:alice")
	change(t, b.store, ctx, "alice")
	change(t, b.store, ctx, "bob") // the row is there already: no second one
	if got := outbox(t, b.store); len(got) != 1 || !slices.Contains(slices.Collect(maps.Values(got)), "user:alice") {
		t.Fatalf("outbox after the change: %v, want one row naming user:alice", got)
	}
	if !call.Wrote() {
		t.Error("Wrote is false after a change")
	}
	audit.SetTarget(ctx, "user:alice user:bob")
	b.clock.Advance(time.Second)
	if err := call.End(ctx, audit.Success, "ok"); err != nil {
		t.Fatal(err)
	}
	r := only(t, b.log)
	if r.Code != "ok" || r.Target != "user:alice user:bob" || r.Principal != "token:01" ||
		r.RequestIDSource != audit.FromClient || r.Replica != "replica-a" || !r.Time.Equal(b.clock.Now().Truncate(time.Microsecond)) {
		t.Errorf("event %+v", r)
	}
	if got := outbox(t, b.store); len(got) != 0 {
		t.Errorf("outbox after End: %v, want empty", got)
	}

	// A call that only reads, or whose change rolls back, leaves no row.
	ctx, call = b.log.Begin(t.Context(), callEvent(2))
	if _, err := b.store.Q().GetUserByName(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	err := b.store.InTx(ctx, func(tx *store.Tx) error {
		if _, err := tx.Q().InsertUserIfMissing(ctx, dbsqlc.InsertUserIfMissingParams{ID: ulid.Make().String(), Name: "carol", Role: "operator"}); err != nil {
			return err
		}
		return errors.New("refused after all")
	})
	if err == nil || len(outbox(t, b.store)) != 0 {
		t.Errorf("a rolled back change: err %v, outbox %v", err, outbox(t, b.store))
	}
	if err := call.End(ctx, audit.Failure, "invalid_argument"); err != nil {
		t.Fatal(err)
	}
	if v := verify(t, b); !v.Intact || v.Checked != 2 {
		t.Errorf("verdict %+v", v)
	}
}

// TestOrphansOfADeadProcess: a call changed state and its process died before End.
// The replica's next process (same replica id) moves the row into the log at its first
// tick, as a committed change.
func TestOrphansOfADeadProcess(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx, _ := b.log.Begin(t.Context(), callEvent(1))
	audit.SetTarget(ctx, "user:alice")
	changed := b.clock.Now().Truncate(time.Microsecond)
	change(t, b.store, ctx, "alice")
	// The process dies: no End. Its successor starts.
	b.clock.Advance(time.Minute)
	next := audit.New(audit.Options{Store: b.store, ReplicaID: "replica-a", Now: b.clock.Now})
	if err := tick(t, next); err != nil {
		t.Fatal(err)
	}
	r := only(t, next)
	want := callEvent(1)
	if r.Code != audit.CodeCommitted || r.Outcome != audit.Success || r.Target != "user:alice" ||
		r.Principal != want.Principal || r.Procedure != want.Procedure || r.RemoteAddress != want.RemoteAddress ||
		r.RequestID != want.RequestID || r.RequestIDSource != audit.FromClient || r.Replica != "replica-a" || !r.Time.Equal(changed) {
		t.Errorf("event from the orphan: %+v", r)
	}
	if got := outbox(t, b.store); len(got) != 0 {
		t.Errorf("outbox after the drain: %v", got)
	}
	if v := verify(t, b); !v.Intact || v.Checked != 1 {
		t.Errorf("verdict %+v", v)
	}
}

// TestOrphansOfAReplicaThatDied: another replica drains a replica's rows once no
// session holds that replica's lock (its process died), never those of a live replica's
// running call, nor the young rows of a replica that has not taken its lock yet; when a
// call whose row was drained ends after all, its event is not written twice.
func TestOrphansOfAReplicaThatDied(t *testing.T) {
	t.Parallel()
	b := setup(t)
	other := audit.New(audit.Options{Store: openStore(t, b.url), ReplicaID: "replica-b", Now: b.clock.Now})
	starting := audit.New(audit.Options{Store: openStore(t, b.url), ReplicaID: "replica-c", Now: b.clock.Now})
	if err := tick(t, b.log); err != nil { // replica-a takes its lock
		t.Fatal(err)
	}
	ctx, call := b.log.Begin(t.Context(), callEvent(1))
	audit.SetTarget(ctx, "user:alice")
	change(t, b.store, ctx, "alice")
	b.clock.Advance(audit.OrphanGrace + time.Second)
	startingCtx, _ := starting.Begin(t.Context(), callEvent(2)) // replica-c has not taken its lock
	change(t, b.store, startingCtx, "carol")
	if err := tick(t, other); err != nil {
		t.Fatal(err)
	}
	if v := verify(t, b); v.Checked != 0 {
		t.Fatalf("a running call of a live replica, or a young row, was drained: %+v", v)
	}

	if err := audit.Die(b.log); err != nil { // replica-a's process dies
		t.Fatal(err)
	}
	// Its lock goes with its session, which PostgreSQL ends a moment after the
	// connection closes: the other replica drains the row at a tick after that.
	eventually.True(t, "the other replica drains the dead replica's row", func() bool {
		if verify(t, b).Checked != 0 {
			return true
		}
		if err := tick(t, other); err != nil {
			t.Fatal(err)
		}
		return false
	})
	if r := only(t, other); r.Code != audit.CodeCommitted || r.Replica != "replica-a" || r.Target != "user:alice" {
		t.Fatalf("drained event %+v", r)
	}
	// Its session was gone, not its process: the call ends.
	if err := call.End(ctx, audit.Success, "ok"); err != nil {
		t.Errorf("End after another replica drained the row: %v", err)
	}
	if r := only(t, b.log); r.Code != audit.CodeCommitted {
		t.Errorf("the event changed: %+v", r)
	}
	// replica-c never took its lock: once its row is old, it is drained too.
	b.clock.Advance(audit.OrphanGrace + time.Second)
	if err := tick(t, other); err != nil {
		t.Fatal(err)
	}
	if v := verify(t, b); !v.Intact || v.Checked != 2 || len(outbox(t, b.store)) != 0 {
		t.Errorf("verdict %+v, outbox %v", v, outbox(t, b.store))
	}
}

// TestDeferredWhileTheDatabaseIsAway takes the database away between a call's change
// and its end, and from an Append: both are deferred, and written when it is back, the
// call's with how it ended.
func TestDeferredWhileTheDatabaseIsAway(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx, call := b.log.Begin(t.Context(), callEvent(1))
	audit.SetTarget(ctx, "user:alice")
	change(t, b.store, ctx, "alice")

	back := takeDatabaseAway(t, b.url)
	if err := call.End(ctx, audit.Success, "ok"); !errors.Is(err, audit.ErrDeferred) {
		t.Fatalf("End with the database away: %v, want ErrDeferred", err)
	}
	if _, err := b.log.Append(t.Context(), event(2)); !errors.Is(err, audit.ErrDeferred) {
		t.Fatalf("Append with the database away: %v, want ErrDeferred", err)
	}
	if err := tick(t, b.log); err == nil {
		t.Fatal("a tick with the database away succeeded")
	}
	back()

	if err := tick(t, b.log); err != nil {
		t.Fatal(err)
	}
	recs, err := b.log.List(t.Context(), audit.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 || recs[1].Code != "ok" || recs[1].Target != "user:alice" || recs[0].Principal != "token:02" {
		t.Fatalf("after the database came back: %+v", recs)
	}
	if v := verify(t, b); !v.Intact || v.Checked != 2 || len(outbox(t, b.store)) != 0 {
		t.Errorf("verdict %+v, outbox %v", v, outbox(t, b.store))
	}
}

// takeDatabaseAway makes the test database refuse connections and ends its sessions;
// the returned function lets connections in again.
func takeDatabaseAway(t *testing.T, dbURL string) (back func()) {
	t.Helper()
	admin, err := pgx.Connect(t.Context(), os.Getenv("DATABASE_URL"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = admin.Close(context.Background()) })
	u, _ := url.Parse(dbURL)
	name := pgx.Identifier{strings.TrimPrefix(u.Path, "/")}.Sanitize()
	for _, q := range []string{
		"alter database " + name + " allow_connections false",
		"select pg_terminate_backend(pid) from pg_stat_activity where datname = '" + strings.Trim(name, `"`) + "'",
	} {
		if _, err := admin.Exec(t.Context(), q); err != nil {
			t.Fatal(err)
		}
	}
	back = func() {
		if _, err := admin.Exec(context.Background(), "alter database "+name+" allow_connections true"); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(back)
	return back
}

// TestStageAndPublish: events of a decision no call makes commit with it in the
// outbox; Publish moves them, and should the process die first, the drainer does, with
// their own outcome and code.
func TestStageAndPublish(t *testing.T) {
	t.Parallel()
	b := setup(t)
	stage := func(name string) []audit.Record {
		var recs []audit.Record
		err := b.store.InTx(t.Context(), func(tx *store.Tx) error {
			if _, err := tx.Q().InsertUserIfMissing(t.Context(), dbsqlc.InsertUserIfMissingParams{ID: ulid.Make().String(), Name: name, Role: "operator"}); err != nil {
				return err
			}
			var err error
			recs, err = b.log.Stage(t.Context(), tx, audit.Event{Principal: "system", Procedure: "users.expire", Target: "user:" + name, Outcome: audit.Success, Code: "ok"})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return recs
	}
	recs := stage("alice")
	if err := b.log.Publish(t.Context(), recs); err != nil {
		t.Fatal(err)
	}
	stage("bob") // the process dies before Publish
	b.clock.Advance(time.Second)
	next := audit.New(audit.Options{Store: b.store, ReplicaID: "replica-a", Now: b.clock.Now})
	if err := tick(t, next); err != nil {
		t.Fatal(err)
	}
	got, err := b.log.List(t.Context(), audit.Filter{Procedure: "users.expire"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Target != "user:bob" || got[0].Code != "ok" || got[1].Target != "user:alice" || got[1].ID != recs[0].ID {
		t.Errorf("staged events in the log: %+v", got)
	}
	if v := verify(t, b); !v.Intact || len(outbox(t, b.store)) != 0 {
		t.Errorf("verdict %+v, outbox %v", v, outbox(t, b.store))
	}
}

// TestSummaries counts refusals into one event per address, principal and code and
// window, written once the window ended; the addresses beyond the bound share one.
func TestSummaries(t *testing.T) {
	t.Parallel()
	b := setup(t)
	audit.WithSummaryKeys(b.log, 3)
	start := b.clock.Now().Truncate(audit.SummaryWindow).Add(audit.SummaryWindow) // a window's start
	b.clock.Set(start)
	refuse := func(remote, principal, procedure string, at time.Duration) {
		b.log.Refused(audit.Event{Time: start.Add(at), Principal: principal, Procedure: procedure,
			Code: "resource_exhausted", RemoteAddress: remote, Target: "ignored", RequestID: "ignored"})
	}
	for i := range 1000 {
		refuse("192.0.2.1", "anonymous", []string{"/p.S/B", "/p.S/A"}[i%2], time.Duration(i)*time.Millisecond)
	}
	refuse("192.0.2.2", "token:x", "/p.S/A", 2*time.Second)
	refuse("192.0.2.3", "anonymous", "/p.S/A", 3*time.Second)
	refuse("192.0.2.4", "anonymous", "/p.S/C", 4*time.Second) // beyond the bound
	refuse("192.0.2.5", "anonymous", "/p.S/D", 5*time.Second) // likewise
	refuse("192.0.2.1", "anonymous", "/p.S/A", audit.SummaryWindow+time.Second)

	b.clock.Set(start.Add(audit.SummaryWindow - time.Millisecond))
	if err := tick(t, b.log); err != nil {
		t.Fatal(err)
	}
	if v := verify(t, b); v.Checked != 0 {
		t.Fatalf("summaries written before their window ended: %+v", v)
	}
	b.clock.Set(start.Add(audit.SummaryWindow))
	if err := tick(t, b.log); err != nil {
		t.Fatal(err)
	}
	recs, err := b.log.List(t.Context(), audit.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		remote, principal string
		count             int64
		first, last       time.Duration
		procedures        string
	}
	var got []row
	for _, r := range recs {
		if r.Summary == nil || r.Outcome != audit.Failure || r.Code != "resource_exhausted" || r.Target != "" || r.RequestID != "" {
			t.Errorf("not a summary: %+v", r)
			continue
		}
		got = append(got, row{r.RemoteAddress, r.Principal, r.Summary.Count, r.Summary.First.Sub(start), r.Time.Sub(start),
			strings.Join(r.Summary.Procedures, " ")})
	}
	want := []row{ // newest first
		{"*", "anonymous", 2, 4 * time.Second, 5 * time.Second, "/p.S/C /p.S/D"},
		{"192.0.2.3", "anonymous", 1, 3 * time.Second, 3 * time.Second, "/p.S/A"},
		{"192.0.2.2", "token:x", 1, 2 * time.Second, 2 * time.Second, "/p.S/A"},
		{"192.0.2.1", "anonymous", 1000, 0, 999 * time.Millisecond, "/p.S/A /p.S/B"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("summaries:\n got %+v\nwant %+v", got, want)
	}
	// A summary is found by any of its procedures.
	if byProc, err := b.log.List(t.Context(), audit.Filter{Procedure: "/p.S/B"}); err != nil || len(byProc) != 1 || byProc[0].Summary.Count != 1000 {
		t.Errorf("list by procedure: %v, %+v", err, byProc)
	}

	// The Log stopping writes the summary of the window still open.
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.log.Run(ctx)
	}()
	cancel()
	<-done
	recs, err = b.log.List(t.Context(), audit.Filter{Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	if s := recs[0].Summary; s == nil || s.Count != 1 || !s.First.Equal(start.Add(audit.SummaryWindow+time.Second)) {
		t.Errorf("the open window's summary at stop: %+v", recs[0])
	}
	if v := verify(t, b); !v.Intact || v.Checked != 5 {
		t.Errorf("verdict %+v", v)
	}
}

// eventsInTable returns "procedure target outcome code" of every row of audit_events,
// read straight from the table (not through List, which waits for the events ended
// behind), oldest first.
func eventsInTable(t *testing.T, s *store.Store) []string {
	t.Helper()
	rows, err := s.Pool().Query(t.Context(), "select procedure || ' ' || target || ' ' || outcome || ' ' || code from audit_events order by sequence")
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// TestEndBehind: a call whose outbox row committed ends without waiting for its event,
// which is appended with the call's true outcome; List and Verify see it; the outbox row
// is gone once it is in. A call that committed nothing has no other record: its event is
// in the table when EndBehind returns.
func TestEndBehind(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const proc = "/palyra.access.v1.AccessService/CreateToken"
	for i := range 20 {
		ctx, call := b.log.Begin(t.Context(), callEvent(i))
		audit.SetTarget(ctx, fmt.Sprintf("user:u%02d", i))
		change(t, b.store, ctx, fmt.Sprintf("u%02d", i))
		if err := call.EndBehind(ctx, audit.Failure, "unavailable"); err != nil {
			t.Fatal(err)
		}
	}
	recs, err := b.log.List(t.Context(), audit.Filter{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 20 {
		t.Fatalf("List after 20 calls ended behind: %d events, want 20", len(recs))
	}
	for _, r := range recs {
		if r.Outcome != audit.Failure || r.Code != "unavailable" || !strings.HasPrefix(r.Target, "user:u") {
			t.Errorf("event %+v, want the call's own outcome and target", r)
		}
	}
	if got := outbox(t, b.store); len(got) != 0 {
		t.Errorf("outbox once the events are in: %v, want empty", got)
	}

	// Nothing committed: the event is in the table on return.
	ctx, call := b.log.Begin(t.Context(), callEvent(21))
	audit.SetTarget(ctx, "user:nobody")
	if err := call.EndBehind(ctx, audit.Failure, "invalid_argument"); err != nil {
		t.Fatal(err)
	}
	if got := eventsInTable(t, b.store); len(got) != 21 || got[20] != proc+" user:nobody failure invalid_argument" {
		t.Errorf("events in the table after a call that committed nothing ended: %q", got)
	}
	if v := verify(t, b); !v.Intact || v.Checked != 21 {
		t.Errorf("verdict %+v", v)
	}
}

// TestStopWaitsForTheEventsEndedBehind: the Log's Run returns only once the events of
// the calls ended behind are in the table, with their own outcomes.
func TestStopWaitsForTheEventsEndedBehind(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.log.Run(ctx)
	}()
	for i := range 10 {
		cctx, call := b.log.Begin(t.Context(), callEvent(i))
		audit.SetTarget(cctx, fmt.Sprintf("user:u%02d", i))
		change(t, b.store, cctx, fmt.Sprintf("u%02d", i))
		if err := call.EndBehind(cctx, audit.Success, "ok"); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	<-done
	got := eventsInTable(t, b.store)
	if len(got) != 10 {
		t.Fatalf("events in the table once Run returned: %q, want 10", got)
	}
	for _, e := range got {
		if !strings.HasSuffix(e, " success ok") {
			t.Errorf("event %q, want the call's own outcome", e)
		}
	}
}
