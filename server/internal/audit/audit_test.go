package audit_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/palyra/palyra/server/internal/audit"
	"github.com/palyra/palyra/server/internal/store"
	"github.com/palyra/palyra/server/internal/store/storetest"
	"github.com/palyra/palyra/server/internal/testclock"
)

// testBundle is what the tests start from: a log on a migrated database of its own.
type testBundle struct {
	url   string
	store *store.Store
	log   *audit.Log
	clock *testclock.Clock
}

func setup(t *testing.T) *testBundle {
	t.Helper()
	url := storetest.URL(t)
	s := openStore(t, url)
	c := testclock.New(time.Date(2025, 3, 1, 12, 0, 0, 123456789, time.UTC))
	return &testBundle{url: url, store: s, log: audit.New(audit.Options{Store: s, ReplicaID: "replica-a", Now: c.Now}), clock: c}
}

func openStore(t *testing.T, url string) *store.Store {
	t.Helper()
	s, err := store.Open(t.Context(), store.Options{URL: url})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// event returns a plausible event, the i-th of a test.
func event(i int) audit.Event {
	return audit.Event{
		Principal:     fmt.Sprintf("token:%02d", i),
		Procedure:     "/palyra.access.v1.AccessService/CreateToken",
		Target:        fmt.Sprintf("token:new%02d", i),
		Outcome:       audit.Success,
		Code:          "ok",
		RemoteAddress: "192.0.2.7",
		RequestID:     fmt.Sprintf("req-%02d", i),
	}
}

// appendEvents appends n events and returns them as Append did.
func appendEvents(t *testing.T, l *audit.Log, n int) []audit.Record {
	t.Helper()
	recs := make([]audit.Record, n)
	for i := range n {
		r, err := l.Append(t.Context(), event(i+1))
		if err != nil {
			t.Fatalf("append %d: %v", i+1, err)
		}
		recs[i] = r
	}
	return recs
}

// verify runs Verify, also with batches of two events to cross batch boundaries, and
// checks that both agree.
func verify(t *testing.T, b *testBundle) audit.Verdict {
	t.Helper()
	v, err := b.log.Verify(t.Context())
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	small, err := audit.NewWithBatch(b.store, nil, 2).Verify(t.Context())
	if err != nil {
		t.Fatalf("verify in batches of 2: %v", err)
	}
	if !reflect.DeepEqual(v, small) {
		t.Fatalf("verdicts differ with the batch size:\n 1000: %+v\n    2: %+v", v, small)
	}
	return v
}

// sameRecord fails unless got and want are the same record, times compared as
// instants and both in UTC.
func sameRecord(t *testing.T, got, want audit.Record) {
	t.Helper()
	if !got.Time.Equal(want.Time) || got.Time.Location() != time.UTC {
		t.Errorf("event %d: time %v, want %v in UTC", want.Sequence, got.Time, want.Time)
	}
	got.Time, want.Time = time.Time{}, time.Time{}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("event %d:\n got %+v\nwant %+v", want.Sequence, got, want)
	}
}

func TestAppendChainsEvents(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()

	paris := time.FixedZone("CET", 3600)
	given := []time.Time{
		{}, // the clock's
		time.Date(2025, 3, 1, 13, 30, 0, 999999999, paris),
		time.Date(2025, 3, 1, 12, 45, 0, 1000, time.UTC),
	}
	wantTimes := []time.Time{
		time.Date(2025, 3, 1, 12, 0, 0, 123456000, time.UTC),
		time.Date(2025, 3, 1, 12, 30, 0, 999999000, time.UTC),
		time.Date(2025, 3, 1, 12, 45, 0, 1000, time.UTC),
	}
	var recs []audit.Record
	for i, tm := range given {
		e := event(i + 1)
		e.Time = tm
		r, err := b.log.Append(ctx, e)
		if err != nil {
			t.Fatalf("append %d: %v", i+1, err)
		}
		recs = append(recs, r)
	}

	for i, r := range recs {
		if r.Sequence != int64(i+1) {
			t.Errorf("record %d has sequence %d", i, r.Sequence)
		}
		if r.Time != wantTimes[i] {
			t.Errorf("event %d: time %v, want %v", r.Sequence, r.Time, wantTimes[i])
		}
		if len(r.ID) != 26 {
			t.Errorf("event %d: id %q is not a ULID", r.Sequence, r.ID)
		}
		if len(r.Hash) != sha256.Size {
			t.Errorf("event %d: hash of %d bytes", r.Sequence, len(r.Hash))
		}
		want := make([]byte, sha256.Size)
		if i > 0 {
			want = recs[i-1].Hash
		}
		if !bytes.Equal(r.PrevHash, want) {
			t.Errorf("event %d: prev hash %x, want %x", r.Sequence, r.PrevHash, want)
		}
	}

	// What List reads back is what Append returned, to the microsecond.
	listed, err := b.log.List(ctx, audit.Filter{})
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	if len(listed) != len(recs) {
		t.Fatalf("list returned %d records, want %d", len(listed), len(recs))
	}
	for i, r := range listed {
		sameRecord(t, r, recs[len(recs)-1-i])
	}

	v := verify(t, b)
	want := audit.Verdict{Intact: true, Checked: 3, HeadSequence: 3, HeadHash: recs[2].Hash}
	if !reflect.DeepEqual(v, want) {
		t.Errorf("verdict %+v, want %+v", v, want)
	}
}

