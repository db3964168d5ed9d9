package apiserver

import (
	"crypto/tls"
	"sync"
	"time"
)

// sessionTickets gives the listener's configuration the session-ticket keys that
// keysAt says are in force at each handshake (ServerOptions.SessionTicketKeys),
// setting them anew only when their period changes.
type sessionTickets struct {
	config *tls.Config
	keysAt func(now time.Time) (keys [][32]byte, period int64, err error)
	log    *throttle

	mu     sync.Mutex // guards the following
	period int64
	set    bool
}

// refresh sets the keys in force at now, unless they are set already. When they cannot
// be derived, the keys of the last period stay (or, before any, crypto/tls's own).
func (s *sessionTickets) refresh(now time.Time) {
	keys, period, err := s.keysAt(now)
	if err != nil {
		s.log.warn("the TLS session-ticket keys could not be derived; the previous ones stay", "err", err)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.set && s.period == period {
		return
	}
	s.config.SetSessionTicketKeys(keys)
	s.period, s.set = period, true
}
