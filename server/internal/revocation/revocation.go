// Package revocation makes revocation bite at once, on every replica: it keeps the
// revoked device certificates and devices of the whole deployment in memory, refuses
// them during the TLS handshake (tls.Config.VerifyConnection) and on every call, and
// closes the open connections of what gets revoked.
//
// The list is loaded from PostgreSQL and reloaded on every notification on the
// palyra_revocations channel (sent by triggers whenever a device or certificate is
// revoked, from any replica), on every reset of the notification listener, at the time
// of each scheduled revocation (a rotation revokes the old certificates after a grace
// period), and every 30 seconds as a safety net.
package revocation

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/palyra/palyra/server/internal/devices"
	"github.com/palyra/palyra/server/internal/identity"
	"github.com/palyra/palyra/server/internal/notify"
	"github.com/palyra/palyra/server/internal/store"
)

// Channel is the notification channel of revocations.
const Channel = "palyra_revocations"

// reloadEvery is the safety-net reload period.
const reloadEvery = 30 * time.Second

// The refusals, wrapped with detail.
var (
	// ErrCertificateRevoked refuses a revoked certificate.
	ErrCertificateRevoked = errors.New("certificate revoked")
	// ErrDeviceRevoked refuses every certificate of a revoked device.
	ErrDeviceRevoked = errors.New("device revoked")
	// ErrNotDevice refuses a client certificate that names no device.
	ErrNotDevice = errors.New("the client certificate names no device")
)

// List is the in-memory revocation list of one replica.
type List struct {
	store *store.Store
	sub   *notify.Subscription
	ready <-chan struct{}
	now   func() time.Time
	log   *slog.Logger

	mu      sync.RWMutex         // guards the following
	certs   map[string]time.Time // certificate fingerprint → when it is revoked (maybe later)
	devices map[string]bool      // revoked device ids
	conns   map[net.Conn]peer    // open connections with a client certificate
}

// peer is the client certificate of an open connection.
type peer struct {
	fingerprint string
	deviceID    string
}

// Options configure a List.
type Options struct {
	// Store is read through package devices, which owns the revocations; required.
	Store *store.Store
	// Notify delivers the revocations of every replica; it must listen on Channel.
	Notify *notify.Listener
	// Logger receives the connections closed and the reloads; nil discards them.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// New returns a list fed by opts.Notify's notifications. The daemon loads it (Load)
// before it serves, then keeps it current with Run.
func New(opts Options) (*List, error) {
	sub, err := opts.Notify.Subscribe(Channel)
	if err != nil {
		return nil, fmt.Errorf("revocation: %w", err)
	}
	now, log := opts.Now, opts.Logger
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &List{
		store: opts.Store, sub: sub, ready: opts.Notify.Ready(), now: now, log: log,
		certs: map[string]time.Time{}, devices: map[string]bool{}, conns: map[net.Conn]peer{},
	}, nil
}

// Load reads the whole list from the database and closes the connections it now
// refuses.
func (l *List) Load(ctx context.Context) error {
	r, err := devices.ListRevocations(ctx, l.store, l.now())
	if err != nil {
		return fmt.Errorf("revocation: load: %w", err)
	}
	deviceMap := make(map[string]bool, len(r.Devices))
	for _, id := range r.Devices {
		deviceMap[id] = true
	}
	l.mu.Lock()
	l.certs, l.devices = r.Certificates, deviceMap
	l.mu.Unlock()
	l.closeRevoked()
	return nil
}

// Run keeps the list current until ctx is done. It waits for the notification listener
// before the first load, so that nothing revoked meanwhile is missed. Run is meant to
// have its own goroutine.
func (l *List) Run(ctx context.Context) {
	defer l.sub.Close()
	select {
	case <-ctx.Done():
		return
	case <-l.ready:
	}
	tick := time.NewTicker(reloadEvery)
	defer tick.Stop()
	next := time.NewTimer(time.Hour)
	defer next.Stop()
	reload := func() {
		if err := l.Load(ctx); err != nil {
			if ctx.Err() == nil {
				l.log.Error("revocation list not reloaded", "err", err)
			}
			return
		}
		if wait, ok := l.nextScheduled(); ok {
			next.Reset(wait)
		}
	}
	reload()
	for {
		select {
		case <-ctx.Done():
			return
		case e := <-l.sub.Events():
			if !e.Reset {
				l.log.Info("revocation received", "what", e.Payload)
			}
			reload()
		case <-tick.C:
			reload()
		case <-next.C:
			reload()
		}
	}
}

// nextScheduled is the time until the earliest revocation still to come.
func (l *List) nextScheduled() (time.Duration, bool) {
	now := l.now()
	l.mu.RLock()
	defer l.mu.RUnlock()
	var earliest time.Time
	for _, at := range l.certs {
		if at.After(now) && (earliest.IsZero() || at.Before(earliest)) {
			earliest = at
		}
	}
	if earliest.IsZero() {
		return 0, false
	}
	return earliest.Sub(now) + 10*time.Millisecond, true
}

// Check refuses a client certificate that names no device, or that is revoked, or whose
// device is revoked. It returns the device id.
func (l *List) Check(c *x509.Certificate) (string, error) {
	id, ok := identity.DeviceID(c)
	if !ok {
		return "", ErrNotDevice
	}
	fp := identity.Fingerprint(c.Raw)
	now := l.now()
	l.mu.RLock()
	defer l.mu.RUnlock()
	if at, ok := l.certs[fp]; ok && !now.Before(at) {
		return id, fmt.Errorf("%w: %s", ErrCertificateRevoked, fp)
	}
	if l.devices[id] {
		return id, fmt.Errorf("%w: %s", ErrDeviceRevoked, id)
	}
	return id, nil
}

// CheckDevice refuses a revoked device.
func (l *List) CheckDevice(id string) error {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.devices[id] {
		return fmt.Errorf("%w: %s", ErrDeviceRevoked, id)
	}
	return nil
}

// VerifyConnection is the tls.Config callback of the listener: it refuses, during the
// handshake, client certificates that are revoked or whose device is revoked.
// Connections without a client certificate pass (they are anonymous).
func (l *List) VerifyConnection(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return nil
	}
	if _, err := l.Check(cs.PeerCertificates[0]); err != nil {
		l.log.Info("TLS handshake refused", "err", err)
		return err
	}
	return nil
}

