// Package audit is palyrad's audit log: an append-only, hash-chained record of every
// state-changing call, every refused authentication or permission, and summaries of the
// refusals that are not worth a record each.
//
// The access interceptor begins a Call (Log.Begin) for every call of an RPC that may
// change state and ends it (Call.End) when the call ends; handlers name what they act on
// with SetTarget (note.go), before they change it. Refused calls that changed nothing
// are appended when they end (Log.Append); those a rate limit turned away, and TLS
// handshakes refused for their client certificate, are counted into summaries
// (Log.Refused). The log lives in the audit_events table (sqlc/migrations/00002_access.sql
// and 00009_audit_outbox.sql), which a trigger keeps append-only; the hash chain
// described below detects what gets past the trigger.
//
// # The chain
//
// Every event has a sequence number, 1, 2, 3, ... without gaps, in the order the events
// were appended. Event n stores prev_hash, the hash of event n-1 (32 zero bytes for
// event 1), and its own hash, computed by the formula its format column names. Format
// 1, the formula of the events palyrad wrote before it recorded replicas and summaries:
//
//	hash = SHA-256( "palyra/v1/audit" 0x00      the domain: 16 bytes, the last one zero
//	                prev_hash                   32 bytes
//	                field(sequence)
//	                field(id)
//	                field(time)
//	                field(principal)
//	                field(procedure)
//	                field(target)
//	                field(outcome)
//	                field(code)
//	                field(remote_address)
//	                field(request_id) )
//
// Format 2, the formula of every event palyrad writes now:
//
//	hash = SHA-256( "palyra/v2/audit" 0x00      16 bytes
//	                prev_hash                   32 bytes
//	                field(sequence) ... field(request_id)    the ten fields of format 1
//	                field(request_id_source)
//	                field(replica_id)
//	                field(summarized)
//	                field(first_time)
//	                field(procedures) )
//
//	field(s) = uvarint(len(s)) s
//
// concatenated without separators, where:
//
//   - uvarint(n) is n as an unsigned LEB128 varint (Go's encoding/binary.AppendUvarint,
//     protobuf's varint): seven bits per byte, least significant group first, the high
//     bit set on every byte but the last. The length prefixes make the encoding
//     unambiguous: no two different events hash the same bytes.
//   - len(s) counts the bytes of s, which is the column's text as stored, in UTF-8.
//   - sequence is the decimal number in ASCII, without sign or leading zeros: "42".
//     summarized is written the same way ("0" for an event that is not a summary).
//   - id is the event's ULID in its canonical 26-character form.
//   - time is occurred_at in UTC, in the layout of Go's time.RFC3339Nano: at most six
//     fractional digits (PostgreSQL keeps microseconds), trailing zeros of the fraction
//     removed, no fraction at all when it is zero, and "Z" for the zone. For example
//     "2025-03-01T12:00:00Z" or "2025-03-01T12:00:00.1234Z". first_time is first_at
//     written the same way, or empty when first_at is null.
//   - outcome is "success" or "failure"; request_id_source is "client" (the caller
//     chose the request id), "replica" (the replica made it up) or empty; the other
//     fields are free text, possibly empty.
//
// The domains differ, so that a row's format cannot be changed without breaking its
// hash. An external tool verifies the log by reading the rows in sequence order and
// checking, for each, that its sequence follows the previous one, that its prev_hash is
// the previous row's hash, and that its hash is its format's formula over its own
// columns. Log.Verify does exactly that and reports the first row where one of the
// checks fails.
//
// # Appending
//
// Log.Append writes events in batches (group commit): while one batch is being written,
// the events appended meanwhile wait, and the next batch is all of them, up to
// maxAppendBatch. A batch is written as follows:
//
//  1. Take the head, the sequence and hash of the newest event: the one this Log
//     remembers from its last batch, or else (first batch, or the last one failed) read
//     it from the table, which costs one more round trip.
//  2. Number the batch's events head+1, head+2, ... and chain their hashes after the
//     head's.
//  3. Insert them all with one statement (InsertAuditEvents in sqlc/queries/audit.sql),
//     which deletes their outbox rows (see below) too: one round trip, one implicit
//     transaction (shared with the replica's other writes of the moment: store.Grouped),
//     all or nothing.
//  4. If the table's primary key refuses a sequence, another palyrad sharing the
//     database appended since the head was taken: read the head again and go back to 2.
//     The last of maxAppendAttempts attempts instead reads the head and inserts in one
//     transaction under the append lock, which every writer takes before it inserts;
//     there the head read is the true one, so the attempt cannot lose the race.
//  5. If the unique id refuses an event, another writer moved that event's outbox row
//     into the log first: drop the events already in the log from the batch (they are
//     recorded) and go back to 1, without counting an attempt.
//  6. Remember the batch's last event as the head. Any other error fails every Append
//     of the batch, and the head is forgotten; when the database could not be reached,
//     the events are kept (up to maxDeferred) and appended again once it answers.
//
// Rows are never updated or deleted and sequences are unique, so an insert after a head
// that is no longer the newest event is always refused: the chain cannot fork or skip.
//
// # No change without its record: the outbox
//
// A call that changes state commits its change and, with it, its event's row in
// audit_outbox: Log.Begin puts the Call in the call's context as a store.Companion, and
// the store adds the row's insert to the first statement that writes in every
// transaction of the call (until one committed), in the same statement, at no round trip
// of its own. Call.End appends the event with how the call ended, its id the outbox
// row's, and the insert deletes the row. When the replica dies, or the database goes
// away, between the change and the end, the row stays; every replica's drainer (Run:
// at start, every few seconds, and as soon as an append succeeds after one failed)
// moves into the log the outbox rows whose call will not end: its own replica's rows of
// calls no longer running, and the rows of a replica that is gone. A replica is alive
// while a session of its holds the advisory lock of its replica id, which Run takes on
// a connection of its own: the lock goes with the process (the database ends the
// session of a client that died) and with a database restart (after which every
// replica takes it again at its next tick; rows younger than orphanGrace are left
// alone meanwhile). Such an event says what the row says: the call's principal,
// procedure, target, address and request id, outcome success and code "committed" (the
// change committed; how the call ended is not known), at the time of the change. An
// event is written once: two writers moving the same row meet on the unique id.
//
// An RPC call's event is appended behind its answer (Call.EndBehind, which the access
// interceptor uses): once a transaction holding the call's outbox row committed, the
// change has its record, so the call answers without waiting for the event's append,
// which goes through the same group commit as a rider (store.WithRider): it joins the
// commit of the replica's next write when one comes within a few milliseconds, and is
// written alone otherwise. What this promises, precisely:
//
//   - The event carries the call's true outcome and code, once appended. Until then the
//     call counts as running: the drainers leave its outbox row alone. Should the
//     replica die, or the database go away for good, in that moment, the drainers write
//     the event from the outbox row, as after any crash between a change and its end
//     (code "committed"); an append that fails does what a failed End does (deferred
//     and appended again once the database answers, or logged; the outbox row stays).
//   - List and Verify first wait for the events ended behind before they were called:
//     whoever reads the log through a replica sees the event of every call that
//     replica answered. Another replica, or a direct read of the table, may not see it
//     for the moment of a flush; it sees the call's outbox row instead.
//   - A stopping Log (the end of Run) appends every event ended behind first.
//   - A call whose outbox row did not commit (one that wrote nothing, was refused, or
//     whose writes rolled back or whose commit is unknown) has no other record: its
//     event is appended before it answers, as with End. Calls of read-only procedures
//     have no event.
//
// Decisions that no call makes (a pairing request expiring) write their events' rows
// with Log.Stage in their own transaction, and Log.Publish moves them after the commit.
//
// # Summaries
//
// A refusal by a rate limit decides nothing, and an attacker can cause thousands a
// second: Log.Refused counts them, one summary per remote address, principal and code
// in each window of summaryWindow, and Run appends each summary at its window's end (and
// every summary when the Log stops), as one event standing for them all: summarized is
// their number, first_at the first one's time (occurred_at the last's), and procedures
// the procedures they called, sorted and comma-separated, cut to 1024 bytes. A window
// holds at most maxSummaryKeys summaries; refusals beyond them go into one summary whose
// remote address is "*". Summaries are part of the chain like every event.
//
// # What the chain does not catch
//
// The chain has no secret: someone who can write to the database and who rewrites an
// event and recomputes every hash after it, or who deletes the newest events, leaves a
// chain that verifies. Against that, keep the head (Verdict.HeadSequence and HeadHash)
// somewhere else from time to time and check that the log still extends it.
package audit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/oklog/ulid/v2"

	"github.com/palyra/palyra/gen/dbsqlc"
	"github.com/palyra/palyra/server/internal/errdefs"
	"github.com/palyra/palyra/server/internal/store"
)

