package approvals

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/palyra/palyra/server/internal/audit"
	"github.com/palyra/palyra/server/internal/notify"
	"github.com/palyra/palyra/server/internal/store"
)

// Defaults and limits.
const (
	// Channel is the notification channel on which the database announces every insert
	// and update of an approval; the payload is the approval id.
	Channel = "palyra_approvals"
	// DefaultTimeout is how long an approval waits for a decision when
	// Options.Timeout is nil (the runtime setting agents.approval_timeout).
	DefaultTimeout = 10 * time.Minute
	// RunEnded is the reason of an approval that expires because its run ended first.
	RunEnded = "the run ended"

	// sweepInterval is how often Run expires the overdue approvals that no Ask waits for
	// (its replica died): at most this late.
	sweepInterval = 5 * time.Second
	// endTimeout bounds the expiry of an approval whose Ask's context ended.
	endTimeout = 10 * time.Second
	// pollWithoutNotify is how often an Ask and a watch re-read without notifications.
	pollWithoutNotify = 2 * time.Second
	// changeBuffer is how many changes a watch holds before it reports them as missed.
	changeBuffer = 64
)

// States of approvals, as stored (the approvals_state constraint).
const (
	statePending  = "pending"
	stateApproved = "approved"
	stateDenied   = "denied"
	stateExpired  = "expired"
)

// Scopes of approved approvals, as stored (the approvals_scope constraint).
const (
	scopeOnce = "once"
	scopeRun  = "run"
)

// Options are the Service's dependencies and settings.
type Options struct {
	// Store is the database.
	Store *store.Store
	// Audit records what no RPC decides: the requests and the expiries.
	Audit *audit.Log
	// Notify listens on Channel ("palyra_approvals"); it must be running for Ask and
	// the watches to learn of decisions at once. Nil: they re-read every 2 s.
	Notify *notify.Listener
	// Timeout returns how long a new approval waits for a decision
	// (agents.approval_timeout), read at each Ask; nil means DefaultTimeout.
	Timeout func() time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger receives what happens; nil discards it.
	Logger *slog.Logger
}

// Service is the approvals of agents' tool calls: Ask (the run loop's), EndRun, the
// expiry sweep (Run), and ApprovalService (Handler). It is safe for concurrent use.
type Service struct {
	opts Options
	now  func() time.Time
	log  *slog.Logger
	sub  *notify.Subscription // nil without Options.Notify
	poll time.Duration        // how often waits re-read without a notification; 0: never

	// changes hands the notifications to the waits of Ask and to WatchApprovals.
	changes *notify.Fanout

	stopping     chan struct{} // closed by Shutdown
	stoppingOnce sync.Once
}

// New checks opts and returns the Service. It subscribes to Channel right away so that
// no notification is missed between New and Run.
func New(opts Options) (*Service, error) {
	var problems []error
	if opts.Store == nil {
		problems = append(problems, errors.New("a store is required"))
	}
	if opts.Audit == nil {
		problems = append(problems, errors.New("an audit log is required"))
	}
	if err := errors.Join(problems...); err != nil {
		return nil, fmt.Errorf("approvals: %w", err)
	}
	if opts.Timeout == nil {
		opts.Timeout = func() time.Duration { return DefaultTimeout }
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Service{
		opts:     opts,
		now:      func() time.Time { return opts.Now().UTC().Truncate(time.Microsecond) },
		log:      log,
		changes:  notify.NewFanout(),
		stopping: make(chan struct{}),
	}
	if opts.Notify == nil {
		s.poll = pollWithoutNotify
		return s, nil
	}
	sub, err := opts.Notify.Subscribe(Channel)
	if err != nil {
		return nil, fmt.Errorf("approvals: %w", err)
	}
	s.sub = sub
	return s, nil
}

// Run expires the pending approvals whose time ran out (at start and every 5 s: those
// whose Ask waits on no replica any more, as when its replica died), auditing each
// expiry, and hands approval notifications to the waits, until ctx is done. Run is
// meant to have its own goroutine, and to be started once.
func (s *Service) Run(ctx context.Context) {
	notify.Relay(ctx, s.sub, s.changes, sweepInterval, s.sweep)
}

// sweep expires the overdue approvals, logging a failure (the next sweep retries).
func (s *Service) sweep(ctx context.Context) {
	if err := s.expireDue(ctx); err != nil && ctx.Err() == nil {
		s.log.Error("expiring approvals failed", "err", err)
	}
}

// Shutdown ends every WatchApprovals on this replica and refuses new ones: they do not
// end by themselves, and the HTTP server's shutdown waits for them. Clients watch
// again, on any replica.
func (s *Service) Shutdown() {
	s.stoppingOnce.Do(func() { close(s.stopping) })
}

// Handler serves ApprovalService.
func (s *Service) Handler() *Handler { return &Handler{s: s} }
