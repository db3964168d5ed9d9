package audit

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/palyra/palyra/gen/dbsqlc"
	"github.com/palyra/palyra/server/internal/store"
)

// The drainer's and the backlog's constants.
const (
	// tickEvery is how often Run drains, and checks that it holds its replica's lock.
	tickEvery = 5 * time.Second
	// orphanGrace is how old an outbox row of a replica whose lock no session holds must
	// be before the drainers take it for an orphan: a replica takes its lock when it
	// starts and when the database comes back, within a tick.
	orphanGrace = 2 * tickEvery
	// drainPage is how many outbox rows the drainer reads at a time.
	drainPage = maxAppendBatch
	// maxDeferred bounds the events kept while the database cannot be reached.
	maxDeferred = 10000
	// stopTimeout bounds the last appends when the Log stops.
	stopTimeout = 10 * time.Second
)

// outboxInsert is the statement the store adds to the first write of each transaction
// of a Call (store.Companion): the event's outbox row, as the drainer writes it should
// the call never end. It is the one statement of the package outside sqlc/queries: the
// store splices it into the statements of other packages, which sqlc cannot express.
const outboxInsert = `insert into audit_outbox (id, replica_id, recorded_at, principal, procedure,
    target, outcome, code, remote_address, request_id, request_id_source)
values ($1::text, $2::text, $3::timestamptz, $4::text, $5::text, $6::text, 'success', '` + CodeCommitted + `',
    $7::text, $8::text, $9::text)
on conflict (id) do nothing`

// Call is the audit record of one operation that may change state, in progress: an RPC
// call (the access interceptor's), or an operation of palyrad's own. Begin it before
// the first change and End it after the last: the changes commit with the event's
// outbox row (package documentation). It is safe for concurrent use.
type Call struct {
	l     *Log
	id    string
	event Event // as begun; the target is the note's
	note  *Note

	mu      sync.Mutex // guards the following
	offered bool       // the outbox row went with a write, committed or not
	stored  bool       // a transaction holding the row committed
	ended   bool
}

var _ store.Companion = (*Call)(nil)

// Begin starts the record of an operation described by e, whose Outcome, Code and Time
// End sets, and whose Target is the one SetTarget names in the returned context (in the
// Note ctx carries, or a new one). The changes made with the returned context carry the
// event's outbox row.
func (l *Log) Begin(ctx context.Context, e Event) (context.Context, *Call) {
	n := noteOf(ctx)
	if n == nil {
		ctx, n = WithNote(ctx)
	}
	c := &Call{l: l, id: newID(), event: e, note: n}
	l.omu.Lock()
	l.calls[c.id] = c
	l.omu.Unlock()
	return store.WithCompanion(ctx, c), c
}

// CompanionStatement implements store.Companion: the outbox row, until a transaction
// holding it committed or the call ended.
func (c *Call) CompanionStatement() (string, []any, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stored || c.ended {
		return "", nil, false
	}
	c.offered = true
	e := c.event
	return outboxInsert, []any{
		c.id, storable(c.l.replica), c.l.now().Truncate(time.Microsecond).UTC(), storable(e.Principal),
		storable(e.Procedure), storable(c.note.Target()), storable(e.RemoteAddress), storable(e.RequestID),
		e.RequestIDSource,
	}, true
}

// Committed implements store.Companion.
func (c *Call) Committed() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stored = true
}

// Wrote reports whether the operation wrote to the database (or tried to): whether its
// outbox row may be there.
func (c *Call) Wrote() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.offered
}

// End appends the operation's event, once it made its last change, with how it ended;
// the insert deletes the event's outbox row. When the database cannot be reached, the
// error matches ErrDeferred: the Log appends the event later, and its outbox row keeps
// it safe meanwhile.
func (c *Call) End(ctx context.Context, outcome Outcome, code string) error {
	c.finish()
	e := c.event
	e.Target, e.Outcome, e.Code, e.Time = c.note.Target(), outcome, code, time.Time{}
	rec, err := c.l.record(c.id, e)
	if err == nil {
		err = c.l.write(ctx, []Record{rec})[0].err
	}
	c.l.forget(c.id)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	return nil
}