// Outcome says whether an audited call succeeded.
type Outcome string

// The outcomes. The table's audit_events_outcome constraint allows these two only.
const (
	// Success: the call returned without error.
	Success Outcome = "success"
	// Failure: the call returned an error, or authentication failed before it.
	Failure Outcome = "failure"
)

// valid reports whether o is one of the outcomes.
func (o Outcome) valid() bool { return o == Success || o == Failure }

// Who chose an event's request id (Event.RequestIDSource).
const (
	// FromClient: the caller sent it (a well-formed X-Request-Id).
	FromClient = "client"
	// FromReplica: the replica that recorded the event made it up.
	FromReplica = "replica"
)

// CodeCommitted is the code of an event the drainer wrote from an outbox row: the
// call's change committed, and how the call ended is not known.
const CodeCommitted = "committed"

// ErrInvalid reports an event or a filter that Append or List refuse before asking the
// database: an unknown outcome, a negative limit or cursor (Invalid). Match it with
// errors.Is.
var ErrInvalid = errdefs.New(errdefs.Invalid, "invalid audit request")

// ErrDeferred reports an event that could not be written because the database could
// not be reached: the Log keeps it, and appends it once the database answers (unless
// the Log stops first, or keeps maxDeferred events already). Match it with errors.Is.
var ErrDeferred = errors.New("audit event deferred: the database is unavailable")