// TestHashIsTheDocumentedEncoding recomputes the hashes from the package documentation
// alone, as an external tool would.
func TestHashIsTheDocumentedEncoding(t *testing.T) {
	t.Parallel()
	b := setup(t)
	long := event(2)
	long.Principal = strings.Repeat("p", 200) // a two-byte length prefix
	long.Target = ""
	long.Time = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC) // no fraction
	long.Outcome = audit.Failure
	long.RequestIDSource = audit.FromReplica
	summary := audit.Event{
		Time: time.Date(2025, 3, 1, 12, 0, 59, 500000000, time.UTC), Principal: "anonymous",
		Outcome: audit.Failure, Code: "resource_exhausted", RemoteAddress: "192.0.2.9",
		Summary: &audit.Summary{Count: 130, First: time.Date(2025, 3, 1, 12, 0, 1, 0, time.UTC),
			Procedures: []string{"/b.S/M", "/a.S/M", "/b.S/M"}},
	}
	for _, e := range []audit.Event{event(1), long, summary} {
		r, err := b.log.Append(t.Context(), e)
		if err != nil {
			t.Fatal(err)
		}
		fields := []string{
			strconv.FormatInt(r.Sequence, 10), r.ID, r.Time.UTC().Format(time.RFC3339Nano),
			r.Principal, r.Procedure, r.Target, string(r.Outcome), r.Code, r.RemoteAddress,
			r.RequestID,
		}
		summarized, first, procedures := "0", "", ""
		if e.Summary != nil {
			summarized, first, procedures = "130", "2025-03-01T12:00:01Z", "/a.S/M,/b.S/M"
		}
		fields = append(fields, e.RequestIDSource, "replica-a", summarized, first, procedures)
		if r.Format != 2 {
			t.Errorf("event %d has format %d, want 2", r.Sequence, r.Format)
		}
		if sum := documentedHash("palyra/v2/audit\x00", r.PrevHash, fields); !bytes.Equal(sum, r.Hash) {
			t.Errorf("event %d: hash %x, the documented encoding gives %x", r.Sequence, r.Hash, sum)
		}
	}
	if got := b.clock.Now().UTC().Format(time.RFC3339Nano); got != "2025-03-01T12:00:00.123456789Z" {
		t.Fatalf("clock reads %s", got) // guards the next check's premise
	}
	recs, err := b.log.List(t.Context(), audit.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if got := recs[2].Time.Format(time.RFC3339Nano); got != "2025-03-01T12:00:00.123456Z" {
		t.Errorf("event 1's time is hashed as %s", got)
	}
	if got := recs[1].Time.Format(time.RFC3339Nano); got != "2025-03-01T12:00:00Z" {
		t.Errorf("event 2's time is hashed as %s", got)
	}
	if s := recs[0].Summary; s == nil || s.Count != 130 || !slices.Equal(s.Procedures, []string{"/a.S/M", "/b.S/M"}) {
		t.Errorf("the summary reads back as %+v", s)
	}
}

// documentedHash is the hash of the package documentation: SHA-256 over the domain,
// the previous hash and each field's LEB128 length and bytes.
func documentedHash(domain string, prev []byte, fields []string) []byte {
	msg := append([]byte(domain), prev...)
	for _, f := range fields {
		for n := uint64(len(f)); ; n >>= 7 { // LEB128, spelled out
			if n < 0x80 {
				msg = append(msg, byte(n))
				break
			}
			msg = append(msg, byte(n)|0x80)
		}
		msg = append(msg, f...)
	}
	sum := sha256.Sum256(msg)
	return sum[:]
}