// EndBehind ends the operation as End does, but when a transaction holding its outbox
// row committed (the change is recorded already) it returns at once: the event, with
// how the operation ended, is appended behind it, through the same group commit as
// every append, riding with the replica's next writes when they come within a few
// milliseconds (store.WithRider); the operation counts as running until it is in the log (the drainer
// leaves its outbox row alone meanwhile). List and Verify wait for the events ended
// behind before they read, and the Log, when it stops, for all of them. An append that
// fails does what End's failure does: deferred when the database could not be reached,
// else logged, and in both cases the outbox row keeps the record. An operation whose
// outbox row did not commit (it wrote nothing, or its writes rolled back or their commit
// is unknown) has no other record: EndBehind appends its event before it returns, as End.
func (c *Call) EndBehind(ctx context.Context, outcome Outcome, code string) error {
	c.finish()
	c.mu.Lock()
	stored := c.stored
	c.mu.Unlock()
	if !stored {
		return c.End(ctx, outcome, code)
	}
	e := c.event
	e.Target, e.Outcome, e.Code, e.Time = c.note.Target(), outcome, code, time.Time{}
	rec, err := c.l.record(c.id, e)
	if err != nil {
		c.l.forget(c.id)
		return fmt.Errorf("audit: %w", err)
	}
	appended := make(chan struct{})
	c.l.omu.Lock()
	c.l.behind[c.id] = appended
	c.l.omu.Unlock()
	go func() {
		defer close(appended)
		err := c.l.writeAs(context.WithoutCancel(ctx), []Record{rec}, true)[0].err
		c.l.forget(c.id)
		if err != nil && !errors.Is(err, ErrDeferred) {
			c.l.log.Error("audit record lost from the log; its outbox row keeps it", "procedure", rec.Procedure,
				"principal", rec.Principal, "code", rec.Code, "request_id", rec.RequestID, "err", err)
		}
	}()
	return nil
}