// Event is what happened; Append assigns its place in the chain.
//
// Append stores every string as valid UTF-8 (invalid bytes and NUL bytes, which
// PostgreSQL's text refuses, become U+FFFD) and cut to at most 1024 bytes at a character
// boundary, so that a strange request ID or path cannot keep a call out of the log. The
// Record it returns holds the strings as stored and hashed.
type Event struct {
	// Time is when the call ended. Append truncates it to microseconds (what PostgreSQL
	// keeps) and converts it to UTC; zero means the Log's clock's now.
	Time time.Time
	// Principal is who called: "token:<id>", "device:<id>", "anonymous", ...
	Principal string
	// Procedure is the Connect procedure: "/palyra.access.v1.AccessService/CreateToken".
	Procedure string
	// Target is what the call acted on: "token:<id>", "flag:compat_api", or "".
	Target string
	// Outcome is Success or Failure; Append refuses anything else.
	Outcome Outcome
	// Code is the Connect code's string: "ok" on success, else "unauthenticated", ...;
	// CodeCommitted for an event written from an outbox row.
	Code string
	// RemoteAddress is the caller's IP address.
	RemoteAddress string
	// RequestID correlates the event with the daemon's log lines.
	RequestID string
	// RequestIDSource is who chose RequestID: FromClient, FromReplica, or "" for an
	// event without a request.
	RequestIDSource string
	// Replica is the replica that recorded the event; empty means the Log's.
	Replica string
	// Summary, when not nil, makes the event stand for many refusals (Log.Refused).
	Summary *Summary
}

// Summary is what a summary event stands for.
type Summary struct {
	// Count is the number of refusals, at least 1; the event's Time is the last one's.
	Count int64
	// First is the time of the first refusal.
	First time.Time
	// Procedures are the procedures refused, sorted, without repeats.
	Procedures []string
}

// Record is an event as stored.
type Record struct {
	Event
	// Sequence is the event's place in the log: 1, 2, 3, ... without gaps.
	Sequence int64
	// ID is the event's ULID.
	ID string
	// Format is the formula of Hash (package documentation): 1 or 2.
	Format int
	// PrevHash is the previous record's Hash; 32 zero bytes for the first.
	PrevHash []byte
	// Hash is the SHA-256 chain hash of the package documentation.
	Hash []byte
}

// The encoding's constants and the package's limits.
const (
	// hashDomain1 and hashDomain2 start every hashed message of formats 1 and 2, so
	// that no other hash palyrad computes can be mistaken for an audit event's.
	hashDomain1 = "palyra/v1/audit\x00"
	hashDomain2 = "palyra/v2/audit\x00"
	// format is the format of the events palyrad writes.
	format = 2
	// hashSize is the length of Hash and PrevHash.
	hashSize = sha256.Size
	// maxFieldBytes bounds each string of an Event as stored.
	maxFieldBytes = 1024
	// verifyBatch is how many rows Verify reads per query.
	verifyBatch = 1000
	// defaultLimit and maxLimit bound the page of List.
	defaultLimit = 100
	maxLimit     = 1000
)

// Options are the dependencies of a Log.
type Options struct {
	// Store is the database.
	Store *store.Store
	// ReplicaID names the replica in the events it records and the outbox rows it
	// writes; it must be unique among the replicas sharing the database.
	ReplicaID string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger receives the events lost or deferred; nil discards.
	Logger *slog.Logger
}

// Log is the audit log on a database. It is safe for concurrent use, also by several
// palyrad processes sharing the database. Within a process, concurrent appends are
// written together (group commit): one of them writes every event waiting at that
// moment with one statement, so the round trip and the commit's flush are paid once per
// batch rather than once per event. Across processes, the primary key on the sequence
// and the append lock keep the chain whole (see the package documentation).
type Log struct {
	store       *store.Store
	replica     string
	now         func() time.Time
	log         *slog.Logger
	batch       int32 // rows per ScanAuditEvents call in Verify
	attempts    int   // bound on the attempts to write one batch; see writeBatch
	summaryKeys int   // bound on the summaries of a window (maxSummaryKeys)
	wake        chan struct{}

	mu      sync.Mutex // guards the following
	pending []*appendCall
	writing bool // an appender is writing a batch; the next batch waits for it

	// Owned by the writer: only the Append that set writing, or was handed it, touches
	// the following (the hand-off goes through mu and done, which order the accesses).
	head *chain // the newest event as of this Log's last batch; nil when unknown

	// Owned by Run's goroutine.
	owner *pgx.Conn // the session holding the replica's lock; nil before Run took it

	omu      sync.Mutex // guards the following
	calls    map[string]*Call
	behind   map[string]chan struct{} // the calls ended behind (EndBehind), closed once appended
	deferred []Record
	failed   bool // the last batch failed for want of the database
	windows  map[int64]window
}

