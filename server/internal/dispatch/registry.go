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
	// cancels is set with a wake when cancellations may be pending; the session then
	// looks for them (and only then: most wakes bring dispatches).
	cancels atomic.Bool
	// done is closed when the session must end; cause says why.
	done      chan struct{}
	closeOnce sync.Once
	cause     error
	// lastSeen is when the node last sent anything, in Unix nanoseconds.
	lastSeen atomic.Int64
}

// newSession returns the session id of a device that attached at now.
func newSession(deviceID, id string, now time.Time) *session {
	s := &session{deviceID: deviceID, id: id, wake: make(chan struct{}, 1), done: make(chan struct{})}
	s.lastSeen.Store(now.UnixNano())
	s.cancels.Store(true) // the first delivery looks for cancellations sent to an earlier session
	return s
}

// signal wakes the session.
func (s *session) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// end makes the session end with cause (the first cause wins).
func (s *session) end(cause error) {
	s.closeOnce.Do(func() {
		s.cause = cause
		close(s.done)
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

// wake signals the session of a device, if this replica holds it; cancels says that a
// cancellation is among the news.
func (r *registry) wake(deviceID string, cancels bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s := r.byDevice[deviceID]; s != nil {
		if cancels {
			s.cancels.Store(true)
		}
		s.signal()
	}
}

// wakeAll signals every session, to look for dispatches and cancellations.
func (r *registry) wakeAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.byDevice {
		s.cancels.Store(true)
		s.signal()
	}
}

// replaced ends the device's session on this replica when the device's current session
// (as the database says, sessionID) is another one.
func (r *registry) replaced(deviceID, sessionID string) {
	if sessionID == "" {
		return // a detach, not a replacement
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if s := r.byDevice[deviceID]; s != nil && s.id != sessionID {
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