// TestFormatOneEventsStillVerify writes events as palyrad did before format 2 (the
// columns of 00002_access.sql, hashed by the first formula), then appends through the
// Log: the chain runs on from them and verifies, and a format-1 event cannot be passed
// off as format 2.
func TestFormatOneEventsStillVerify(t *testing.T) {
	t.Parallel()
	b := setup(t)
	conn := replicaConn(t, b.url)
	prev := make([]byte, sha256.Size)
	at := time.Date(2024, 11, 2, 9, 30, 0, 250000000, time.UTC)
	for seq := int64(1); seq <= 3; seq++ {
		id := fmt.Sprintf("01JBV0000000000000000000%02d", seq)
		fields := []string{strconv.FormatInt(seq, 10), id, at.Format(time.RFC3339Nano), "token:old",
			"/palyra.access.v1.AccessService/RevokeToken", "token:x", "success", "ok", "192.0.2.1", "req"}
		hash := documentedHash("palyra/v1/audit\x00", prev, fields)
		// What an older palyrad inserted: no format, replica or summary columns (the
		// default stands for the migration's, which gave the rows of that time format 1).
		for _, q := range []string{`alter table audit_events alter column format set default 1`, `
			insert into audit_events (sequence, id, occurred_at, principal, procedure, target, outcome,
			    code, remote_address, request_id, prev_hash, hash)
			values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`,
			`alter table audit_events alter column format drop default`} {
			var args []any
			if strings.Contains(q, "insert") {
				args = []any{seq, id, at, fields[3], fields[4], fields[5], fields[6], fields[7], fields[8], fields[9], prev, hash}
			}
			if _, err := conn.Exec(t.Context(), q, args...); err != nil {
				t.Fatal(err)
			}
		}
		prev = hash
	}
	appendEvents(t, b.log, 2)
	if v := verify(t, b); !v.Intact || v.Checked != 5 {
		t.Errorf("format 1 then format 2: %+v", v)
	}
	recs, err := b.log.List(t.Context(), audit.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if recs[4].Format != 1 || recs[4].Replica != "" || recs[0].Format != 2 {
		t.Errorf("formats read back: event 1 %d (replica %q), event 5 %d", recs[4].Format, recs[4].Replica, recs[0].Format)
	}
	if _, err := conn.Exec(t.Context(), `update audit_events set format = 2 where sequence = 2`); err != nil {
		t.Fatal(err)
	}
	if v := verify(t, b); v.Intact || v.FirstBroken != 2 {
		t.Errorf("event 2 passed off as format 2: %+v", v)
	}
}

func TestAppendRefusesUnknownOutcome(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, o := range []audit.Outcome{"", "maybe", "Success"} {
		e := event(1)
		e.Outcome = o
		if _, err := b.log.Append(t.Context(), e); !errors.Is(err, audit.ErrInvalid) {
			t.Errorf("outcome %q: err %v, want ErrInvalid", o, err)
		}
	}
	if v := verify(t, b); v.HeadSequence != 0 || !v.Intact {
		t.Errorf("refused events reached the log: %+v", v)
	}
}

func TestAppendStoresAnyString(t *testing.T) {
	t.Parallel()
	b := setup(t)
	e := event(1)
	e.RequestID = "bad\xff\xfeutf8"
	e.Principal = "nul\x00byte"
	e.Procedure = "/" + strings.Repeat("é", audit.MaxFieldBytes) // 2 bytes each: cut mid-rune
	r, err := b.log.Append(t.Context(), e)
	if err != nil {
		t.Fatalf("append: %v", err)
	}
	if r.RequestID != "bad\uFFFDutf8" {
		t.Errorf("request id stored as %q", r.RequestID)
	}
	if r.Principal != "nul\uFFFDbyte" {
		t.Errorf("principal stored as %q", r.Principal)
	}
	if len(r.Procedure) > audit.MaxFieldBytes || !utf8.ValidString(r.Procedure) ||
		len(r.Procedure) < audit.MaxFieldBytes-1 || !strings.HasPrefix(r.Procedure, "/éé") {
		t.Errorf("procedure stored as %d bytes, valid UTF-8 %v", len(r.Procedure), utf8.ValidString(r.Procedure))
	}
	listed, err := b.log.List(t.Context(), audit.Filter{})
	if err != nil || len(listed) != 1 {
		t.Fatalf("list: %v, %d records", err, len(listed))
	}
	sameRecord(t, listed[0], r)
	if v := verify(t, b); !v.Intact {
		t.Errorf("verdict %+v", v)
	}
}

// TestConcurrentAppends appends from many goroutines through two stores, as two
// palyrad processes sharing the database would.
func TestConcurrentAppends(t *testing.T) {
	t.Parallel()
	b := setup(t)
	other := audit.New(audit.Options{Store: openStore(t, b.url), ReplicaID: "replica-b"})
	const goroutines, each = 16, 10

	var wg sync.WaitGroup
	errs := make(chan error, goroutines*each)
	returned := make(chan audit.Record, goroutines*each)
	for g := range goroutines {
		l := b.log
		if g%2 == 1 {
			l = other
		}
		wg.Go(func() {
			for i := range each {
				rec, err := l.Append(t.Context(), event(g*each+i))
				if err != nil {
					errs <- err
				}
				returned <- rec
			}
		})
	}
	wg.Wait()
	close(errs)
	close(returned)
	for err := range errs {
		t.Errorf("append: %v", err)
	}

	recs, err := b.log.List(t.Context(), audit.Filter{Limit: 1000})
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	if len(recs) != goroutines*each {
		t.Fatalf("%d records, want %d", len(recs), goroutines*each)
	}
	for i, r := range recs {
		if want := int64(goroutines*each - i); r.Sequence != want {
			t.Fatalf("record %d of the list has sequence %d, want %d", i, r.Sequence, want)
		}
		if i+1 < len(recs) && !bytes.Equal(r.PrevHash, recs[i+1].Hash) {
			t.Errorf("event %d does not follow event %d", r.Sequence, recs[i+1].Sequence)
		}
	}
	// Each Append returned its record as stored, though most were written in batches.
	stored := map[string]audit.Record{}
	for _, r := range recs {
		stored[r.ID] = r
	}
	for r := range returned {
		if s, ok := stored[r.ID]; !ok || s.Sequence != r.Sequence || !bytes.Equal(s.Hash, r.Hash) || !bytes.Equal(s.PrevHash, r.PrevHash) {
			t.Errorf("Append returned sequence %d for %s; stored: %d (%v)", r.Sequence, r.ID, s.Sequence, ok)
		}
	}
	v := verify(t, b)
	if !v.Intact || v.Checked != goroutines*each || v.HeadSequence != goroutines*each ||
		!bytes.Equal(v.HeadHash, recs[0].Hash) {
		t.Errorf("verdict %+v", v)
	}
}

// TestReplicas appends through two Logs on pools of their own, as two palyrad processes
// sharing the database would: each one's remembered head is stale whenever the other
// appended since its last batch.
func TestReplicas(t *testing.T) {
	t.Parallel()
	// sequentially appends through each log in turn, n events at a time, and checks that
	// every event follows the one appended before it, whichever log appended that one.
	sequentially := func(turns ...int) func(t *testing.T, logs [2]*audit.Log) []audit.Record {
		return func(t *testing.T, logs [2]*audit.Log) []audit.Record {
			var recs []audit.Record
			for turn, n := range turns {
				for range n {
					r, err := logs[turn%2].Append(t.Context(), event(len(recs)))
					if err != nil {
						t.Fatalf("append %d through log %d: %v", len(recs)+1, turn%2, err)
					}
					if r.Sequence != int64(len(recs)+1) {
						t.Fatalf("append %d through log %d: sequence %d", len(recs)+1, turn%2, r.Sequence)
					}
					if len(recs) > 0 && !bytes.Equal(r.PrevHash, recs[len(recs)-1].Hash) {
						t.Fatalf("event %d does not follow event %d", r.Sequence, r.Sequence-1)
					}
					recs = append(recs, r)
				}
			}
			return recs
		}
	}
	// concurrently appends n events from each of g goroutines per log.
	concurrently := func(g, n int) func(t *testing.T, logs [2]*audit.Log) []audit.Record {
		return func(t *testing.T, logs [2]*audit.Log) []audit.Record {
			var mu sync.Mutex
			var recs []audit.Record
			var wg sync.WaitGroup
			for i := range 2 * g {
				wg.Go(func() {
					for j := range n {
						r, err := logs[i%2].Append(t.Context(), event(i*n+j))
						if err != nil {
							t.Errorf("append through log %d: %v", i%2, err)
							return
						}
						mu.Lock()
						recs = append(recs, r)
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			return recs
		}
	}
	tests := map[string]struct {
		// locked makes the second log write every batch under the append lock, as its
		// last attempt does.
		locked bool
		run    func(t *testing.T, logs [2]*audit.Log) []audit.Record
	}{
		"alternately":                      {run: sequentially(1, 1, 1, 1, 1, 1, 1, 1, 1, 1)},
		"in turns of several":              {run: sequentially(3, 4, 1, 5, 2)},
		"first through the other":          {run: sequentially(0, 3, 2)},
		"concurrently":                     {run: concurrently(8, 15)},
		"alternately, one locked":          {locked: true, run: sequentially(1, 1, 1, 1, 1, 1)},
		"concurrently, one locked":         {locked: true, run: concurrently(8, 15)},
		"concurrently, one goroutine each": {run: concurrently(1, 60)},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			other := audit.New(audit.Options{Store: openStore(t, b.url), ReplicaID: "replica-b"})
			if tt.locked {
				audit.WithAppendAttempts(other, 1)
			}
			returned := tt.run(t, [2]*audit.Log{b.log, other})
			if t.Failed() {
				return
			}

			// Every event is stored as Append returned it, at sequences 1..n.
			stored, err := b.log.List(t.Context(), audit.Filter{Limit: 1000})
			if err != nil {
				t.Fatalf("list: %v", err)
			}
			if len(stored) != len(returned) {
				t.Fatalf("%d events stored, %d appended", len(stored), len(returned))
			}
			byID := map[string]audit.Record{}
			for i, r := range stored {
				if want := int64(len(stored) - i); r.Sequence != want {
					t.Fatalf("event %d of the list has sequence %d, want %d", i, r.Sequence, want)
				}
				byID[r.ID] = r
			}
			for _, r := range returned {
				s, ok := byID[r.ID]
				if !ok {
					t.Fatalf("event %s (sequence %d) is not stored", r.ID, r.Sequence)
				}
				sameRecord(t, s, r)
			}
			v := verify(t, b)
			if !v.Intact || v.Checked != int64(len(returned)) || v.HeadSequence != int64(len(returned)) ||
				!bytes.Equal(v.HeadHash, stored[0].Hash) {
				t.Errorf("verdict %+v", v)
			}
		})
	}
}

// TestAppendAfterFailedBatch makes the database refuse a batch for a reason other than
// another process appending: Append fails, nothing is stored, and the appends after it
// continue the chain without a gap.
func TestAppendAfterFailedBatch(t *testing.T) {
	t.Parallel()
	b := setup(t)
	appendEvents(t, b.log, 2)
	conn := replicaConn(t, b.url)
	if _, err := conn.Exec(t.Context(),
		`alter table audit_events add constraint no_mallory check (principal <> 'token:mallory')`); err != nil {
		t.Fatalf("add constraint: %v", err)
	}
	e := event(3)
	e.Principal = "token:mallory"
	if _, err := b.log.Append(t.Context(), e); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("append refused by a constraint: err %v, want store.ErrInvalid", err)
	}
	// Another process appends meanwhile; the log must read the head again.
	if _, err := audit.New(audit.Options{Store: openStore(t, b.url), ReplicaID: "replica-b"}).Append(t.Context(), event(4)); err != nil {
		t.Fatalf("append through the other log: %v", err)
	}
	r, err := b.log.Append(t.Context(), event(5))
	if err != nil {
		t.Fatalf("append after the failure: %v", err)
	}
	if r.Sequence != 4 {
		t.Errorf("sequence %d after events 1..3, want 4", r.Sequence)
	}
	if v := verify(t, b); !v.Intact || v.Checked != 4 || !bytes.Equal(v.HeadHash, r.Hash) {
		t.Errorf("verdict %+v", v)
	}
}

func TestVerifyEmptyLog(t *testing.T) {
	t.Parallel()
	b := setup(t)
	if v := verify(t, b); !reflect.DeepEqual(v, audit.Verdict{Intact: true}) {
		t.Errorf("verdict %+v, want intact with nothing checked", v)
	}
}

// TestVerifyDetectsTampering edits the table behind palyrad's back, past the
// append-only trigger, and expects Verify to point at the first broken event.
func TestVerifyDetectsTampering(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		sql         []string // run as a replica, which fires no trigger
		firstBroken int64
		checked     int64
		head        int64
		problem     string
	}{
		"principal of event 3 edited": {
			sql:         []string{`update audit_events set principal = 'token:mallory' where sequence = 3`},
			firstBroken: 3, checked: 3, head: 5,
			problem: "event 3 was altered: its hash does not match its content",
		},
		"code of event 2 edited": {
			sql:         []string{`update audit_events set code = 'permission_denied' where sequence = 2`},
			firstBroken: 2, checked: 2, head: 5,
			problem: "event 2 was altered: its hash does not match its content",
		},
		"time of event 5 edited": {
			sql:         []string{`update audit_events set occurred_at = occurred_at - interval '1 microsecond' where sequence = 5`},
			firstBroken: 5, checked: 5, head: 5,
			problem: "event 5 was altered: its hash does not match its content",
		},
		// Event 4 no longer matches its hash, and event 5 no longer follows event 4:
		// the first of the two is what Verify reports.
		"hash of event 4 edited": {
			sql:         []string{`update audit_events set hash = sha256('forged'::bytea) where sequence = 4`},
			firstBroken: 4, checked: 4, head: 5,
			problem: "event 4 was altered: its hash does not match its content",
		},
		"replica of event 3 edited": {
			sql:         []string{`update audit_events set replica_id = 'elsewhere' where sequence = 3`},
			firstBroken: 3, checked: 3, head: 5,
			problem: "event 3 was altered: its hash does not match its content",
		},
		"request id source of event 2 edited": {
			sql:         []string{`update audit_events set request_id_source = 'replica' where sequence = 2`},
			firstBroken: 2, checked: 2, head: 5,
			problem: "event 2 was altered: its hash does not match its content",
		},
		"event 4 passed off as format 1": {
			sql:         []string{`update audit_events set format = 1 where sequence = 4`},
			firstBroken: 4, checked: 4, head: 5,
			problem: "event 4 was altered: its hash does not match its content",
		},
		"event 2 passed off as a summary": {
			sql:         []string{`update audit_events set summarized = 7, first_at = occurred_at where sequence = 2`},
			firstBroken: 2, checked: 2, head: 5,
			problem: "event 2 was altered: its hash does not match its content",
		},
		"prev_hash of event 3 edited": {
			sql:         []string{`update audit_events set prev_hash = sha256('forged'::bytea) where sequence = 3`},
			firstBroken: 3, checked: 3, head: 5,
			problem: "event 3 does not follow event 2: its prev_hash is not event 2's hash",
		},
		"prev_hash of event 1 edited": {
			sql:         []string{`update audit_events set prev_hash = sha256('forged'::bytea) where sequence = 1`},
			firstBroken: 1, checked: 1, head: 5,
			problem: "event 1 does not start the chain: its prev_hash is not 32 zero bytes",
		},
		"event 3 deleted": {
			sql:         []string{`delete from audit_events where sequence = 3`},
			firstBroken: 4, checked: 3, head: 5,
			problem: "event 3 is missing: the log goes from 2 to 4",
		},
		"events 2 and 3 deleted": {
			sql:         []string{`delete from audit_events where sequence in (2, 3)`},
			firstBroken: 4, checked: 2, head: 5,
			problem: "events 2..3 are missing: the log goes from 1 to 4",
		},
		"event 1 deleted": {
			sql:         []string{`delete from audit_events where sequence = 1`},
			firstBroken: 2, checked: 1, head: 5,
			problem: "event 1 is missing: the log starts at event 2",
		},
		"events 1 and 2 deleted": {
			sql:         []string{`delete from audit_events where sequence <= 2`},
			firstBroken: 3, checked: 1, head: 5,
			problem: "events 1..2 are missing: the log starts at event 3",
		},
		"contents of events 2 and 4 swapped": {
			sql: []string{`
				update audit_events a
				set occurred_at = b.occurred_at, principal = b.principal, procedure = b.procedure,
				    target = b.target, outcome = b.outcome, code = b.code,
				    remote_address = b.remote_address, request_id = b.request_id
				from audit_events b
				where (a.sequence, b.sequence) in ((2, 4), (4, 2))`},
			firstBroken: 2, checked: 2, head: 5,
			problem: "event 2 was altered: its hash does not match its content",
		},
		"event 6 forged after event 5": {
			sql: []string{`
				insert into audit_events (sequence, id, occurred_at, principal, procedure, target,
				    outcome, code, remote_address, request_id, prev_hash, hash, format)
				select 6, 'forged', now(), 'token:mallory', procedure, '', 'success', 'ok', '', '',
				    hash, sha256('forged'::bytea), 2
				from audit_events where sequence = 5`},
			firstBroken: 6, checked: 6, head: 6,
			problem: "event 6 was altered: its hash does not match its content",
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			recs := appendEvents(t, b.log, 5)
			if v := verify(t, b); !v.Intact || v.Checked != 5 {
				t.Fatalf("before tampering: %+v", v)
			}

			conn := replicaConn(t, b.url)
			for _, q := range tt.sql {
				if _, err := conn.Exec(t.Context(), q); err != nil {
					t.Fatalf("tamper: %v", err)
				}
			}

			v := verify(t, b)
			if v.Intact {
				t.Fatalf("tampered log verifies: %+v", v)
			}
			if v.FirstBroken != tt.firstBroken || v.Problem != tt.problem {
				t.Errorf("first broken %d (%q), want %d (%q)", v.FirstBroken, v.Problem, tt.firstBroken, tt.problem)
			}
			if v.Checked != tt.checked {
				t.Errorf("checked %d, want %d", v.Checked, tt.checked)
			}
			if v.HeadSequence != tt.head {
				t.Errorf("head sequence %d, want %d", v.HeadSequence, tt.head)
			}
			if tt.head == 5 && !bytes.Equal(v.HeadHash, recs[4].Hash) {
				t.Errorf("head hash %x, want event 5's %x", v.HeadHash, recs[4].Hash)
			}
		})
	}
}