// appendCall is one event waiting for its batch to be written.
type appendCall struct {
	rec Record // ID and Event set; Sequence and the hashes set by the writer
	// done receives the outcome of the batch, or lead: the call must write the next
	// batch itself.
	done chan appendOutcome
	// elsewhere: the event was in the log already, moved there by another writer; set
	// by the writer.
	elsewhere bool
	behind    bool // no call waits for it (writeAs)
}

// appendOutcome is what a waiting Append receives.
type appendOutcome struct {
	err  error
	lead bool
}

// maxAppendBatch bounds the events written in one statement.
const maxAppendBatch = 256

// maxAppendAttempts bounds the attempts to write one batch: all but the last insert
// after the head as it was last known, the last one under the append lock.
const maxAppendAttempts = 3

// The names PostgreSQL gave the constraints of audit_events that refuse an insert
// (sqlc/migrations/00002_access.sql): the primary key on sequence, which refuses an
// insert after a head that is no longer the newest event, and the unique id, which
// refuses an event another writer moved into the log already.
const (
	sequenceKey = "audit_events_pkey"
	idKey       = "audit_events_id_unique"
)

// appendTimeout bounds the writing of one batch.
const appendTimeout = 30 * time.Second

// New returns the log stored in opts.Store.
func New(opts Options) *Log {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Log{
		store: opts.Store, replica: opts.ReplicaID, now: opts.Now, log: opts.Logger,
		batch: verifyBatch, attempts: maxAppendAttempts, summaryKeys: maxSummaryKeys, wake: make(chan struct{}, 1),
		calls: map[string]*Call{}, behind: map[string]chan struct{}{}, windows: map[int64]window{},
	}
}

// Append adds e at the end of the log and returns it as stored, once committed.
//
// Events are written in batches, as the package documentation describes: a batch is
// every event appended while the previous batch was being written, chained after the
// newest event and inserted with one statement. A failed batch fails each of its
// Appends; when the database could not be reached, the error matches ErrDeferred and
// the Log writes the event later.
func (l *Log) Append(ctx context.Context, e Event) (Record, error) {
	rec, err := l.record(newID(), e)
	if err != nil {
		return Record{}, fmt.Errorf("audit: append: %w", err)
	}
	out := l.write(ctx, []Record{rec})[0]
	if out.err != nil {
		return Record{}, fmt.Errorf("audit: append: %w", out.err)
	}
	return out.rec, nil
}

// newID returns a new event id.
func newID() string { return ulid.Make().String() }

// record makes the Record of e with the given id, as it will be stored.
func (l *Log) record(id string, e Event) (Record, error) {
	if !e.Outcome.valid() {
		return Record{}, fmt.Errorf("outcome %q is neither %q nor %q: %w", e.Outcome, Success, Failure, ErrInvalid)
	}
	switch e.RequestIDSource {
	case "", FromClient, FromReplica:
	default:
		return Record{}, fmt.Errorf("request id source %q is none of %q, %q or empty: %w",
			e.RequestIDSource, FromClient, FromReplica, ErrInvalid)
	}
	if e.Time.IsZero() {
		e.Time = l.now()
	}
	e.Time = e.Time.Truncate(time.Microsecond).UTC()
	if e.Replica == "" {
		e.Replica = l.replica
	}
	for _, s := range []*string{&e.Principal, &e.Procedure, &e.Target, &e.Code, &e.RemoteAddress, &e.RequestID, &e.Replica} {
		*s = storable(*s)
	}
	if e.Summary != nil {
		sum := *e.Summary
		if sum.Count < 1 {
			return Record{}, fmt.Errorf("a summary of %d refusals: %w", sum.Count, ErrInvalid)
		}
		sum.First = sum.First.Truncate(time.Microsecond).UTC()
		sum.Procedures = storableList(sum.Procedures)
		e.Summary = &sum
	}
	return Record{Event: e, ID: id, Format: format}, nil
}

// written is the outcome of one record of write.
type written struct {
	rec Record
	err error
}

// write appends recs, whose IDs are set, and returns what became of each. An event
// another writer moved into the log first counts as written.
func (l *Log) write(ctx context.Context, recs []Record) []written {
	return l.writeAs(ctx, recs, false)
}

