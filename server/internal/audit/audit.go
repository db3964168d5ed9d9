// Package audit is palyrad's audit log: an append-only, hash-chained record of every
// state-changing call and every failed authentication.
//
// The access interceptor calls Log.Append once per audited call, after the call ends;
// handlers name what they acted on with SetTarget (note.go). The log lives in the
// audit_events table (sqlc/migrations/00002_access.sql), which a trigger keeps
// append-only; the hash chain described below detects what gets past the trigger.
//
// # The chain
//
// Every event has a sequence number, 1, 2, 3, ... without gaps, in the order the events
// were appended. Event n stores prev_hash, the hash of event n-1 (32 zero bytes for
// event 1), and its own hash:
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
//   - id is the event's ULID in its canonical 26-character form.
//   - time is occurred_at in UTC, in the layout of Go's time.RFC3339Nano: at most six
//     fractional digits (PostgreSQL keeps microseconds), trailing zeros of the fraction
//     removed, no fraction at all when it is zero, and "Z" for the zone. For example
//     "2025-03-01T12:00:00Z" or "2025-03-01T12:00:00.1234Z".
//   - outcome is "success" or "failure"; the other fields are free text, possibly empty.
//
// An external tool verifies the log by reading the rows in sequence order and checking,
// for each, that its sequence follows the previous one, that its prev_hash is the
// previous row's hash, and that its hash is the formula above over its own columns.
// Log.Verify does exactly that and reports the first row where one of the checks fails.
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
//  3. Insert them all with one statement (InsertAuditEvents in sqlc/queries/audit.sql):
//     one round trip, one implicit transaction, all or nothing.
//  4. If the table's primary key refuses a sequence, another palyrad sharing the
//     database appended since the head was taken: read the head again and go back to 2.
//     The last of maxAppendAttempts attempts instead reads the head and inserts in one
//     transaction under the append lock, which every writer takes before it inserts;
//     there the head read is the true one, so the attempt cannot lose the race.
//  5. Remember the batch's last event as the head. Any other error fails every Append
//     of the batch, and the head is forgotten.
//
// Rows are never updated or deleted and sequences are unique, so an insert after a head
// that is no longer the newest event is always refused: the chain cannot fork or skip.
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
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/oklog/ulid/v2"

	"github.com/palyra/palyra/gen/dbsqlc"
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

// ErrInvalid reports an event or a filter that Append or List refuse before asking the
// database: an unknown outcome, a negative limit or cursor. Match it with errors.Is.
var ErrInvalid = errors.New("invalid audit request")

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
	// Principal is who called: "token:<id>", "session:<id>", "anonymous", ...
	Principal string
	// Procedure is the Connect procedure: "/palyra.access.v1.AccessService/CreateToken".
	Procedure string
	// Target is what the call acted on: "token:<id>", "flag:compat_api", or "".
	Target string
	// Outcome is Success or Failure; Append refuses anything else.
	Outcome Outcome
	// Code is the Connect code's string: "ok" on success, else "unauthenticated", ...
	Code string
	// RemoteAddress is the caller's IP address.
	RemoteAddress string
	// RequestID correlates the event with the daemon's log lines.
	RequestID string
}

// Record is an event as stored.
type Record struct {
	Event
	// Sequence is the event's place in the log: 1, 2, 3, ... without gaps.
	Sequence int64
	// ID is the event's ULID.
	ID string
	// PrevHash is the previous record's Hash; 32 zero bytes for the first.
	PrevHash []byte
	// Hash is the SHA-256 chain hash of the package documentation.
	Hash []byte
}