// replicaConn connects to the test database as the server's administrator, the user of
// DATABASE_URL (the test database's own user, which pgtestdb creates, is not a
// superuser), and sets session_replication_role = replica, under which no ordinary
// trigger fires: the append-only trigger no longer stands in the way.
func replicaConn(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig(os.Getenv("DATABASE_URL"))
	if err != nil {
		t.Fatalf("DATABASE_URL: %v", err)
	}
	test, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatalf("test database URL: %v", err)
	}
	cfg.Database = test.Database
	conn, err := pgx.ConnectConfig(t.Context(), cfg)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	if _, err := conn.Exec(t.Context(), `set session_replication_role = replica`); err != nil {
		t.Fatalf("become a replica (DATABASE_URL's user must be a superuser): %v", err)
	}
	return conn
}

func TestAuditEventsIsAppendOnly(t *testing.T) {
	t.Parallel()
	b := setup(t)
	recs := appendEvents(t, b.log, 3)
	for _, q := range []string{
		`update audit_events set principal = 'token:mallory' where sequence = 2`,
		`update audit_events set code = code`,
		`delete from audit_events where sequence = 3`,
		`delete from audit_events`,
		`truncate audit_events`,
	} {
		_, err := b.store.Pool().Exec(t.Context(), q)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "42501" || pgErr.Message != "audit_events is append-only" {
			t.Errorf("%s: err %v, want the append-only trigger's insufficient_privilege", q, err)
		}
	}
	v := verify(t, b)
	if !v.Intact || v.Checked != 3 || !bytes.Equal(v.HeadHash, recs[2].Hash) {
		t.Errorf("after refused edits: %+v", v)
	}
}