// writeAs is write; behind says that no call waits for recs on its way to an answer
// (EndBehind): a batch of such events only rides with the replica's next writes
// (store.WithRider).
func (l *Log) writeAs(ctx context.Context, recs []Record, behind bool) []written {
	if len(recs) == 0 {
		return nil
	}
	calls := make([]*appendCall, len(recs))
	for i, r := range recs {
		calls[i] = &appendCall{rec: r, behind: behind, done: make(chan appendOutcome, 1)}
	}
	l.mu.Lock()
	l.pending = append(l.pending, calls...)
	lead := !l.writing
	l.writing = true
	l.mu.Unlock()
	out := make([]written, len(calls))
	for i, c := range calls {
		for {
			if lead {
				// The batch holds other callers' events: it is not cut short by this
				// caller's context, only bounded in time.
				wctx, cancel := context.WithTimeout(store.WithoutCompanion(context.WithoutCancel(ctx)), appendTimeout)
				l.writeNext(wctx)
				cancel()
				lead = false
			}
			// The batch being written may not be this call's: wait for the one that is,
			// or to be handed the writing of the next. The wait ignores ctx: the event
			// may be written already, and the caller must learn whether it was.
			o := <-c.done
			if o.lead {
				lead = true
				continue
			}
			out[i] = written{rec: c.rec, err: o.err}
			break
		}
	}
	return out
}

// writeNext writes the waiting events as one batch, delivers the outcome to each, and
// hands the writing of the next batch to the first call that arrived meanwhile, or ends
// the writing when none did.
func (l *Log) writeNext(ctx context.Context) {
	l.mu.Lock()
	n := min(len(l.pending), maxAppendBatch)
	batch := slices.Clone(l.pending[:n])
	l.pending = slices.Delete(l.pending, 0, n)
	l.mu.Unlock()

	if !slices.ContainsFunc(batch, func(c *appendCall) bool { return !c.behind }) {
		ctx = store.WithRider(ctx)
	}
	err := l.writeBatch(ctx, batch)
	if err != nil && unreachable(err) {
		l.keep(batch)
		err = fmt.Errorf("%w: %w", ErrDeferred, err)
	} else {
		l.reached()
	}
	for _, c := range batch {
		if c.elsewhere {
			c.done <- appendOutcome{}
			continue
		}
		c.done <- appendOutcome{err: err}
	}

	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.pending) == 0 {
		l.writing = false
		return
	}
	l.pending[0].done <- appendOutcome{lead: true}
}

// writeBatch chains batch after the newest event and inserts it, following the steps
// of the package documentation. On success each call's record holds its place in the
// chain (none for an event that was in the log already), and l.head is the batch's
// last event. Only the writer calls it.
func (l *Log) writeBatch(ctx context.Context, batch []*appendCall) error {
	head := l.head
	l.head = nil // known again once the batch is in
	for attempt := 1; ; {
		var err error
		if attempt < l.attempts {
			err = l.insertAfter(ctx, head, batch)
		} else {
			err = l.insertLocked(ctx, batch)
		}
		head = nil // another process appended: read the head again
		switch {
		case err == nil:
			if len(batch) > 0 {
				last := batch[len(batch)-1].rec
				l.head = &chain{seq: last.Sequence, hash: last.Hash}
			}
			return nil
		case constraint(err) == idKey:
			var derr error
			if batch, derr = l.dropRecorded(ctx, batch); derr != nil {
				return errors.Join(err, derr)
			}
		case attempt >= l.attempts || constraint(err) != sequenceKey:
			return err
		default:
			attempt++
		}
	}
}

// dropRecorded returns batch without the events that are in the log already, their
// records left without a place in the chain; an error when none is.
func (l *Log) dropRecorded(ctx context.Context, batch []*appendCall) ([]*appendCall, error) {
	ids := make([]string, len(batch))
	for i, c := range batch {
		ids[i] = c.rec.ID
	}
	recorded, err := l.store.Q().RecordedAuditIDs(ctx, ids)
	if err != nil {
		return batch, fmt.Errorf("look for events in the log already: %w", err)
	}
	if len(recorded) == 0 {
		return batch, errors.New("no event of the batch is in the log, yet its id was taken")
	}
	kept := batch[:0:0]
	for _, c := range batch {
		if slices.Contains(recorded, c.rec.ID) {
			c.rec.Sequence, c.rec.PrevHash, c.rec.Hash = 0, nil, nil
			c.elsewhere = true
			continue
		}
		kept = append(kept, c)
	}
	return kept, nil
}

// insertAfter inserts batch after head with one statement, after first reading the head
// when head is nil. The statement commits with the other writes of this replica made at
// the same moment (store.Grouped): the dispatches created and the nodes' reports.
func (l *Log) insertAfter(ctx context.Context, head *chain, batch []*appendCall) error {
	if len(batch) == 0 {
		return nil
	}
	if head == nil {
		h, err := readHead(ctx, l.store.Q())
		if err != nil {
			return err
		}
		head = &h
	}
	return insertBatch(ctx, l.store.Grouped(), *head, batch)
}

