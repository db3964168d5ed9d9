// Package dispatch is what palyrad exists for: the node runtime and durable dispatch.
//
// Nodes keep one Attach stream open (attach.go: the hello, the welcome, heartbeats,
// dispatches and cancels down, acceptance, output and results up). Every dispatch is a
// row in PostgreSQL from its creation (service.go): queued → sent → running →
// succeeded | failed | timed_out | cancelled. A replica delivers the dispatches of the
// devices attached to it, claiming them with FOR UPDATE SKIP LOCKED when PostgreSQL
// notifies it of new work (or when a node attaches), so that a dispatch created on any
// replica reaches its node on any other; a dispatch created on the replica that holds
// its node's session is stored as sent on that session and handed to it directly. What
// a node reports in one round (acceptance, output, results) is written with one
// statement, and a result is persisted before the node is told to forget it (the
// inserts of concurrent calls and the rounds of all sessions of the replica written at
// the same moment commit together: store.Grouped); a node
// never runs a dispatch id twice; a sweeper ends every dispatch by its deadline. A
// dispatch's output is stored contiguously and within its cap, whatever chunks a node
// sends, and read back in pages that fit a message.
// Nothing is kept only in memory but the live sessions themselves.
//
// Dispatches of the browser.* capabilities browse with a browser profile, which the
// Service asks of Options.Browser (browser.go): checked when one is created, resolved
// each time it is sent (never stored with it), and the state its result carries saved
// before the result is recorded.
//
// The package's queries run only in store.go, which turns their rows into its types
// (Dispatch, OutputChunk, Node: model.go); the Service's exported methods take and
// return those, and the handlers turn them into the API's messages (convert.go).
package dispatch

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/palyra/palyra/server/internal/notify"
	"github.com/palyra/palyra/server/internal/store"
)

// The notification channels this package listens on (see the triggers in
// sqlc/migrations 00004, 00005 and 00017). A payload holds one line or more, one for
// each row a statement changed (00017: one notification per statement, not per row).
const (
	// ChannelDispatch carries lines "<device id> <dispatch id> <queued|state:<state>|cancel>".
	ChannelDispatch = "palyra_dispatch"
	// ChannelOutput carries lines "<dispatch id>" when output was stored.
	ChannelOutput = "palyra_dispatch_output"
	// ChannelSessions carries "<device id> <session id>" when a device attached.
	ChannelSessions = "palyra_sessions"
)

// Defaults of the options.
const (
	DefaultHeartbeat      = 15 * time.Second
	DefaultTimeout        = 60 * time.Second
	DefaultMaxOutputBytes = 1 << 20
	// staleAfter and offlineAfter are how many heartbeat intervals of silence make an
	// attached node stale, and offline (its stream is then ended).
	staleAfter   = 3
	offlineAfter = 10
	// helloTimeout is how long a node has to send its hello.
	helloTimeout = 10 * time.Second
	// resultGrace is how long after a running dispatch's deadline the sweeper waits for
	// the node's own report before ending it.
	resultGrace = 5 * time.Second
	// sweepEvery is the period of the deadline sweeper.
	sweepEvery = time.Second
	// maxFlushEvery bounds the period of the presence flusher.
	maxFlushEvery = 5 * time.Second
)

// Options are the dependencies of the Service.
type Options struct {
	// Store holds the dispatches and the devices' sessions.
	Store *store.Store
	// Notify is the replica's listener; it must listen on ChannelDispatch,
	// ChannelOutput and ChannelSessions.
	Notify *notify.Listener
	// Metrics registers the metrics; nil keeps them unregistered.
	Metrics prometheus.Registerer
	// ReplicaID names this replica in the devices' sessions.
	ReplicaID string
	// Heartbeat returns the interval nodes send heartbeats at, read at each node's
	// welcome (it may change while the daemon runs); three missed make a node stale, ten
	// offline. Nil means DefaultHeartbeat.
	Heartbeat func() time.Duration
	// MaxMessageBytes is announced to nodes in the welcome.
	MaxMessageBytes int
	// Browser checks, resolves and saves the browser profiles of the dispatches of the
	// browser.* capabilities; nil refuses those dispatches.
	Browser BrowserProfiles
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger logs sessions and dispatch ends; nil discards.
	Logger *slog.Logger
}

// Service runs dispatches and the Attach streams of the nodes attached to this replica.
type Service struct {
	opts     Options
	db       db
	log      *slog.Logger
	schemas  *schemas
	hub      *hub
	sessions *registry
	metrics  *metrics
	subs     map[string]*notify.Subscription
	// longestHeartbeat is the longest interval Heartbeat returned since New, in
	// nanoseconds: nodes welcomed before a change may still send at it.
	longestHeartbeat atomic.Int64
	// stopping is closed by Shutdown.
	stopping     chan struct{}
	stoppingOnce sync.Once
}

