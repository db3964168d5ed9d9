// Package notify delivers PostgreSQL notifications (LISTEN/NOTIFY) to the parts of
// palyrad that wait for something another replica did: a revocation, a pairing decision.
// One dedicated connection per replica listens on a fixed set of channels and fans each
// notification out to the subscribers of its channel.
//
// Notifications can be lost when the connection drops, or when a subscriber is too slow.
// Subscribers therefore also receive Reset events — after every (re)connection and after
// an overflow — on which they must reload the state they track from the database. The
// order that loses nothing is: Subscribe, wait for Ready, load, then apply events.
//
// Within a replica, a Fanout hands a subscription's ids on to the goroutines waiting for
// one id or watching them all (fanout.go).
package notify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/palyra/palyra/internal/retry"
)

// subscriberBuffer is how many events a subscriber may fall behind before it gets a
// Reset instead.
const subscriberBuffer = 256

// stableListen is how long a connection must have listened for its loss to start the
// reconnection backoff over.
const stableListen = 5 * time.Second

// Event is a notification, or a Reset.
type Event struct {
	// Payload is the notification's payload; empty for a Reset.
	Payload string
	// Reset asks the subscriber to reload what it tracks: notifications may have been
	// missed.
	Reset bool
}

// Listener listens on a fixed set of channels.
type Listener struct {
	config   *pgx.ConnConfig
	channels []string
	log      *slog.Logger
	ready    chan struct{}
	once     sync.Once
	// listening is true while the connection listens on every channel.
	listening atomic.Bool

	mu   sync.Mutex // guards subs
	subs map[string][]*Subscription
}

// Options configure a Listener.
type Options struct {
	// Config connects to the database to listen on; required.
	Config *pgx.ConnConfig
	// Channels are the channels listened on; Subscribe accepts only these.
	Channels []string
	// Logger receives connection losses; nil discards them.
	Logger *slog.Logger
}

// New returns a listener for opts.Channels on the database that opts.Config connects
// to. Run must be started for anything to be delivered.
func New(opts Options) *Listener {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Listener{
		config:   opts.Config.Copy(),
		channels: slices.Clone(opts.Channels),
		log:      log,
		ready:    make(chan struct{}),
		subs:     map[string][]*Subscription{},
	}
}

// Subscription receives the events of one channel.
type Subscription struct {
	l       *Listener
	channel string
	events  chan Event

	mu      sync.Mutex // guards overrun
	overrun bool       // an event was dropped; a Reset is owed
}

// Subscribe returns a subscription to channel, which must be one of the listener's.
func (l *Listener) Subscribe(channel string) (*Subscription, error) {
	if !slices.Contains(l.channels, channel) {
		return nil, fmt.Errorf("notify: %q is not a channel this listener listens on", channel)
	}
	s := &Subscription{l: l, channel: channel, events: make(chan Event, subscriberBuffer)}
	l.mu.Lock()
	l.subs[channel] = append(l.subs[channel], s)
	l.mu.Unlock()
	return s, nil
}

// Events delivers the subscription's events.
func (s *Subscription) Events() <-chan Event { return s.events }

// Close ends the subscription.
func (s *Subscription) Close() {
	s.l.mu.Lock()
	defer s.l.mu.Unlock()
	s.l.subs[s.channel] = slices.DeleteFunc(s.l.subs[s.channel], func(x *Subscription) bool { return x == s })
}

// deliver hands e to the subscriber without ever blocking the listener.
func (s *Subscription) deliver(e Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.overrun {
		select {
		case s.events <- Event{Reset: true}:
			s.overrun = false
		default:
			return
		}
	}
	select {
	case s.events <- e:
	default:
		s.overrun = true
	}
}

// Listening reports whether the listener is connected and listens on every channel
// now: while it is not, notifications are missed (a Reset follows the reconnection).
func (l *Listener) Listening() bool { return l.listening.Load() }

// Ready is closed once the listener listens on every channel for the first time.
func (l *Listener) Ready() <-chan struct{} { return l.ready }

// broadcast delivers e to every subscriber of channel ("" for all).
func (l *Listener) broadcast(channel string, e Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for ch, subs := range l.subs {
		if channel != "" && ch != channel {
			continue
		}
		for _, s := range subs {
			s.deliver(e)
		}
	}
}

// Run listens until ctx is done, reconnecting with backoff when the connection fails
// (from 100 ms up to 5 s, starting over once a connection had listened for
// stableListen); every (re)connection sends a Reset to every subscriber. Run is meant
// to have its own goroutine.
func (l *Listener) Run(ctx context.Context) {
	b := &retry.Backoff{Initial: 100 * time.Millisecond, Max: 5 * time.Second, Stable: stableListen}
	for ctx.Err() == nil {
		since, err := l.listen(ctx)
		if ctx.Err() != nil {
			return
		}
		if !since.IsZero() {
			b.Held(time.Since(since))
		}
		wait := b.Next()
		l.log.Warn("notification listener disconnected; reconnecting", "err", err, "in", wait)
		if retry.Sleep(ctx, wait) != nil {
			return
		}
	}
}

// listen connects, listens and delivers until the connection fails or ctx is done. It
// returns when the connection began to listen on every channel (zero when it never
// did) and why it ended.
func (l *Listener) listen(ctx context.Context) (since time.Time, err error) {
	conn, err := pgx.ConnectConfig(ctx, l.config)
	if err != nil {
		return since, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for _, ch := range l.channels {
		if _, err := conn.Exec(ctx, "listen "+pgx.Identifier{ch}.Sanitize()); err != nil {
			return since, err
		}
	}
	l.listening.Store(true)
	defer l.listening.Store(false)
	since = time.Now()
	l.broadcast("", Event{Reset: true})
	l.once.Do(func() { close(l.ready) })
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			if errors.Is(err, context.Canceled) {
				return since, ctx.Err()
			}
			return since, err
		}
		l.broadcast(n.Channel, Event{Payload: n.Payload})
	}
}