// insertLocked reads the head and inserts batch after it in one transaction under the
// append lock. Every writer takes the lock before it inserts and the store's isolation
// level is READ COMMITTED, under which the head is read after the lock is granted: the
// head read is the newest event, and the insert cannot meet a taken sequence.
func (l *Log) insertLocked(ctx context.Context, batch []*appendCall) error {
	if len(batch) == 0 {
		return nil
	}
	return l.store.InTx(ctx, func(tx *store.Tx) error {
		q := tx.Q()
		if err := q.LockAudit(ctx); err != nil {
			return fmt.Errorf("take the append lock: %w", err)
		}
		head, err := readHead(ctx, q)
		if err != nil {
			return err
		}
		return insertBatch(ctx, q, head, batch)
	})
}

// readHead reads the newest event's place in the chain: sequence 0 and 32 zero bytes
// when the log is empty.
func readHead(ctx context.Context, q *dbsqlc.Queries) (chain, error) {
	row, err := q.GetAuditHead(ctx)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return chain{hash: make([]byte, hashSize)}, nil
	case err != nil:
		return chain{}, fmt.Errorf("read the newest event: %w", err)
	}
	return chain{seq: row.Sequence, hash: row.Hash}, nil
}

// insertBatch numbers and chains the records of batch after head, then inserts them
// with one statement, which deletes their outbox rows.
func insertBatch(ctx context.Context, q *dbsqlc.Queries, head chain, batch []*appendCall) error {
	n := len(batch)
	p := dbsqlc.InsertAuditEventsParams{
		Sequences:        make([]int64, 0, n),
		Ids:              make([]string, 0, n),
		Times:            make([]time.Time, 0, n),
		Principals:       make([]string, 0, n),
		Procedures:       make([]string, 0, n),
		Targets:          make([]string, 0, n),
		Outcomes:         make([]string, 0, n),
		Codes:            make([]string, 0, n),
		RemoteAddresses:  make([]string, 0, n),
		RequestIds:       make([]string, 0, n),
		PrevHashes:       make([][]byte, 0, n),
		Hashes:           make([][]byte, 0, n),
		Formats:          make([]int16, 0, n),
		ReplicaIds:       make([]string, 0, n),
		RequestIDSources: make([]string, 0, n),
		Summarized:       make([]int64, 0, n),
		FirstAts:         make([]string, 0, n),
		ProcedureLists:   make([]string, 0, n),
	}
	prev := head
	for _, c := range batch {
		r := &c.rec
		r.Sequence, r.PrevHash = prev.seq+1, prev.hash
		r.Hash = chainHash(*r)
		prev = chain{seq: r.Sequence, hash: r.Hash}
		count, first, procedures := summaryFields(r.Summary)
		p.Sequences = append(p.Sequences, r.Sequence)
		p.Ids = append(p.Ids, r.ID)
		p.Times = append(p.Times, r.Time)
		p.Principals = append(p.Principals, r.Principal)
		p.Procedures = append(p.Procedures, r.Procedure)
		p.Targets = append(p.Targets, r.Target)
		p.Outcomes = append(p.Outcomes, string(r.Outcome))
		p.Codes = append(p.Codes, r.Code)
		p.RemoteAddresses = append(p.RemoteAddresses, r.RemoteAddress)
		p.RequestIds = append(p.RequestIds, r.RequestID)
		p.PrevHashes = append(p.PrevHashes, r.PrevHash)
		p.Hashes = append(p.Hashes, r.Hash)
		p.Formats = append(p.Formats, int16(r.Format))
		p.ReplicaIds = append(p.ReplicaIds, r.Replica)
		p.RequestIDSources = append(p.RequestIDSources, r.RequestIDSource)
		p.Summarized = append(p.Summarized, count)
		p.FirstAts = append(p.FirstAts, first)
		p.ProcedureLists = append(p.ProcedureLists, procedures)
	}
	if err := q.InsertAuditEvents(ctx, p); err != nil {
		return fmt.Errorf("insert events %d..%d: %w", head.seq+1, prev.seq, err)
	}
	return nil
}

// constraint names the constraint of audit_events that refused a write, or "".
func constraint(err error) string {
	var ce *store.ConstraintError
	if errors.As(err, &ce) && errors.Is(ce, store.ErrConflict) {
		return ce.Constraint
	}
	return ""
}

// unreachable reports whether err is the database's absence rather than its answer:
// the same events can be written once it is back.
func unreachable(err error) bool {
	var connectErr *pgconn.ConnectError
	if errors.Is(err, store.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) || errors.As(err, &connectErr) {
		return true
	}
	var pgErr *pgconn.PgError
	return !errors.As(err, &pgErr) && !errors.Is(err, store.ErrNotFound)
}

// storable returns s as valid UTF-8 without NUL bytes, cut to maxFieldBytes.
func storable(s string) string {
	if len(s) <= maxFieldBytes && utf8.ValidString(s) && strings.IndexByte(s, 0) < 0 {
		return s
	}
	s = strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
	if len(s) > maxFieldBytes {
		cut := maxFieldBytes
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut]
	}
	return s
}

