package dispatch

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// Why a session ends other than by its stream.
var (
	errReplaced     = errors.New("replaced by a newer Attach of this device")
	errShuttingDown = errors.New("the daemon is shutting down; attach again (to any replica)")
)

// session is one live Attach stream on this replica.
type session struct {
	deviceID, id string
	// wake is signalled (coalesced) when the device has new dispatches or cancellations.
	wake chan struct{}
	// claim is set with a wake when the database may hold dispatches for the session
	// to claim; cancels, when cancellations may be pending. The session looks for
	// either only then: most wakes bring a dispatch this replica handed it (direct).
	claim, cancels atomic.Bool

	mu sync.Mutex // guards direct and handed
	// direct are the dispatches this replica created already sent on this session,
	// for the session to send.
	direct []Dispatch
	// handed are the ids of dispatches being handed to the session directly: the
	// notification of their insertion must not make it claim.
	handed map[string]bool
	// done is closed when the session must end; cause says why.
	done      chan struct{}
	closeOnce sync.Once
	cause     error
	// lastSeen is when the node last sent anything, in Unix nanoseconds.
	lastSeen atomic.Int64
	// capabilities are those the node announced last, as stored.
	capabilities atomic.Pointer[[]Capability]
	// onWake, when set, is called when a wake is signalled that none is pending for;
	// onEnd, when set, once the session must end. Both are set before the session is
	// registered, and must not block.
	onWake, onEnd func()
}

// newSession returns the session id of a device that attached at now.
func newSession(deviceID, id string, now time.Time) *session {
	s := &session{deviceID: deviceID, id: id, wake: make(chan struct{}, 1), done: make(chan struct{}), handed: map[string]bool{}}
	s.lastSeen.Store(now.UnixNano())
	// The first delivery claims what waits for the device, and looks for cancellations
	// sent to an earlier session.
	s.claim.Store(true)
	s.cancels.Store(true)
	return s
}

// expect notes that the dispatch id is about to be handed to the session directly.
func (s *session) expect(id string) {
	s.mu.Lock()
	s.handed[id] = true
	s.mu.Unlock()
}

// hand gives the session d, the dispatch id stored as sent on it, to send; nil (nothing
// was stored) just forgets the expectation.
func (s *session) hand(id string, d *Dispatch) {
	s.mu.Lock()
	if d != nil {
		s.direct = append(s.direct, *d)
	} else {
		delete(s.handed, id)
	}
	s.mu.Unlock()
	if d != nil {
		s.signal()
	}
}

// takeDirect returns the dispatches handed to the session since the last call.
func (s *session) takeDirect() []Dispatch {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.direct
	s.direct = nil
	return d
}

// inserted handles the notification that dispatch id was stored: the session claims
// it unless it is being handed the dispatch directly.
func (s *session) inserted(id string) {
	s.mu.Lock()
	handed := s.handed[id]
	delete(s.handed, id)
	s.mu.Unlock()
	if !handed {
		s.claim.Store(true)
		s.signal()
	}
}

// signal wakes the session.
func (s *session) signal() {
	select {
	case s.wake <- struct{}{}:
		if s.onWake != nil {
			s.onWake()
		}
	default:
	}
}

// end makes the session end with cause (the first cause wins).
func (s *session) end(cause error) {
	s.closeOnce.Do(func() {
		s.cause = cause
		close(s.done)
		if s.onEnd != nil {
			s.onEnd()
		}
	})
}

// seen records that the node sent something at t.
func (s *session) seen(t time.Time) { s.lastSeen.Store(t.UnixNano()) }

// registry holds the live sessions of this replica, one per device.
type registry struct {
	mu       sync.Mutex // guards byDevice and closed
	byDevice map[string]*session
	closed   bool
}

// newRegistry returns an empty registry.
func newRegistry() *registry { return &registry{byDevice: map[string]*session{}} }

// add makes s the device's session on this replica, ending an older one; it refuses
// when the registry is closed for a shutdown.
func (r *registry) add(s *session) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return errShuttingDown
	}
	if old := r.byDevice[s.deviceID]; old != nil {
		old.end(errReplaced)
	}
	r.byDevice[s.deviceID] = s
	return nil
}

// remove forgets s, unless a newer session of its device replaced it.
func (r *registry) remove(s *session) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.byDevice[s.deviceID] == s {
		delete(r.byDevice, s.deviceID)
	}
}

// get returns the device's session on this replica, or nil.
func (r *registry) get(deviceID string) *session {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.byDevice[deviceID]
}

// wake signals the session of a device, if this replica holds it, to claim its
// dispatches; cancels says that a cancellation is among the news.
func (r *registry) wake(deviceID string, cancels bool) {
	if s := r.get(deviceID); s != nil {
		s.claim.Store(true)
		if cancels {
			s.cancels.Store(true)
		}
		s.signal()
	}
}

// inserted handles the notification that a dispatch of a device was stored.
func (r *registry) inserted(deviceID, id string) {
	if s := r.get(deviceID); s != nil {
		s.inserted(id)
	}
}

// wakeAll signals every session, to look for dispatches and cancellations.
func (r *registry) wakeAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.byDevice {
		s.claim.Store(true)
		s.cancels.Store(true)
		s.signal()
	}
}

// replaced ends the device's session on this replica when the device's current session
// (as the database says, sessionID) is a newer one. Session ids are ULIDs, which sort
// by the time they were made: a notification naming an older session is one that
// arrived late, after the device attached again here, and ends nothing. (A newer
// session made on a replica whose clock is behind is caught when the heartbeats are
// recorded, which end every session the database no longer holds.)
func (r *registry) replaced(deviceID, sessionID string) {
	if sessionID == "" {
		return // a detach, not a replacement
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if s := r.byDevice[deviceID]; s != nil && sessionID > s.id {
		s.end(errReplaced)
	}
}

// snapshot returns the live sessions.
func (r *registry) snapshot() []*session {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*session, 0, len(r.byDevice))
	for _, s := range r.byDevice {
		out = append(out, s)
	}
	return out
}

// count is the number of live sessions.
func (r *registry) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.byDevice)
}

// closeAll ends every session and refuses new ones.
func (r *registry) closeAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	for _, s := range r.byDevice {
		s.end(errShuttingDown)
	}
}