// Reason names, for the audit log, why a handshake refused a client certificate: the
// refusals of VerifyConnection ("certificate-revoked", "device-revoked",
// "not-a-device"), and those of the verification against the CA that comes before it
// ("unknown-authority", "expired-certificate", "invalid-certificate").
func Reason(err error) string {
	var invalid x509.CertificateInvalidError
	switch {
	case errors.Is(err, ErrCertificateRevoked):
		return "certificate-revoked"
	case errors.Is(err, ErrDeviceRevoked):
		return "device-revoked"
	case errors.Is(err, ErrNotDevice):
		return "not-a-device"
	case errors.As(err, new(x509.UnknownAuthorityError)):
		return "unknown-authority"
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return "expired-certificate"
	}
	return "invalid-certificate"
}

// ConnState is the http.Server callback that tracks connections made with a client
// certificate, so that a revocation can close them.
func (l *List) ConnState(c net.Conn, state http.ConnState) {
	switch state {
	case http.StateActive, http.StateIdle:
		tc, ok := c.(*tls.Conn)
		if !ok {
			return
		}
		cs := tc.ConnectionState()
		if len(cs.PeerCertificates) == 0 {
			return
		}
		leaf := cs.PeerCertificates[0]
		id, _ := identity.DeviceID(leaf)
		l.mu.Lock()
		l.conns[c] = peer{fingerprint: identity.Fingerprint(leaf.Raw), deviceID: id}
		l.mu.Unlock()
	case http.StateClosed, http.StateHijacked:
		l.mu.Lock()
		delete(l.conns, c)
		l.mu.Unlock()
	}
}

// closeRevoked closes the open connections whose certificate or device is revoked now.
func (l *List) closeRevoked() {
	now := l.now()
	var doomed []net.Conn
	l.mu.Lock()
	for c, p := range l.conns {
		if at, ok := l.certs[p.fingerprint]; (ok && !now.Before(at)) || l.devices[p.deviceID] {
			doomed = append(doomed, c)
			delete(l.conns, c)
		}
	}
	l.mu.Unlock()
	for _, c := range doomed {
		l.log.Info("closing the connection of a revoked certificate", "remote", c.RemoteAddr().String())
		_ = c.Close()
	}
}