// storableList returns names storable, without commas (which separate them when
// stored), sorted, without repeats, and as many of them as fit in maxFieldBytes.
func storableList(names []string) []string {
	out := make([]string, 0, len(names))
	for _, n := range names {
		out = append(out, storable(strings.ReplaceAll(n, ",", "\uFFFD")))
	}
	slices.Sort(out)
	out = slices.Compact(out)
	size := 0
	for i, n := range out {
		if size += len(n) + 1; size-1 > maxFieldBytes {
			return out[:i]
		}
	}
	return out
}

// summaryFields returns the stored form of a summary: summarized, first_at as text
// ("" for null) and procedures.
func summaryFields(s *Summary) (count int64, first, procedures string) {
	if s == nil {
		return 0, "", ""
	}
	return s.Count, s.First.Format(time.RFC3339Nano), strings.Join(s.Procedures, ",")
}

// chainHash computes r's Hash from its PrevHash and fields, by the formula of its
// format, as the package documentation describes.
func chainHash(r Record) []byte {
	b := make([]byte, 0, 320)
	fields := []string{
		strconv.FormatInt(r.Sequence, 10),
		r.ID,
		r.Time.UTC().Format(time.RFC3339Nano),
		r.Principal,
		r.Procedure,
		r.Target,
		string(r.Outcome),
		r.Code,
		r.RemoteAddress,
		r.RequestID,
	}
	if r.Format == 1 {
		b = append(b, hashDomain1...)
	} else {
		b = append(b, hashDomain2...)
		count, first, procedures := summaryFields(r.Summary)
		fields = append(fields, r.RequestIDSource, r.Replica, strconv.FormatInt(count, 10), first, procedures)
	}
	b = append(b, r.PrevHash...)
	for _, f := range fields {
		b = binary.AppendUvarint(b, uint64(len(f)))
		b = append(b, f...)
	}
	sum := sha256.Sum256(b)
	return sum[:]
}

// recordOf converts a row.
func recordOf(row dbsqlc.AuditEvent) Record {
	r := Record{
		Event: Event{
			Time:            row.OccurredAt.UTC(),
			Principal:       row.Principal,
			Procedure:       row.Procedure,
			Target:          row.Target,
			Outcome:         Outcome(row.Outcome),
			Code:            row.Code,
			RemoteAddress:   row.RemoteAddress,
			RequestID:       row.RequestID,
			RequestIDSource: row.RequestIDSource,
			Replica:         row.ReplicaID,
		},
		Sequence: row.Sequence,
		ID:       row.ID,
		Format:   int(row.Format),
		PrevHash: row.PrevHash,
		Hash:     row.Hash,
	}
	if row.Summarized > 0 || row.FirstAt != nil {
		r.Summary = &Summary{Count: row.Summarized, Procedures: []string{}}
		if row.FirstAt != nil {
			r.Summary.First = row.FirstAt.UTC()
		}
		if row.Procedures != "" {
			r.Summary.Procedures = strings.Split(row.Procedures, ",")
		}
	}
	return r
}

// Filter selects the events List returns. Its zero value selects the newest 100.
type Filter struct {
	// Principal and Procedure, when not empty, select the events with exactly that value.
	Principal, Procedure string
	// Outcome, when not empty, selects the events with that outcome.
	Outcome Outcome
	// Since and Until, when not nil, select the events with Since <= Time < Until.
	Since, Until *time.Time
	// BeforeSequence is the cursor: only events with a smaller sequence. Zero means
	// from the newest. To page, pass the Sequence of the last record of a page.
	BeforeSequence int64
	// Limit is the page size, 1 to 1000; zero means 100 and larger values mean 1000.
	Limit int
}

// List returns the events f selects, newest first. It first waits for the events that
// calls ended behind (Call.EndBehind) before it was called: a caller sees the events of
// the calls this Log's replica answered.
func (l *Log) List(ctx context.Context, f Filter) ([]Record, error) {
	limit, err := pageLimit(f.Limit)
	if err != nil {
		return nil, fmt.Errorf("audit: list: %w", err)
	}
	if f.Outcome != "" && !f.Outcome.valid() {
		return nil, fmt.Errorf("audit: list: outcome %q is neither %q nor %q: %w",
			f.Outcome, Success, Failure, ErrInvalid)
	}
	if f.BeforeSequence < 0 {
		return nil, fmt.Errorf("audit: list: before sequence %d is negative: %w", f.BeforeSequence, ErrInvalid)
	}
	if err := l.settle(ctx); err != nil {
		return nil, fmt.Errorf("audit: list: wait for the events of the calls answered: %w", err)
	}
	rows, err := l.store.Q().ListAuditEvents(ctx, dbsqlc.ListAuditEventsParams{
		BeforeSequence: f.BeforeSequence,
		Principal:      f.Principal,
		Procedure:      f.Procedure,
		Outcome:        string(f.Outcome),
		Since:          store.CeilMicro(f.Since),
		Until:          store.CeilMicro(f.Until),
		PageLimit:      limit,
	})
	if err != nil {
		return nil, fmt.Errorf("audit: list: %w", err)
	}
	recs := make([]Record, len(rows))
	for i, row := range rows {
		recs[i] = recordOf(row)
	}
	return recs, nil
}

