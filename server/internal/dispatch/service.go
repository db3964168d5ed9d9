package dispatch

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/palyra/palyra/server/internal/audit"
	"github.com/palyra/palyra/server/internal/errdefs"
	"github.com/palyra/palyra/server/internal/pagetoken"
	"github.com/palyra/palyra/server/internal/store"
)

// Request describes a dispatch to create.
type Request struct {
	// NodeID is the device to run it.
	NodeID string
	// Capability is the name of the capability to run.
	Capability string
	// Input is the input as JSON text; empty means {}.
	Input string
	// Timeout is how long the dispatch may take; zero means DefaultTimeout.
	Timeout time.Duration
	// MaxOutputBytes caps the output kept; zero means DefaultMaxOutputBytes.
	MaxOutputBytes int64
	// IdempotencyKey makes creation safe to retry; empty means none.
	IdempotencyKey string
	// CreatedBy is the principal creating it.
	CreatedBy string
}

// hash is what makes a repeat with the same idempotency key the same request.
func (r Request) hash(input []byte) []byte {
	h := sha256.New()
	for _, s := range []string{"palyra/v1/dispatch", r.NodeID, r.Capability} {
		_ = binary.Write(h, binary.BigEndian, uint32(len(s)))
		h.Write([]byte(s))
	}
	_ = binary.Write(h, binary.BigEndian, uint32(len(input)))
	h.Write(input)
	_ = binary.Write(h, binary.BigEndian, int64(r.Timeout))
	_ = binary.Write(h, binary.BigEndian, r.MaxOutputBytes)
	return h.Sum(nil)
}

// Create queues a dispatch, or returns the one an earlier call with the same idempotency
// key created (created is then false).
func (s *Service) Create(ctx context.Context, r Request) (d Dispatch, created bool, err error) {
	return s.create(ctx, r, ulid.Make().String())
}

// Execute creates a dispatch (or finds the one its idempotency key names), tells named
// its id, and returns it once it ended (see wait).
func (s *Service) Execute(ctx context.Context, r Request, named func(id string)) (Dispatch, error) {
	id := ulid.Make().String()
	// Watched before it exists, its end cannot slip by unseen.
	signals, stop := s.hub.watch(id, true)
	defer stop()
	d, created, err := s.create(ctx, r, id)
	if err != nil {
		return d, err
	}
	named(d.ID)
	if !created {
		return s.wait(ctx, d.ID)
	}
	return s.await(ctx, d, signals)
}

// create stores a dispatch with the given id, unless its idempotency key names an
// earlier one. When this replica holds the node's session, the dispatch is stored as
// sent on it and handed to it, without a claim's round trip.
func (s *Service) create(ctx context.Context, r Request, id string) (d Dispatch, created bool, err error) {
	if strings.TrimSpace(r.Input) == "" {
		r.Input = "{}"
	}
	var input bytes.Buffer
	if err := json.Compact(&input, []byte(r.Input)); err != nil {
		return d, false, errInvalid("input_json is not valid JSON: %v", err)
	}
	if where, ok := nulString(input.Bytes()); ok {
		return d, false, errInvalid("input_json holds \\u0000 (a NUL character) %s, which palyrad cannot store: "+
			"remove it, or encode binary data (base64, say)", where)
	}
	if r.Timeout <= 0 {
		r.Timeout = DefaultTimeout
	}
	if r.MaxOutputBytes <= 0 {
		r.MaxOutputBytes = DefaultMaxOutputBytes
	}
	hash := r.hash(input.Bytes())
	if r.IdempotencyKey != "" {
		if d, err := s.byKey(ctx, r, hash); err == nil || !errors.Is(err, store.ErrNotFound) {
			return d, false, err
		}
	}
	sess := s.sessions.get(r.NodeID)
	if err := s.checkNode(ctx, r.NodeID, sess, r.Capability, input.String()); err != nil {
		return d, false, err
	}
	if IsBrowser(r.Capability) {
		if s.opts.Browser == nil {
			return d, false, errNoBrowserProfiles(r.Capability)
		}
		if err := s.opts.Browser.CheckInput(ctx, r.Capability, input.String()); err != nil {
			return d, false, err
		}
	}
	now := s.opts.Now()
	in := insertDispatch{
		id: id, nodeID: r.NodeID, capability: r.Capability, input: input.Bytes(),
		idempotencyKey: r.IdempotencyKey, requestHash: hash, createdBy: r.CreatedBy, createdAt: now,
		deadline: now.Add(r.Timeout), maxOutputBytes: r.MaxOutputBytes,
	}
	if sess != nil {
		sess.expect(id)
		in.sessionID = sess.id
	}
	audit.SetTarget(ctx, "dispatch:"+id) // before the insert, which writes the call's audit outbox row
	d, err = s.db.insertDispatch(ctx, in)
	if sess != nil {
		var handed *Dispatch
		if err == nil {
			handed = &d
		}
		sess.hand(id, handed)
	}
	if errors.Is(err, store.ErrNotFound) && r.IdempotencyKey != "" {
		// A concurrent call with the same key won the insert.
		d, err = s.byKey(ctx, r, hash)
		return d, false, err
	}
	if err != nil {
		return d, false, fmt.Errorf("dispatch: create: %w", err)
	}
	s.log.Info("dispatch created", "dispatch_id", d.ID, "node_id", d.NodeID, "capability", d.Capability,
		"created_by", d.CreatedBy, "deadline", d.Deadline, "handed_to_session", sess != nil)
	return d, true, nil
}