func TestList(t *testing.T) {
	t.Parallel()
	b := setup(t)
	base := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	const create, revoke = "/palyra.access.v1.AccessService/CreateToken", "/palyra.access.v1.AccessService/RevokeToken"

	// Ten events a minute apart: event n at base + n-1 minutes.
	var all []audit.Record
	for i := range 10 {
		e := event(i)
		e.Time = base.Add(time.Duration(i) * time.Minute)
		e.Principal = []string{"token:alice", "token:bob"}[i%2]
		e.Procedure = create
		if i%3 != 0 {
			e.Procedure = revoke
		}
		if i%4 == 0 {
			e.Outcome, e.Code = audit.Failure, "permission_denied"
		}
		r, err := b.log.Append(t.Context(), e)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, r)
	}
	at := func(minutes int, extra time.Duration) *time.Time {
		tm := base.Add(time.Duration(minutes)*time.Minute + extra)
		return &tm
	}

	tests := map[string]struct {
		filter audit.Filter
		want   []int64
	}{
		"everything":           {audit.Filter{}, []int64{10, 9, 8, 7, 6, 5, 4, 3, 2, 1}},
		"principal":            {audit.Filter{Principal: "token:bob"}, []int64{10, 8, 6, 4, 2}},
		"unknown principal":    {audit.Filter{Principal: "token:carol"}, nil},
		"procedure":            {audit.Filter{Procedure: create}, []int64{10, 7, 4, 1}},
		"failures":             {audit.Filter{Outcome: audit.Failure}, []int64{9, 5, 1}},
		"successes":            {audit.Filter{Outcome: audit.Success}, []int64{10, 8, 7, 6, 4, 3, 2}},
		"since, inclusive":     {audit.Filter{Since: at(7, 0)}, []int64{10, 9, 8}},
		"until, exclusive":     {audit.Filter{Until: at(2, 0)}, []int64{2, 1}},
		"since and until":      {audit.Filter{Since: at(3, 0), Until: at(6, 0)}, []int64{6, 5, 4}},
		"bounds between µs":    {audit.Filter{Since: at(3, time.Nanosecond), Until: at(6, time.Nanosecond)}, []int64{7, 6, 5}},
		"before sequence":      {audit.Filter{BeforeSequence: 4}, []int64{3, 2, 1}},
		"principal, failures":  {audit.Filter{Principal: "token:alice", Outcome: audit.Failure}, []int64{9, 5, 1}},
		"all filters, limited": {audit.Filter{Principal: "token:bob", Procedure: revoke, Since: at(1, 0), BeforeSequence: 10, Limit: 2}, []int64{8, 6}},
		"limit":                {audit.Filter{Limit: 4}, []int64{10, 9, 8, 7}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			recs, err := b.log.List(t.Context(), tt.filter)
			if err != nil {
				t.Fatalf("list: %v", err)
			}
			if got := sequences(recs); !slices.Equal(got, tt.want) {
				t.Fatalf("sequences %v, want %v", got, tt.want)
			}
			for _, r := range recs {
				sameRecord(t, r, all[r.Sequence-1])
			}
		})
	}

	t.Run("paging", func(t *testing.T) {
		t.Parallel()
		for _, f := range []audit.Filter{{Limit: 3}, {Limit: 2, Principal: "token:alice"}} {
			var pages [][]int64
			var seen []int64
			for {
				recs, err := b.log.List(t.Context(), f)
				if err != nil {
					t.Fatal(err)
				}
				if len(recs) == 0 {
					break
				}
				pages = append(pages, sequences(recs))
				seen = append(seen, sequences(recs)...)
				f.BeforeSequence = recs[len(recs)-1].Sequence
			}
			want, err := b.log.List(t.Context(), audit.Filter{Principal: f.Principal})
			if err != nil {
				t.Fatal(err)
			}
			// Newest first across pages, so no overlap and nothing skipped.
			if !slices.Equal(seen, sequences(want)) {
				t.Errorf("pages %v, want %v in pages of %d", pages, sequences(want), f.Limit)
			}
			for _, p := range pages[:len(pages)-1] {
				if len(p) != f.Limit {
					t.Errorf("pages %v: a page before the last is short", pages)
				}
			}
		}
	})
}