// pageLimit applies the rules of Filter.Limit.
func pageLimit(n int) (int32, error) {
	switch {
	case n < 0:
		return 0, fmt.Errorf("limit %d is negative: %w", n, ErrInvalid)
	case n == 0:
		return defaultLimit, nil
	case n > maxLimit:
		return maxLimit, nil
	}
	return int32(n), nil
}

// Verdict is the result of Verify.
type Verdict struct {
	// Intact: every event up to the head follows the one before it and matches its hash.
	Intact bool
	// Checked is how many events Verify read: all of them when the log is intact, else
	// those up to and including FirstBroken.
	Checked int64
	// HeadSequence and HeadHash are the newest event's, intact or not, when Verify
	// began; zero and nil when the log is empty. Events appended during Verify are not
	// checked.
	HeadSequence int64
	HeadHash     []byte
	// FirstBroken is the sequence of the first event that breaks the chain, the event
	// after the gap when events are missing; zero when the log is intact.
	FirstBroken int64
	// Problem says in words what is wrong at FirstBroken; empty when the log is intact.
	Problem string
}

// Verify reads the whole log, oldest first, a thousand events at a time, and checks the
// chain: that the sequences run 1, 2, 3, ... without gaps, that each event's prev_hash
// is the previous event's hash, and that each event's hash matches its content. It
// stops at the first problem. Like List, it first waits for the events ended behind.
// A broken chain is a Verdict, not an error: the error is for failing to read the log.
func (l *Log) Verify(ctx context.Context) (Verdict, error) {
	if err := l.settle(ctx); err != nil {
		return Verdict{}, fmt.Errorf("audit: verify: wait for the events of the calls answered: %w", err)
	}
	q := l.store.Q()
	head, err := q.GetAuditHead(ctx)
	if errors.Is(err, store.ErrNotFound) {
		return Verdict{Intact: true}, nil
	}
	if err != nil {
		return Verdict{}, fmt.Errorf("audit: verify: %w", err)
	}
	v := Verdict{HeadSequence: head.Sequence, HeadHash: head.Hash}
	c := chain{hash: make([]byte, hashSize)}
	for c.seq < head.Sequence {
		rows, err := q.ScanAuditEvents(ctx, dbsqlc.ScanAuditEventsParams{AfterSequence: c.seq, PageLimit: l.batch})
		if err != nil {
			return Verdict{}, fmt.Errorf("audit: verify: after event %d: %w", c.seq, err)
		}
		if len(rows) == 0 {
			// The head was there when Verify began and is gone now.
			v.FirstBroken = c.seq + 1
			v.Problem = missing(c.seq+1, head.Sequence) + fmt.Sprintf(": the log ends at event %d", c.seq)
			return v, nil
		}
		for _, row := range rows {
			if c.seq == head.Sequence {
				break // the rest was appended after Verify began
			}
			v.Checked++
			if problem := c.follow(recordOf(row)); problem != "" {
				v.FirstBroken, v.Problem = row.Sequence, problem
				return v, nil
			}
		}
	}
	v.Intact = true
	return v, nil
}

// chain is a place in the chain: the newest event for Log's writer, the last event
// that checked out for Verify.
type chain struct {
	seq  int64  // its sequence; 0 before the first
	hash []byte // its hash; 32 zero bytes before the first
}

// follow checks that r comes next and, if it does, advances to it. It returns what is
// wrong with r, or "" when nothing is.
func (c *chain) follow(r Record) string {
	switch {
	case r.Sequence != c.seq+1 && c.seq == 0:
		return missing(1, r.Sequence-1) + fmt.Sprintf(": the log starts at event %d", r.Sequence)
	case r.Sequence != c.seq+1:
		return missing(c.seq+1, r.Sequence-1) + fmt.Sprintf(": the log goes from %d to %d", c.seq, r.Sequence)
	case !bytes.Equal(r.PrevHash, c.hash) && c.seq == 0:
		return "event 1 does not start the chain: its prev_hash is not 32 zero bytes"
	case !bytes.Equal(r.PrevHash, c.hash):
		return fmt.Sprintf("event %d does not follow event %d: its prev_hash is not event %d's hash",
			r.Sequence, c.seq, c.seq)
	case !bytes.Equal(chainHash(r), r.Hash):
		return fmt.Sprintf("event %d was altered: its hash does not match its content", r.Sequence)
	}
	c.seq, c.hash = r.Sequence, r.Hash
	return ""
}

// missing names the events from to to: "event 7 is missing", "events 7..9 are missing".
func missing(from, to int64) string {
	if from == to {
		return fmt.Sprintf("event %d is missing", from)
	}
	return fmt.Sprintf("events %d..%d are missing", from, to)
}