// byKey returns the dispatch an idempotency key names, refusing a key reused for another
// request; store.ErrNotFound when there is none.
func (s *Service) byKey(ctx context.Context, r Request, hash []byte) (Dispatch, error) {
	d, stored, err := s.db.dispatchByKey(ctx, r.CreatedBy, r.IdempotencyKey)
	if err != nil {
		return d, fmt.Errorf("dispatch: idempotency key: %w", err)
	}
	if !bytes.Equal(stored, hash) {
		return d, errdefs.New(errdefs.Conflict,
			"idempotency key %q was used for another request (dispatch %s): use a new key", r.IdempotencyKey, d.ID)
	}
	return d, nil
}

// checkNode refuses a dispatch its node cannot take: an unknown or revoked node, a
// capability it does not offer or cannot run now, an input its schema refuses. For a
// node attached to this replica (sess not nil) it goes by what the node announced on
// that session, without reading the database: a revocation ends the session.
func (s *Service) checkNode(ctx context.Context, nodeID string, sess *session, name, input string) error {
	var caps []Capability
	if sess != nil {
		caps = *sess.capabilities.Load()
	} else {
		var err error
		if caps, err = s.storedCapabilities(ctx, nodeID); err != nil {
			return err
		}
	}
	i := slices.IndexFunc(caps, func(c Capability) bool { return c.Name == name })
	if i < 0 {
		names := make([]string, 0, len(caps))
		for _, c := range caps {
			names = append(names, c.Name)
		}
		return errFailedPrecondition("node %s does not offer capability %q (it offers: %s)", nodeID, name, strings.Join(names, ", "))
	}
	c := caps[i]
	if !c.Available {
		return errFailedPrecondition("node %s offers capability %q but cannot run it now (it is not configured or enabled there)", nodeID, name)
	}
	if c.InputSchema != "" {
		if err := s.schemas.validate(c.InputSchema, input); err != nil {
			return errInvalid("capability %s: %v", name, err)
		}
	}
	return nil
}

// storedCapabilities reads the capabilities of a node from the database, refusing an
// unknown, revoked or never attached node.
func (s *Service) storedCapabilities(ctx context.Context, nodeID string) ([]Capability, error) {
	n, err := s.db.nodeCapabilities(ctx, nodeID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, errNoNode(nodeID)
	}
	if err != nil {
		return nil, fmt.Errorf("dispatch: node %s: %w", nodeID, err)
	}
	if n.revoked {
		return nil, errFailedPrecondition("node %s is revoked", nodeID)
	}
	if n.protocolVersion == 0 {
		return nil, errFailedPrecondition("node %s has never attached, so its capabilities are unknown: start its agent (palyra node run)", nodeID)
	}
	return parseCapabilities(n.capabilities)
}