func sequences(recs []audit.Record) []int64 {
	var s []int64
	for _, r := range recs {
		s = append(s, r.Sequence)
	}
	return s
}

func TestListLimit(t *testing.T) {
	t.Parallel()
	b := setup(t)
	appendEvents(t, b.log, 101)
	for _, tt := range []struct {
		limit int
		want  int
	}{{0, 100}, {1, 1}, {101, 101}, {5000, 101}} {
		recs, err := b.log.List(t.Context(), audit.Filter{Limit: tt.limit})
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) != tt.want || recs[0].Sequence != 101 {
			t.Errorf("limit %d: %d records from %d, want %d from 101", tt.limit, len(recs), recs[0].Sequence, tt.want)
		}
	}
	for n, want := range map[int]int32{0: 100, 1: 1, 1000: 1000, 1001: 1000, 1 << 40: 1000} {
		if got, err := audit.PageLimit(n); err != nil || got != want {
			t.Errorf("limit %d: %d, %v; want %d", n, got, err, want)
		}
	}
}

func TestListRefusesInvalidFilters(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for name, f := range map[string]audit.Filter{
		"negative limit":  {Limit: -1},
		"unknown outcome": {Outcome: "maybe"},
		"negative cursor": {BeforeSequence: -1},
	} {
		if _, err := b.log.List(t.Context(), f); !errors.Is(err, audit.ErrInvalid) {
			t.Errorf("%s: err %v, want ErrInvalid", name, err)
		}
	}
}

