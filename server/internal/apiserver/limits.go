package apiserver

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"connectrpc.com/connect"
)

// warnEvery is the most often the listener logs one kind of warning; the next one
// says how many it held back.
const warnEvery = 10 * time.Second

// limitListener hands out the connections of a listener under two caps, on those open
// at once in total and from one remote address (addressKey). A connection over a cap
// is closed as soon as it is accepted, before its TLS handshake, with a reset
// (SO_LINGER 0): it costs one accept and leaves no TIME_WAIT. The total cap, below the
// open-file limit, keeps accept from failing for want of descriptors; when it fails all
// the same (EMFILE, ENFILE) the error is logged at warning level, rate limited, and
// returned to http.Server, which retries with a backoff (and logs at debug level, with
// every failed TLS handshake).
type limitListener struct {
	net.Listener
	total, perAddress int // perAddress 0: no per-address cap
	metrics           *Metrics
	refusedLog        *throttle
	acceptLog         *throttle

	mu        sync.Mutex // guards the following
	open      int
	byAddress map[string]int
}

func newLimitListener(ln net.Listener, total, perAddress int, m *Metrics, log *slog.Logger) *limitListener {
	return &limitListener{
		Listener: ln, total: total, perAddress: perAddress, metrics: m,
		refusedLog: &throttle{log: log, every: warnEvery},
		acceptLog:  &throttle{log: log, every: warnEvery},
		byAddress:  map[string]int{},
	}
}

// Accept returns the next connection within the caps; it is called by http.Server's
// serving goroutine.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				l.metrics.acceptErrors.Inc()
				l.acceptLog.warn("accepting a connection failed; retrying", "err", err)
			}
			return nil, err
		}
		key := addressKey(c.RemoteAddr().String())
		over, open := l.admit(key)
		if over == "" {
			return &limitedConn{Conn: c, l: l, key: key}, nil
		}
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		_ = c.Close()
		l.metrics.refused.WithLabelValues(over).Inc()
		if over == capPerAddress {
			l.refusedLog.warn("connection closed at accept: its address is at server.max_connections_per_address",
				"remote", key, "open", open, "cap", l.perAddress)
		} else {
			l.refusedLog.warn("connection closed at accept: palyrad is at server.max_connections",
				"remote", key, "open", open, "cap", l.total)
		}
	}
}

// The caps, as the reason label of palyra_listener_refused_total.
const (
	capPerAddress = "per_address"
	capTotal      = "total"
)

// admit counts a new connection from key and returns "", or the cap it would exceed
// and the connections open under that cap.
func (l *limitListener) admit(key string) (over string, open int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open >= l.total {
		return capTotal, l.open
	}
	if n := l.byAddress[key]; l.perAddress > 0 && n >= l.perAddress {
		return capPerAddress, n
	}
	l.open++
	l.byAddress[key]++
	l.metrics.connections.Set(float64(l.open))
	return "", 0
}

// release forgets a connection from key.
func (l *limitListener) release(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.open--
	if l.byAddress[key]--; l.byAddress[key] == 0 {
		delete(l.byAddress, key)
	}
	l.metrics.connections.Set(float64(l.open))
}

// limitedConn is a connection counted by its listener until it is closed.
type limitedConn struct {
	net.Conn
	l    *limitListener
	key  string
	once sync.Once
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.key) })
	return err
}

// callCap refuses a call, with ResourceExhausted and before its body is read, when its
// remote address (addressKey) already has max calls in flight, streams included: the
// per-address cap on connections times the streams an HTTP/2 connection may carry
// would otherwise let one address hold thousands of calls (about 15 KiB each), each
// renewed as soon as the body timeout ends it.
type callCap struct {
	next    http.Handler
	max     int
	metrics *Metrics
	errors  *connect.ErrorWriter
	log     *throttle

	mu       sync.Mutex // guards inFlight
	inFlight map[string]int
}

func newCallCap(next http.Handler, max int, m *Metrics, log *slog.Logger) http.Handler {
	if max == 0 {
		return next
	}
	return &callCap{next: next, max: max, metrics: m, errors: connect.NewErrorWriter(),
		log: &throttle{log: log, every: warnEvery}, inFlight: map[string]int{}}
}

func (c *callCap) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	key := addressKey(r.RemoteAddr)
	c.mu.Lock()
	n := c.inFlight[key]
	if n < c.max {
		c.inFlight[key]++
	}
	c.mu.Unlock()
	if n >= c.max {
		c.metrics.callsRefused.Inc()
		c.log.warn("call refused: its address is at server.max_calls_per_address", "remote", key, "cap", c.max)
		_ = c.errors.Write(w, r, connect.NewError(connect.CodeResourceExhausted,
			fmt.Errorf("%d calls from this address are in flight already; retry when one has ended", c.max)))
		return
	}
	defer func() {
		c.mu.Lock()
		if c.inFlight[key]--; c.inFlight[key] == 0 {
			delete(c.inFlight, key)
		}
		c.mu.Unlock()
	}()
	c.next.ServeHTTP(w, r)
}

// addressKey is what the per-address caps count a remote address ("host:port") under:
// an IPv4 address, or the /64 prefix of an IPv6 address (a host commonly holds many
// addresses of its /64, and can pick new ones at will).
func addressKey(addr string) string {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return addr
	}
	ip := ap.Addr().Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.String()
	}
	return ip.String()
}

// throttle logs a warning at most once per interval; the next one it lets through
// says how many it held back meanwhile.
type throttle struct {
	log   *slog.Logger
	every time.Duration

	mu         sync.Mutex // guards the following
	next       time.Time
	suppressed int
}

func (t *throttle) warn(msg string, args ...any) {
	t.mu.Lock()
	now := time.Now()
	if now.Before(t.next) {
		t.suppressed++
		t.mu.Unlock()
		return
	}
	suppressed := t.suppressed
	t.next, t.suppressed = now.Add(t.every), 0
	t.mu.Unlock()
	t.log.Warn(msg, append(args, "suppressed_since_last", suppressed)...)
}