// New returns the Service. It subscribes to its notification channels at once, so that
// nothing is missed before Run starts, and forgets the sessions an earlier process with
// the same replica id left behind.
func New(ctx context.Context, opts Options) (*Service, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Heartbeat == nil {
		opts.Heartbeat = func() time.Duration { return DefaultHeartbeat }
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Service{
		opts: opts, db: db{st: opts.Store}, log: log, schemas: newSchemas(), hub: newHub(), sessions: newRegistry(),
		subs: map[string]*notify.Subscription{}, stopping: make(chan struct{}),
	}
	m, err := newMetrics(opts.Metrics, s.sessions)
	if err != nil {
		return nil, err
	}
	s.metrics = m
	if n, err := s.db.detachReplica(ctx, opts.ReplicaID, nil); err != nil {
		return nil, fmt.Errorf("dispatch: forget the sessions of an earlier process: %w", err)
	} else if n > 0 {
		log.Info("sessions of an earlier process of this replica forgotten", "sessions", n)
	}
	for _, ch := range []string{ChannelDispatch, ChannelOutput, ChannelSessions} {
		sub, err := opts.Notify.Subscribe(ch)
		if err != nil {
			return nil, err
		}
		s.subs[ch] = sub
	}
	return s, nil
}

// Run delivers notifications, ends overdue dispatches, records heartbeats and keeps the
// metrics until ctx is done. It is meant to have its own goroutine.
func (s *Service) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for ch, sub := range s.subs {
		wg.Go(func() { s.listen(ctx, ch, sub) })
	}
	wg.Go(func() { s.sweep(ctx) })
	wg.Go(func() { s.flushPresence(ctx) })
	wg.Wait()
}

// listen turns the notifications of one channel into signals for the sessions and
// watchers of this replica.
func (s *Service) listen(ctx context.Context, channel string, sub *notify.Subscription) {
	defer sub.Close()
	for {
		select {
		case <-ctx.Done():
			return
		case e := <-sub.Events():
			if e.Reset {
				s.reset(channel)
				continue
			}
			for line := range strings.Lines(e.Payload) {
				s.event(channel, strings.Fields(line))
			}
		}
	}
}

// event handles one line of a notification of channel, split into its fields.
func (s *Service) event(channel string, fields []string) {
	switch {
	case channel == ChannelDispatch && len(fields) == 3:
		s.dispatchEvent(fields[0], fields[1], fields[2])
	case channel == ChannelSessions && len(fields) == 2:
		s.sessions.replaced(fields[0], fields[1])
	case channel == ChannelOutput && len(fields) == 1:
		s.hub.signal(fields[0], false)
	}
}

// reset makes up for the notifications of channel that may have been missed: every
// (re)connection of the listener resets each channel, so each wakes only what its own
// notifications would have woken. Sessions replaced meanwhile (ChannelSessions) are
// found by the presence flusher, which learns from the database which sessions are
// still current.
func (s *Service) reset(channel string) {
	switch channel {
	case ChannelDispatch:
		s.hub.signalAll()
		s.sessions.wakeAll()
	case ChannelOutput:
		s.hub.signalAll()
	}
}

// dispatchEvent handles a notification of ChannelDispatch: event is queued, cancel, or
// state:<new state> (a bare "state", as the trigger of migration 00004 sent it, is a
// change not known).
func (s *Service) dispatchEvent(deviceID, id, event string) {
	switch event {
	case "queued":
		s.hub.signal(id, false)
		s.sessions.inserted(deviceID, id)
	case "cancel":
		s.hub.signal(id, false)
		s.sessions.wake(deviceID, true)
	default:
		state, known := strings.CutPrefix(event, "state:")
		s.hub.signal(id, !known || State(state).Terminal())
	}
}

// sweep ends overdue dispatches every second and refreshes the gauges.
func (s *Service) sweep(ctx context.Context) {
	tick := time.NewTicker(sweepEvery)
	defer tick.Stop()
	n := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if err := s.expire(ctx); err != nil && ctx.Err() == nil {
			s.log.Error("overdue dispatches not ended", "err", err)
		}
		if n++; n%15 == 0 {
			s.metrics.refreshStates(ctx, s.db)
		}
	}
}

// Shutdown ends every Attach stream and every watch of this replica and refuses new
// streams: they do not end by themselves, and the HTTP server's shutdown waits for
// them. Nodes attach again, to any replica; watchers resume from their offset. The
// sessions ending so do not record their end one by one: DetachAll does, for all.
func (s *Service) Shutdown() {
	s.stoppingOnce.Do(func() { close(s.stopping) })
	s.sessions.closeAll()
}

// DetachAll records, with one statement, that every session of this replica ended; the
// daemon calls it after Shutdown, once the streams are over.
func (s *Service) DetachAll(ctx context.Context) error {
	now := s.opts.Now()
	n, err := s.db.detachReplica(ctx, s.opts.ReplicaID, &now)
	if err != nil {
		return fmt.Errorf("dispatch: record the end of this replica's sessions: %w", err)
	}
	s.log.Info("sessions of this replica ended", "sessions", n)
	return nil
}

// stopped reports whether Shutdown was called.
func (s *Service) stopped() bool {
	select {
	case <-s.stopping:
		return true
	default:
		return false
	}
}
