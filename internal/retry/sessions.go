package retry

import (
	"crypto/tls"
	"errors"
	"net"
	"sync"
)

// SessionCache is the TLS session cache of a client that reconnects (the node agent).
// crypto/tls drops the session that a handshake offered when that handshake fails (a
// Put of nil), so that a ticket the server cannot take is not offered again and again.
// When the failure was the connection's (a timeout, a reset: an overloaded server
// shedding handshakes), Settle puts the session back, so that the next attempt resumes
// instead of making the server pay a full handshake just when it can least afford
// one; a failure that the server answered with a TLS alert leaves it dropped.
type SessionCache struct {
	tls.ClientSessionCache

	mu      sync.Mutex // guards dropped
	dropped map[string]*tls.ClientSessionState
}

// NewSessionCache returns a cache of at most n sessions, by server name.
func NewSessionCache(n int) *SessionCache {
	return &SessionCache{ClientSessionCache: tls.NewLRUClientSessionCache(n), dropped: map[string]*tls.ClientSessionState{}}
}

// Put stores cs under key; a nil cs drops the session, which Settle may put back.
func (c *SessionCache) Put(key string, cs *tls.ClientSessionState) {
	old, _ := c.Get(key)
	c.mu.Lock()
	if cs == nil && old != nil {
		c.dropped[key] = old
	} else {
		delete(c.dropped, key)
	}
	c.mu.Unlock()
	c.ClientSessionCache.Put(key, cs)
}

// Settle puts back the sessions dropped since the last Settle, after an attempt that
// failed with err, unless the server answered it with a TLS alert (TLSAlert).
func (c *SessionCache) Settle(err error) {
	c.mu.Lock()
	dropped := c.dropped
	c.dropped = map[string]*tls.ClientSessionState{}
	c.mu.Unlock()
	if TLSAlert(err) {
		return
	}
	for key, cs := range dropped {
		c.ClientSessionCache.Put(key, cs)
	}
}

// TLSAlert reports whether err is a TLS alert from the peer: crypto/tls reports one as
// a net.OpError of the operation "remote error".
func TLSAlert(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "remote error"
}