// Get returns a dispatch.
func (s *Service) Get(ctx context.Context, id string) (Dispatch, error) {
	d, err := s.db.dispatch(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return d, errNoDispatch(id)
	}
	if err != nil {
		return d, fmt.Errorf("dispatch: get %s: %w", id, err)
	}
	return d, nil
}

// rowOverhead is what a chunk costs in a response besides its data (its offset, stream
// and framing), in bytes, at most.
const rowOverhead = 24

// minPage is the smallest page of output read.
const minPage = 1 << 10

// Output returns a page of a dispatch's output: the output from offset from to offset
// to (its output_stored, as read with the dispatch), at most budget bytes of data and
// rowOverhead for each chunk, and the offset after the page (from when it is empty).
func (s *Service) Output(ctx context.Context, id string, from, to, budget int64) ([]OutputChunk, int64, error) {
	return s.output(ctx, id, from, to, max(budget, minPage))
}

// output is Output with any budget. The chunks it returns follow each other without
// a gap or an overlap (the first one and the last cut to the page): output stored
// before it was kept contiguous may have overlapping chunks, whose overlap is skipped.
func (s *Service) output(ctx context.Context, id string, from, to, budget int64) ([]OutputChunk, int64, error) {
	if from >= to {
		return nil, from, nil
	}
	rows, err := s.db.output(ctx, id, from, to, budget, rowOverhead)
	if err != nil {
		return nil, from, fmt.Errorf("dispatch: output of %s: %w", id, err)
	}
	out, next := page(rows, from, to, budget)
	return out, next, nil
}

// page cuts chunks, ordered by offset, to the page of output from offset from to
// offset to within budget, as output describes, and returns it with the offset after
// it. It leaves chunks as they are.
func page(chunks []OutputChunk, from, to, budget int64) ([]OutputChunk, int64) {
	out, next := make([]OutputChunk, 0, len(chunks)), from
	for _, o := range chunks {
		// A gap (only in output stored before it was kept contiguous) is skipped too.
		begin, end := max(o.Offset, next), min(o.Offset+int64(len(o.Data)), to)
		n := min(end-begin, budget-rowOverhead)
		if n <= 0 {
			if end > begin {
				break // the budget is spent
			}
			continue
		}
		o.Data, o.Offset = o.Data[begin-o.Offset:begin-o.Offset+n], begin
		out = append(out, o)
		budget -= n + rowOverhead
		next = begin + n
	}
	return out, next
}

// knownOutput returns the page of d's output from offset 0 within budget (as Output),
// when the session that ended d on this replica handed its whole output with it; false
// when it must be read.
func knownOutput(d Dispatch, budget int64) ([]OutputChunk, int64, bool) {
	if d.output == nil {
		return nil, 0, false
	}
	out, next := page(d.output, 0, d.OutputStored, max(budget, minPage))
	return out, next, true
}

// wait returns a dispatch once it ended. It gives up when ctx ends, when the daemon
// shuts down, or when the dispatch did not end well after its deadline (the sweeper
// should have ended it): the dispatch goes on regardless.
func (s *Service) wait(ctx context.Context, id string) (Dispatch, error) {
	signals, stop := s.hub.watch(id, true)
	defer stop()
	d, err := s.Get(ctx, id)
	if err != nil {
		return d, err
	}
	return s.await(ctx, d, signals)
}

// await waits for d to end, on the signals of a watch that began before d was read.
// The session that ends a dispatch on this replica hands over the ended row; other
// signals, and a poll in case a notification was lost, have it read again. On an error
// it returns the dispatch as last read.
func (s *Service) await(ctx context.Context, d Dispatch, signals <-chan *Dispatch) (Dispatch, error) {
	if d.State.Terminal() {
		return d, nil
	}
	poll := time.NewTicker(time.Second)
	defer poll.Stop()
	giveUp := time.NewTimer(d.Deadline.Sub(s.opts.Now()) + resultGrace + 2*sweepEvery + 5*time.Second)
	defer giveUp.Stop()
	for {
		select {
		case ended := <-signals:
			if ended != nil {
				return *ended, nil
			}
		case <-poll.C:
		case <-ctx.Done():
			return d, ctx.Err()
		case <-s.stopping:
			return d, errdefs.New(errdefs.Unavailable,
				"the daemon is shutting down; dispatch %s goes on: follow it with WatchDispatch", d.ID)
		case <-giveUp.C:
			return d, errdefs.New(errdefs.DeadlineExceeded,
				"dispatch %s did not end by its deadline; it is %s", d.ID, d.State)
		}
		var err error
		if d, err = s.Get(ctx, d.ID); err != nil || d.State.Terminal() {
			return d, err
		}
	}
}