// settle waits until the events ended behind (EndBehind) before it was called are
// appended, or failed to be, or ctx is done.
func (l *Log) settle(ctx context.Context) error {
	l.omu.Lock()
	waits := make([]chan struct{}, 0, len(l.behind))
	for _, ch := range l.behind {
		waits = append(waits, ch)
	}
	l.omu.Unlock()
	for _, ch := range waits {
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// Abandon ends an operation without an event: for one that wrote nothing (Wrote is
// false) and is recorded otherwise (Log.Refused).
func (c *Call) Abandon() {
	c.finish()
	c.l.forget(c.id)
}

// finish stops the outbox row from riding along with further writes.
func (c *Call) finish() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ended = true
}

// forget drops a call that ended.
func (l *Log) forget(id string) {
	l.omu.Lock()
	defer l.omu.Unlock()
	delete(l.calls, id)
	delete(l.behind, id)
}

// Stage writes the outbox rows of events in transaction tx, so that they commit with
// the change they record (a decision no call makes, such as an expiry), and returns the
// events as they will be stored. Once the transaction committed, Publish them; should
// the replica die first, the drainer does.
func (l *Log) Stage(ctx context.Context, tx *store.Tx, events ...Event) ([]Record, error) {
	recs := make([]Record, len(events))
	p := dbsqlc.InsertAuditOutboxParams{ReplicaID: storable(l.replica)}
	for i, e := range events {
		if e.Summary != nil {
			return nil, fmt.Errorf("audit: stage: a summary: %w", ErrInvalid)
		}
		r, err := l.record(newID(), e)
		if err != nil {
			return nil, fmt.Errorf("audit: stage: %w", err)
		}
		recs[i] = r
		p.Ids = append(p.Ids, r.ID)
		p.Times = append(p.Times, r.Time)
		p.Principals = append(p.Principals, r.Principal)
		p.Procedures = append(p.Procedures, r.Procedure)
		p.Targets = append(p.Targets, r.Target)
		p.Outcomes = append(p.Outcomes, string(r.Outcome))
		p.Codes = append(p.Codes, r.Code)
		p.RemoteAddresses = append(p.RemoteAddresses, r.RemoteAddress)
		p.RequestIds = append(p.RequestIds, r.RequestID)
		p.RequestIDSources = append(p.RequestIDSources, r.RequestIDSource)
	}
	if len(recs) == 0 {
		return recs, nil
	}
	if err := tx.Q().InsertAuditOutbox(ctx, p); err != nil {
		return nil, fmt.Errorf("audit: stage: %w", err)
	}
	return recs, nil
}

// Publish appends events that Stage wrote to the outbox in a transaction that
// committed; the insert deletes their outbox rows.
func (l *Log) Publish(ctx context.Context, recs []Record) error {
	var errs []error
	for _, w := range l.write(ctx, recs) {
		errs = append(errs, w.err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("audit: publish: %w", err)
	}
	return nil
}

// Run keeps the Log's background work going until ctx is done: every tickEvery, and as
// soon as an append succeeds after the database was unreachable, it takes its replica's
// lock if it does not hold it, appends the deferred events and the summaries of the
// windows that ended, and drains the orphaned outbox rows. When ctx is done it appends
// every summary and what is deferred, releases the lock, and returns. Run is meant to
// have its own goroutine.
func (l *Log) Run(ctx context.Context) {
	tick := time.NewTicker(tickEvery)
	defer tick.Stop()
	for {
		if err := l.Tick(ctx); err != nil && ctx.Err() == nil {
			l.log.Debug("audit housekeeping incomplete; it is tried again", "err", err)
		}
		select {
		case <-ctx.Done():
			l.stop(context.WithoutCancel(ctx))
			return
		case <-tick.C:
		case <-l.wake:
		}
	}
}

// Tick is one round of Run's work. Only Run's goroutine calls it (and tests).
func (l *Log) Tick(ctx context.Context) error {
	ctx = store.WithoutCompanion(ctx)
	return errors.Join(l.lock(ctx), l.retry(ctx), l.flush(ctx, false), l.drain(ctx))
}

// lock takes the replica's lock (LockAuditReplica) on a connection of the Log's own,
// unless it holds it: the drainers of the other replicas take the outbox rows of a
// replica for orphans once no session holds its lock, that is once its process died
// (the database ends the sessions of a client that is gone; keepalives bound how long
// that takes for a host that vanished) or the database restarted (then every replica
// takes its lock again at its next tick). Only Run's goroutine calls it.
func (l *Log) lock(ctx context.Context) error {
	if l.owner != nil && !l.owner.IsClosed() {
		return nil
	}
	cfg := l.store.Pool().Config().ConnConfig.Copy()
	maps.Copy(cfg.RuntimeParams, map[string]string{
		"application_name": "palyrad-audit", "tcp_keepalives_idle": "30", "tcp_keepalives_interval": "10",
		"tcp_keepalives_count": "3",
	})
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("audit: connect to hold the replica's lock: %w", err)
	}
	held, err := dbsqlc.New(conn).LockAuditReplica(ctx, l.replica)
	if err != nil || !held {
		_ = conn.Close(context.WithoutCancel(ctx))
		if err == nil {
			err = fmt.Errorf("another process holds the lock of replica id %q: replica ids must be unique", l.replica)
		}
		return fmt.Errorf("audit: take the replica's lock: %w", err)
	}
	l.owner = conn
	return nil
}

// stop appends every summary and the deferred events, and releases the replica's
// lock, as the Log stops.
func (l *Log) stop(ctx context.Context) {
	ctx, cancel := context.WithTimeout(store.WithoutCompanion(ctx), stopTimeout)
	defer cancel()
	if l.owner != nil {
		defer l.owner.Close(ctx)
	}
	if err := errors.Join(l.settle(ctx), l.flush(ctx, true), l.retry(ctx)); err != nil {
		l.log.Error("audit events not written at shutdown", "err", err)
	}
	l.omu.Lock()
	lost := len(l.deferred)
	l.omu.Unlock()
	if lost > 0 {
		l.log.Error("audit events lost at shutdown: the database is unavailable", "events", lost)
	}
}

// keep keeps the records of a batch that failed for want of the database, up to
// maxDeferred (the oldest are lost beyond; those of calls stay safe in their outbox
// rows).
func (l *Log) keep(batch []*appendCall) {
	l.omu.Lock()
	defer l.omu.Unlock()
	for _, c := range batch {
		if !c.elsewhere {
			l.deferred = append(l.deferred, c.rec)
		}
	}
	if over := len(l.deferred) - maxDeferred; over > 0 {
		l.log.Error("audit events lost: too many waiting for the database", "events", over)
		l.deferred = slices.Delete(l.deferred, 0, over)
	}
	if !l.failed {
		l.log.Warn("audit events deferred: the database is unavailable; they are written once it answers")
	}
	l.failed = true
}

// reached notes that the database answered a batch; after a failure, it wakes Run to
// write what waits.
func (l *Log) reached() {
	l.omu.Lock()
	defer l.omu.Unlock()
	if !l.failed {
		return
	}
	l.failed = false
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// retry appends the deferred events again; those that fail for want of the database
// are deferred again.
func (l *Log) retry(ctx context.Context) error {
	l.omu.Lock()
	recs := l.deferred
	l.deferred = nil
	l.omu.Unlock()
	if len(recs) == 0 {
		return nil
	}
	var errs []error
	for _, w := range l.write(ctx, recs) {
		if w.err != nil && !errors.Is(w.err, ErrDeferred) {
			l.log.Error("audit record lost", "id", w.rec.ID, "procedure", w.rec.Procedure, "err", w.err)
		}
		errs = append(errs, w.err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("audit: deferred events: %w", err)
	}
	l.log.Info("deferred audit events written", "events", len(recs))
	return nil
}

// busy returns the ids of the calls in progress and of the deferred events: their
// outbox rows are not orphans.
func (l *Log) busy() map[string]bool {
	l.omu.Lock()
	defer l.omu.Unlock()
	ids := make(map[string]bool, len(l.calls)+len(l.deferred))
	for id := range l.calls {
		ids[id] = true
	}
	for _, r := range l.deferred {
		ids[r.ID] = true
	}
	return ids
}

// drain moves into the log the outbox rows whose call will not end, as the package
// documentation describes, a page at a time; first it deletes the rows whose event is
// in the log already.
func (l *Log) drain(ctx context.Context) error {
	q := l.store.Q()
	if _, err := q.DeleteRecordedOutbox(ctx); err != nil {
		return fmt.Errorf("audit: drain: %w", err)
	}
	for {
		busy := l.busy()
		ids := make([]string, 0, len(busy))
		for id := range busy {
			ids = append(ids, id)
		}
		own := l.replica
		if l.owner == nil || l.owner.IsClosed() {
			own = "" // another process may run with this replica id: its rows are not ours
		}
		rows, err := q.ListAuditOrphans(ctx, dbsqlc.ListAuditOrphansParams{
			Busy: ids, ReplicaID: own, GraceBefore: l.now().Add(-orphanGrace), PageLimit: drainPage,
		})
		if err != nil {
			return fmt.Errorf("audit: drain: %w", err)
		}
		// A call that began after busy was read may have written its row since.
		busy = l.busy()
		recs := make([]Record, 0, len(rows))
		for _, row := range rows {
			if busy[row.ID] {
				continue
			}
			r, err := l.record(row.ID, Event{
				Time: row.RecordedAt, Principal: row.Principal, Procedure: row.Procedure, Target: row.Target,
				Outcome: Outcome(row.Outcome), Code: row.Code, RemoteAddress: row.RemoteAddress,
				RequestID: row.RequestID, RequestIDSource: row.RequestIDSource, Replica: row.ReplicaID,
			})
			if err != nil {
				return fmt.Errorf("audit: drain: outbox row %s: %w", row.ID, err)
			}
			recs = append(recs, r)
		}
		if err := l.Publish(ctx, recs); err != nil {
			return fmt.Errorf("audit: drain: %w", err)
		}
		if len(recs) > 0 {
			l.log.Info("audit events written from the outbox rows of calls that did not end", "events", len(recs))
		}
		if len(rows) < drainPage || len(recs) == 0 {
			return nil
		}
	}
}
