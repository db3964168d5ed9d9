package notify

import (
	"context"
	"sync"
	"time"
)

// Fanout hands the ids a channel's notifications name (and local changes) to the
// goroutines of one replica that wait for them: a wait for one id (Wait), or a watch of
// every id (Watch). It never blocks the sender. Safe for concurrent use.
type Fanout struct {
	mu      sync.Mutex // guards the following
	waits   map[string]map[chan struct{}]struct{}
	watches map[*Watch]struct{}
}

// Watch receives the ids of every change.
type Watch struct {
	// IDs delivers the ids that may have changed.
	IDs <-chan string
	// Missed is signalled (coalesced) when changes may have been missed: IDs was full,
	// or notifications were (a Reset). The watcher then reloads what it tracks.
	Missed <-chan struct{}

	ids    chan string
	missed chan struct{}
}

// NewFanout returns an empty Fanout.
func NewFanout() *Fanout {
	return &Fanout{waits: map[string]map[chan struct{}]struct{}{}, watches: map[*Watch]struct{}{}}
}

// Wait registers interest in the changes of id: the returned channel receives a signal
// (coalesced) whenever it may have changed. Call the returned function to stop.
func (f *Fanout) Wait(id string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.waits[id] == nil {
		f.waits[id] = map[chan struct{}]struct{}{}
	}
	f.waits[id][ch] = struct{}{}
	return ch, func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		delete(f.waits[id], ch)
		if len(f.waits[id]) == 0 {
			delete(f.waits, id)
		}
	}
}

// Watch registers interest in every change; IDs holds up to buffer of them before the
// watch is told it missed some. Call the returned function to stop.
func (f *Fanout) Watch(buffer int) (*Watch, func()) {
	w := &Watch{ids: make(chan string, buffer), missed: make(chan struct{}, 1)}
	w.IDs, w.Missed = w.ids, w.missed
	f.mu.Lock()
	defer f.mu.Unlock()
	f.watches[w] = struct{}{}
	return w, func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		delete(f.watches, w)
	}
}

// Deliver hands a notification event on: a Reset to everyone (WakeAll), else its
// payload's id (Wake).
func (f *Fanout) Deliver(e Event) {
	if e.Reset {
		f.WakeAll()
	} else {
		f.Wake(e.Payload)
	}
}

// Wake signals the waits of id and tells every watch.
func (f *Fanout) Wake(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for ch := range f.waits[id] {
		signal(ch)
	}
	for w := range f.watches {
		select {
		case w.ids <- id:
		default:
			signal(w.missed)
		}
	}
}

// WakeAll signals every wait and watch: changes may have been missed.
func (f *Fanout) WakeAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, set := range f.waits {
		for ch := range set {
			signal(ch)
		}
	}
	for w := range f.watches {
		signal(w.missed)
	}
}

// signal sends on a 1-buffered channel unless a signal is already pending.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Relay hands sub's events to f, and calls sweep at once and then every interval, until
// ctx is done; then it closes sub. With a nil sub (no notifications) it only sweeps.
// It is the body of a service's Run goroutine.
func Relay(ctx context.Context, sub *Subscription, f *Fanout, interval time.Duration, sweep func(context.Context)) {
	var events <-chan Event
	if sub != nil {
		defer sub.Close()
		events = sub.Events()
	}
	sweep(ctx)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			sweep(ctx)
		case e := <-events:
			f.Deliver(e)
		}
	}
}