// watchPage bounds the output a watch reads at once.
const watchPage = 1 << 20

// Watch sends a dispatch at once (before any output) and at every change, and its
// output from an offset as it comes, until the dispatch ended (after its last output)
// or ctx ends.
func (s *Service) Watch(ctx context.Context, id string, from int64, sendDispatch func(Dispatch) error, sendOutput func(OutputChunk) error) error {
	signals, stop := s.hub.watch(id, false)
	defer stop()
	poll := time.NewTicker(time.Second)
	defer poll.Stop()
	var last *Dispatch
	for {
		// The dispatch is read before its output, which is read up to its
		// output_stored, page by page: output is stored before the result (and
		// output_stored with it), so once the dispatch has ended, this is all of it.
		d, err := s.Get(ctx, id)
		if err != nil {
			return err
		}
		// The watcher gets the dispatch first, before the output stored so far; a change
		// after the output read with it, so that an end comes after the last output.
		if last == nil {
			if err := sendDispatch(d); err != nil {
				return err
			}
			last = &d
		}
		for from < d.OutputStored {
			out, next, err := s.Output(ctx, id, from, d.OutputStored, watchPage)
			if err != nil {
				return err
			}
			for _, o := range out {
				if err := sendOutput(o); err != nil {
					return err
				}
			}
			if next == from {
				break
			}
			from = next
		}
		if changed(*last, d) {
			if err := sendDispatch(d); err != nil {
				return err
			}
			last = &d
		}
		if d.State.Terminal() {
			return nil
		}
		select {
		case <-signals:
		case <-poll.C:
		case <-ctx.Done():
			return ctx.Err()
		case <-s.stopping:
			return errdefs.New(errdefs.Unavailable, "the daemon is shutting down: watch again from offset %d", from)
		}
	}
}

// changed reports whether a watcher must see the dispatch again.
func changed(a, b Dispatch) bool {
	return a.State != b.State || !equalTime(a.CancelRequestedAt, b.CancelRequestedAt) || !equalTime(a.SentAt, b.SentAt)
}

// equalTime reports whether a and b are the same instant, or both nil.
func equalTime(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Equal(*b)
}

// Cancel cancels a queued dispatch at once, or asks the node of a sent or running one to
// stop it; an ended dispatch is FailedPrecondition.
func (s *Service) Cancel(ctx context.Context, id, reason string) (Dispatch, error) {
	if reason == "" {
		reason = "cancelled by request"
	}
	if strings.Contains(reason, "\x00") {
		return Dispatch{}, errInvalid("reason holds a NUL character")
	}
	now := s.opts.Now()
	d, err := s.db.cancelQueued(ctx, id, reason, now)
	if err == nil {
		s.log.Info("queued dispatch cancelled", "dispatch_id", id)
		return d, nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return d, fmt.Errorf("dispatch: cancel %s: %w", id, err)
	}
	d, err = s.db.requestCancel(ctx, id, reason, now)
	if err == nil {
		s.log.Info("dispatch cancellation requested", "dispatch_id", id, "node_id", d.NodeID)
		return d, nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return d, fmt.Errorf("dispatch: cancel %s: %w", id, err)
	}
	d, err = s.Get(ctx, id)
	if err != nil {
		return d, err
	}
	return d, errFailedPrecondition("dispatch %s already ended (%s)", id, d.State)
}

// Filter selects dispatches to list.
type Filter struct {
	// NodeID, State and Capability select; empty selects all.
	NodeID     string
	State      State
	Capability string
	// CreatedSince and CreatedBefore, when not nil, select the dispatches created in
	// [CreatedSince, CreatedBefore); with both, CreatedSince must come first.
	CreatedSince, CreatedBefore *time.Time
	// PageSize is the most dispatches to return; zero means 100.
	PageSize int
	// PageToken is the NextPageToken of the previous page; empty for the first.
	PageToken string
}

