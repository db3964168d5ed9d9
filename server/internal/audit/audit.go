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
// palyrad processes sharing the database: appends are serialised by a transaction-level
// advisory lock (the LockAudit query). Within a process, concurrent appends are
// committed together (group commit): one takes the lock and writes every event waiting
// at that moment in one transaction, so the lock and the commit's flush are paid once
// per batch rather than once per event.
type Log struct {
	store *store.Store
	now   func() time.Time
	batch int32 // rows per ScanAuditEvents call in Verify

	mu      sync.Mutex // guards the following
	pending []*appendCall
	writing bool // an appender is writing a batch; the next batch waits for it
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

// maxAppendBatch bounds the events written in one transaction.
const maxAppendBatch = 256

// appendTimeout bounds the writing of one batch.
const appendTimeout = 30 * time.Second

// New returns the log stored in s. now is the clock that dates events given without a
// time; nil means time.Now.
func New(s *store.Store, now func() time.Time) *Log {
	if now == nil {
		now = time.Now
	}
	return &Log{store: s, now: now, batch: verifyBatch}
}

// Append adds e at the end of the log and returns it as stored, once committed.
//
// Events are written in batches, each in one transaction: take the append lock, read
// the newest event, then for each event in turn compute its hash over the previous
// event's hash and its own fields and insert it. The lock makes the read and the
// inserts one step for every appender, so sequences have no gaps and every event
// follows the one before it. (This relies on READ COMMITTED, the store's isolation
// level, under which the head is read after the lock is granted.) A batch is every
// event appended while the previous batch was being written; a failed batch fails each
// of its Appends.
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

	err := l.store.InTx(ctx, func(q *dbsqlc.Queries) error {
		if err := q.LockAudit(ctx); err != nil {
			return err
		}
		head, err := q.GetAuditHead(ctx)
		prev := Record{Sequence: 0, Hash: make([]byte, hashSize)}
		switch {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			return err
		default:
			prev.Sequence, prev.Hash = head.Sequence, head.Hash
		}
		for _, c := range batch {
			c.rec.Sequence, c.rec.PrevHash = prev.Sequence+1, prev.Hash
			c.rec.Hash = chainHash(c.rec)
			if err := insertRecord(ctx, q, c.rec); err != nil {
				return err
			}
			prev = c.rec
		}
		return nil
	})
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

// insertRecord inserts one chained record.
func insertRecord(ctx context.Context, q *dbsqlc.Queries, rec Record) error {
	return q.InsertAuditEvent(ctx, dbsqlc.InsertAuditEventParams{
		Sequence:      rec.Sequence,
		ID:            rec.ID,
		OccurredAt:    rec.Time,
		Principal:     rec.Principal,
		Procedure:     rec.Procedure,
		Target:        rec.Target,
		Outcome:       string(rec.Outcome),
		Code:          rec.Code,
		RemoteAddress: rec.RemoteAddress,
		RequestID:     rec.RequestID,
		PrevHash:      rec.PrevHash,
		Hash:          rec.Hash,
	})
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

// chain is Verify's position: the last event that checked out.
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