func TestNote(t *testing.T) {
	t.Parallel()
	t.Run("with a note", func(t *testing.T) {
		t.Parallel()
		ctx, n := audit.WithNote(t.Context())
		if n.Target() != "" {
			t.Errorf("new note has target %q", n.Target())
		}
		audit.SetTarget(ctx, "token:01")
		audit.SetTarget(ctx, "flag:compat_api")
		if got := n.Target(); got != "flag:compat_api" {
			t.Errorf("target %q, want the last one set", got)
		}
		// A handler's derived context still reaches the note.
		child, cancel := context.WithCancel(ctx)
		defer cancel()
		audit.SetTarget(child, "token:02")
		if got := n.Target(); got != "token:02" {
			t.Errorf("target %q through a derived context", got)
		}
	})
	t.Run("without a note", func(t *testing.T) {
		t.Parallel()
		audit.SetTarget(t.Context(), "token:01") // must not panic
		var n *audit.Note
		if n.Target() != "" {
			t.Error("nil note has a target")
		}
		_, other := audit.WithNote(t.Context())
		audit.SetTarget(t.Context(), "token:01")
		if other.Target() != "" {
			t.Error("a note in another context was set")
		}
	})
	t.Run("concurrently", func(t *testing.T) {
		t.Parallel()
		ctx, n := audit.WithNote(t.Context())
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Go(func() {
				audit.SetTarget(ctx, fmt.Sprintf("token:%d", i))
				_ = n.Target()
			})
		}
		wg.Wait()
		if !strings.HasPrefix(n.Target(), "token:") {
			t.Errorf("target %q", n.Target())
		}
	})
}