// List returns a page of dispatches, newest first, and the token of the next page. A
// time window that is empty (CreatedSince not before CreatedBefore) is Invalid, naming
// create_time_before.
func (s *Service) List(ctx context.Context, f Filter) ([]Dispatch, string, error) {
	if f.CreatedSince != nil && f.CreatedBefore != nil && !f.CreatedSince.Before(*f.CreatedBefore) {
		return nil, "", errdefs.InvalidField("create_time_before", "must be later than create_time_after (%s), but is %s",
			f.CreatedSince.UTC().Format(time.RFC3339Nano), f.CreatedBefore.UTC().Format(time.RFC3339Nano))
	}
	limit := f.PageSize
	if limit <= 0 {
		limit = 100
	}
	var after *time.Time
	var afterID string
	if f.PageToken != "" {
		at, id, err := pagetoken.Decode(f.PageToken)
		if err != nil {
			return nil, "", err // pagetoken.ErrMalformed: apiserver's errors.go maps it
		}
		after, afterID = &at, id
	}
	rows, err := s.db.listDispatches(ctx, f, after, afterID, limit+1)
	if err != nil {
		return nil, "", fmt.Errorf("dispatch: list: %w", err)
	}
	rows, next := pagetoken.Page(rows, limit, func(r Dispatch) (time.Time, string) { return r.CreatedAt, r.ID })
	return rows, next, nil
}

// expire ends the dispatches whose deadline passed.
func (s *Service) expire(ctx context.Context) error {
	rows, err := s.db.expire(ctx, s.opts.Now(), staleAfter*s.silenceUnit(), resultGrace)
	if err != nil {
		return fmt.Errorf("dispatch: expire: %w", err)
	}
	for _, r := range rows {
		s.log.Info("dispatch ended by its deadline", "dispatch_id", r.id, "node_id", r.nodeID, "state", r.state)
		s.metrics.ended(r.state, "deadline")
	}
	return nil
}

// flushPresence records the last activity of this replica's sessions in the database,
// and ends the sessions a newer one replaced while a notification was lost.
func (s *Service) flushPresence(ctx context.Context) {
	tick := time.NewTicker(s.flushEvery())
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if err := s.touch(ctx); err != nil && ctx.Err() == nil {
			s.log.Error("node presence not recorded", "err", err)
		}
	}
}

// heartbeat returns the interval to tell a node now, and remembers it if it is the
// longest so far.
func (s *Service) heartbeat() time.Duration {
	hb := s.opts.Heartbeat()
	for {
		longest := s.longestHeartbeat.Load()
		if int64(hb) <= longest || s.longestHeartbeat.CompareAndSwap(longest, int64(hb)) {
			return hb
		}
	}
}

// silenceUnit is the heartbeat interval that presence and the sweeper count silence in:
// the longest ever told to a node since New, so that a node welcomed before the interval
// was shortened, which still sends at the old one, never looks stale.
func (s *Service) silenceUnit() time.Duration {
	return max(time.Duration(s.longestHeartbeat.Load()), s.opts.Heartbeat())
}

// flushEvery is the period of the presence flusher: often enough that a node sending
// heartbeats never looks stale.
func (s *Service) flushEvery() time.Duration { return min(maxFlushEvery, s.silenceUnit()/2) }

// touch records the last activity of every session of this replica.
func (s *Service) touch(ctx context.Context) error {
	live := s.sessions.snapshot()
	if len(live) == 0 {
		return nil
	}
	var devices, sessions []string
	var seen []time.Time
	for _, l := range live {
		devices = append(devices, l.deviceID)
		sessions = append(sessions, l.id)
		seen = append(seen, time.Unix(0, l.lastSeen.Load()))
	}
	current, err := s.db.touch(ctx, devices, sessions, seen)
	if err != nil {
		return fmt.Errorf("dispatch: record heartbeats: %w", err)
	}
	still := make(map[string]bool, len(current))
	for _, id := range current {
		still[id] = true
	}
	for _, l := range live {
		if !still[l.deviceID] {
			l.end(errReplaced)
		}
	}
	return nil
}