// The encoding's constants and the package's limits.
const (
	// hashDomain starts every hashed message, so that no other hash palyrad computes
	// can be mistaken for an audit event's.
	hashDomain = "palyra/v1/audit\x00"
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

// Log is the audit log on a database. It is safe for concurrent use, also by several
// palyrad processes sharing the database. Within a process, concurrent appends are
// written together (group commit): one of them writes every event waiting at that
// moment with one statement, so the round trip and the commit's flush are paid once per
// batch rather than once per event. Across processes, the primary key on the sequence
// and the append lock keep the chain whole (see the package documentation).
type Log struct {
	store    *store.Store
	now      func() time.Time
	batch    int32 // rows per ScanAuditEvents call in Verify
	attempts int   // bound on the attempts to write one batch; see writeBatch

	mu      sync.Mutex // guards the following
	pending []*appendCall
	writing bool // an appender is writing a batch; the next batch waits for it

	// Owned by the writer: only the Append that set writing, or was handed it, touches
	// the following (the hand-off goes through mu and done, which order the accesses).
	head *chain // the newest event as of this Log's last batch; nil when unknown
}

// appendCall is one Append waiting for its batch to be written.
type appendCall struct {
	rec Record // ID and Event set; Sequence and the hashes set by the writer
	// done receives the outcome of the batch, or lead: the call must write the next
	// batch itself.
	done chan appendOutcome
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

// sequenceKey is the name PostgreSQL gave the primary key of audit_events, on sequence
// (sqlc/migrations/00002_access.sql): the constraint that refuses an insert after a
// head that is no longer the newest event.
const sequenceKey = "audit_events_pkey"

// appendTimeout bounds the writing of one batch.
const appendTimeout = 30 * time.Second

// New returns the log stored in s. now is the clock that dates events given without a
// time; nil means time.Now.
func New(s *store.Store, now func() time.Time) *Log {
	if now == nil {
		now = time.Now
	}
	return &Log{store: s, now: now, batch: verifyBatch, attempts: maxAppendAttempts}
}

// Append adds e at the end of the log and returns it as stored, once committed.
//
// Events are written in batches, as the package documentation describes: a batch is
// every event appended while the previous batch was being written, chained after the
// newest event and inserted with one statement. A failed batch fails each of its
// Appends.
func (l *Log) Append(ctx context.Context, e Event) (Record, error) {
	if !e.Outcome.valid() {
		return Record{}, fmt.Errorf("audit: append: outcome %q is neither %q nor %q: %w",
			e.Outcome, Success, Failure, ErrInvalid)
	}
	if e.Time.IsZero() {
		e.Time = l.now()
	}
	e.Time = e.Time.Truncate(time.Microsecond).UTC()
	for _, s := range []*string{&e.Principal, &e.Procedure, &e.Target, &e.Code, &e.RemoteAddress, &e.RequestID} {
		*s = storable(*s)
	}
	call := &appendCall{rec: Record{Event: e, ID: ulid.Make().String()}, done: make(chan appendOutcome, 1)}
	l.mu.Lock()
	l.pending = append(l.pending, call)
	lead := !l.writing
	l.writing = true
	l.mu.Unlock()
	for !lead {
		// The batch being written is not this call's: wait for the one that is, or to
		// be handed the writing of the next. The wait ignores ctx: the event may be
		// written already, and the caller must learn whether it was.
		out := <-call.done
		if !out.lead {
			if out.err != nil {
				return Record{}, fmt.Errorf("audit: append: %w", out.err)
			}
			return call.rec, nil
		}
		lead = true
	}
	// The batch holds other callers' events: it is not cut short by this caller's
	// context, only bounded in time.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), appendTimeout)
	l.writeNext(wctx)
	cancel()
	out := <-call.done
	if out.err != nil {
		return Record{}, fmt.Errorf("audit: append: %w", out.err)
	}
	return call.rec, nil
}

// writeNext writes the waiting events (this caller's among them) as one batch,
// delivers the outcome to each, and hands the writing of the next batch to the first
// call that arrived meanwhile, or ends the writing when none did.
func (l *Log) writeNext(ctx context.Context) {
	l.mu.Lock()
	n := min(len(l.pending), maxAppendBatch)
	batch := slices.Clone(l.pending[:n])
	l.pending = slices.Delete(l.pending, 0, n)
	l.mu.Unlock()

	err := l.writeBatch(ctx, batch)
	for _, c := range batch {
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
// chain, and l.head is the batch's last event. Only the writer calls it.
func (l *Log) writeBatch(ctx context.Context, batch []*appendCall) error {
	head := l.head
	l.head = nil // known again once the batch is in
	for attempt := 1; ; attempt++ {
		var err error
		if attempt < l.attempts {
			err = l.insertAfter(ctx, head, batch)
		} else {
			err = l.insertLocked(ctx, batch)
		}
		switch {
		case err == nil:
			last := batch[len(batch)-1].rec
			l.head = &chain{seq: last.Sequence, hash: last.Hash}
			return nil
		case attempt >= l.attempts || !sequenceTaken(err):
			return err
		}
		head = nil // another process appended: read the head again
	}
}

// insertAfter inserts batch after head with one statement, after first reading the head
// when head is nil.
func (l *Log) insertAfter(ctx context.Context, head *chain, batch []*appendCall) error {
	q := l.store.Q()
	if head == nil {
		h, err := readHead(ctx, q)
		if err != nil {
			return err
		}
		head = &h
	}
	return insertBatch(ctx, q, *head, batch)
}

// insertLocked reads the head and inserts batch after it in one transaction under the
// append lock. Every writer takes the lock before it inserts and the store's isolation
// level is READ COMMITTED, under which the head is read after the lock is granted: the
// head read is the newest event, and the insert cannot meet a taken sequence.
func (l *Log) insertLocked(ctx context.Context, batch []*appendCall) error {
	return l.store.InTx(ctx, func(q *dbsqlc.Queries) error {
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
// with one statement.
func insertBatch(ctx context.Context, q *dbsqlc.Queries, head chain, batch []*appendCall) error {
	n := len(batch)
	p := dbsqlc.InsertAuditEventsParams{
		Sequences:       make([]int64, 0, n),
		Ids:             make([]string, 0, n),
		Times:           make([]time.Time, 0, n),
		Principals:      make([]string, 0, n),
		Procedures:      make([]string, 0, n),
		Targets:         make([]string, 0, n),
		Outcomes:        make([]string, 0, n),
		Codes:           make([]string, 0, n),
		RemoteAddresses: make([]string, 0, n),
		RequestIds:      make([]string, 0, n),
		PrevHashes:      make([][]byte, 0, n),
		Hashes:          make([][]byte, 0, n),
	}
	prev := head
	for _, c := range batch {
		r := &c.rec
		r.Sequence, r.PrevHash = prev.seq+1, prev.hash
		r.Hash = chainHash(*r)
		prev = chain{seq: r.Sequence, hash: r.Hash}
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
	}
	if err := q.InsertAuditEvents(ctx, p); err != nil {
		return fmt.Errorf("insert events %d..%d: %w", head.seq+1, prev.seq, err)
	}
	return nil
}

// sequenceTaken reports whether err is the primary key of audit_events refusing a
// sequence: another process appended after the head the batch was chained to.
func sequenceTaken(err error) bool {
	var ce *store.ConstraintError
	return errors.As(err, &ce) && errors.Is(ce, store.ErrConflict) && ce.Constraint == sequenceKey
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

// chainHash computes r's Hash from its PrevHash and fields, as the package
// documentation describes.
func chainHash(r Record) []byte {
	b := make([]byte, 0, 256)
	b = append(b, hashDomain...)
	b = append(b, r.PrevHash...)
	for _, f := range []string{
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
	} {
		b = binary.AppendUvarint(b, uint64(len(f)))
		b = append(b, f...)
	}
	sum := sha256.Sum256(b)
	return sum[:]
}

// recordOf converts a row.
func recordOf(row dbsqlc.AuditEvent) Record {
	return Record{
		Event: Event{
			Time:          row.OccurredAt.UTC(),
			Principal:     row.Principal,
			Procedure:     row.Procedure,
			Target:        row.Target,
			Outcome:       Outcome(row.Outcome),
			Code:          row.Code,
			RemoteAddress: row.RemoteAddress,
			RequestID:     row.RequestID,
		},
		Sequence: row.Sequence,
		ID:       row.ID,
		PrevHash: row.PrevHash,
		Hash:     row.Hash,
	}
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

// List returns the events f selects, newest first.
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
	rows, err := l.store.Q().ListAuditEvents(ctx, dbsqlc.ListAuditEventsParams{
		BeforeSequence: f.BeforeSequence,
		Principal:      f.Principal,
		Procedure:      f.Procedure,
		Outcome:        string(f.Outcome),
		Since:          ceilMicro(f.Since),
		Until:          ceilMicro(f.Until),
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

// ceilMicro rounds t up to a whole microsecond. Event times are whole microseconds,
// and pgx drops the nanoseconds of a parameter, which would move the bounds of
// [Since, Until) down; rounding up keeps them exact: an event at T is selected exactly
// when Since <= T < Until.
func ceilMicro(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	c := t.Truncate(time.Microsecond)
	if c.Before(*t) {
		c = c.Add(time.Microsecond)
	}
	return &c
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
// stops at the first problem. A broken chain is a Verdict, not an error: the error is
// for failing to read the log.
func (l *Log) Verify(ctx context.Context) (Verdict, error) {
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
