package apiserver

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/palyra/palyra/internal/retry"
)

// handshakesPerCPU sizes the default cap on handshakes computing at once: a slot is
// held only while the server computes (handshakeConn), so about one per CPU, with some
// slack for the scheduler.
const handshakesPerCPU = 2

// The results of a handshake, as the result label of palyra_tls_handshakes_total.
const (
	handshakeFull    = "full"
	handshakeResumed = "resumed"
	handshakeFailed  = "failed"
	handshakeShed    = "shed"
)

// errShed fails the handshake of a connection that found no slot in time.
var errShed = errors.New("apiserver: no handshake slot within the queue timeout")

// handshakeListener completes the TLS handshakes of the connections that ln accepts
// before http.Server sees them, at most len(slots) of them computing at once. A
// handshake takes a slot once its ClientHello is read, and gives it back as soon as
// the server has sent its flight and waits for the client's (handshakeConn): the slots
// bound the key exchanges and signatures in progress, and a client that stalls holds
// none. A handshake that finds every slot taken waits, first come first served, for at
// most queueTimeout; it is then closed with a reset, and its client tries again. Under
// a storm of connections (every node re-attaching after a restart) the handshakes
// thus compute a few at a time, each finishing well within its timeout, instead of all
// sharing the CPU and timing out together. The wait does not count against the
// handshake's own timeout, which starts over once it has a slot.
type handshakeListener struct {
	ln               net.Listener
	config           *tls.Config
	slots            chan struct{}
	queueTimeout     time.Duration
	handshakeTimeout time.Duration // 0: none
	metrics          *Metrics
	log              *slog.Logger
	shedLog          *throttle

	start  sync.Once
	ready  chan *tls.Conn // handshaken connections, for Accept
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{} // closed when the accept loop ended, err then set
	err    error
}

func newHandshakeListener(ln net.Listener, config *tls.Config, slots int, queueTimeout, handshakeTimeout time.Duration,
	m *Metrics, log *slog.Logger) *handshakeListener {
	if slots <= 0 {
		slots = handshakesPerCPU * runtime.GOMAXPROCS(0)
	}
	if queueTimeout <= 0 {
		// Half the handshake's timeout, so that a client with the same timeout (the
		// node agent's is 10 s) still has time to finish after its wait.
		queueTimeout = max(handshakeTimeout/2, time.Second)
		if handshakeTimeout <= 0 {
			queueTimeout = 5 * time.Second
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &handshakeListener{
		ln: ln, slots: make(chan struct{}, slots),
		queueTimeout: queueTimeout, handshakeTimeout: handshakeTimeout, metrics: m, log: log,
		shedLog: &throttle{log: log, every: warnEvery},
		ready:   make(chan *tls.Conn), ctx: ctx, cancel: cancel, done: make(chan struct{}),
	}
	// The ClientHello is read: take a slot before the server computes anything.
	l.config = config.Clone()
	next := config.GetConfigForClient
	l.config.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		if hc, ok := hello.Conn.(*handshakeConn); ok {
			if err := hc.admit(); err != nil {
				return nil, err
			}
		}
		if next == nil {
			return nil, nil
		}
		return next(hello)
	}
	return l
}

// Accept returns the next connection whose handshake succeeded. The first call starts
// accepting.
func (l *handshakeListener) Accept() (net.Conn, error) {
	l.start.Do(func() { go l.acceptLoop() })
	select {
	case c := <-l.ready:
		return c, nil
	case <-l.done:
		return nil, l.err
	}
}

// Close stops accepting and closes the connections that are waiting or handshaking.
func (l *handshakeListener) Close() error {
	l.cancel()
	return l.ln.Close()
}

// Addr is the bound address.
func (l *handshakeListener) Addr() net.Addr { return l.ln.Addr() }

// acceptLoop accepts connections and handshakes each in a goroutine of its own until
// the listener is closed. A failed accept (too many open files: limitListener counted
// it, and warned, rate limited) is logged at debug level and retried after a backoff,
// as http.Server does.
func (l *handshakeListener) acceptLoop() {
	backoff := retry.Backoff{Initial: 5 * time.Millisecond, Max: time.Second}
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || l.ctx.Err() != nil {
				l.err = err
				close(l.done)
				return
			}
			wait := backoff.Next()
			l.log.Debug("accepting a connection failed; retrying", "err", err, "in", wait)
			if retry.Sleep(l.ctx, wait) != nil {
				l.err = net.ErrClosed
				close(l.done)
				return
			}
			continue
		}
		backoff.Reset()
		go l.handshake(c)
	}
}

// handshake handshakes c and hands it to Accept; it closes c when the handshake fails
// or the listener closes.
func (l *handshakeListener) handshake(c net.Conn) {
	hc := &handshakeConn{Conn: c, l: l}
	tc := tls.Server(hc, l.config)
	if l.handshakeTimeout > 0 {
		_ = c.SetDeadline(time.Now().Add(l.handshakeTimeout)) // for the ClientHello
	}
	err := tc.HandshakeContext(l.ctx)
	hc.release()
	if err != nil {
		if !hc.shed {
			l.metrics.handshakes.WithLabelValues(handshakeFailed).Inc()
			l.failed(c, err)
		}
		return
	}
	_ = c.SetDeadline(time.Time{})
	result := handshakeFull
	if tc.ConnectionState().DidResume {
		result = handshakeResumed
	}
	l.metrics.handshakes.WithLabelValues(result).Inc()
	select {
	case l.ready <- tc:
	case <-l.ctx.Done():
		_ = tc.Close()
	}
}

// acquire takes a slot, waiting at most queueTimeout; false: it took none.
func (l *handshakeListener) acquire() bool {
	select {
	case l.slots <- struct{}{}:
		return true
	default:
	}
	l.metrics.handshakesWaiting.Inc()
	defer l.metrics.handshakesWaiting.Dec()
	t := time.NewTimer(l.queueTimeout)
	defer t.Stop()
	select {
	case l.slots <- struct{}{}:
		return true
	case <-t.C:
		return false
	case <-l.ctx.Done():
		return false
	}
}

// handshakeConn is a connection during its handshake, which holds a slot of its
// listener from admit (its ClientHello is read) until the server, having written its
// flight, reads again (it waits for the client), or the handshake ends. The handshake
// runs on one goroutine; after it, HTTP/2 reads and writes concurrently, hence the
// atomics.
type handshakeConn struct {
	net.Conn
	l     *handshakeListener
	held  atomic.Bool
	wrote atomic.Bool // written while held
	shed  bool        // admit found no slot; set and read by the handshake's goroutine
}

// admit takes a slot, or closes the connection with a reset when it waited too long.
func (c *handshakeConn) admit() error {
	queued := time.Now()
	if !c.l.acquire() {
		c.shed = true
		c.l.shed(c.Conn, queued)
		return errShed
	}
	c.held.Store(true)
	c.l.metrics.handshakeWait.Observe(time.Since(queued).Seconds())
	c.l.metrics.handshaking.Inc()
	if c.l.handshakeTimeout > 0 {
		_ = c.Conn.SetDeadline(time.Now().Add(c.l.handshakeTimeout))
	}
	return nil
}

// release gives the slot back, once.
func (c *handshakeConn) release() {
	if c.held.CompareAndSwap(true, false) {
		c.l.metrics.handshaking.Dec()
		<-c.l.slots
	}
}

func (c *handshakeConn) Write(b []byte) (int, error) {
	if c.held.Load() {
		c.wrote.Store(true)
	}
	return c.Conn.Write(b)
}

func (c *handshakeConn) Read(b []byte) (int, error) {
	if c.wrote.Load() {
		c.release()
	}
	return c.Conn.Read(b)
}

// shed closes c, which found no slot: with a reset, as limitListener closes those over
// its caps, so that it leaves no TIME_WAIT.
func (l *handshakeListener) shed(c net.Conn, queued time.Time) {
	raw := c
	if lc, ok := c.(*limitedConn); ok {
		raw = lc.Conn
	}
	if tc, ok := raw.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
	if l.ctx.Err() != nil {
		return
	}
	l.metrics.handshakes.WithLabelValues(handshakeShed).Inc()
	l.shedLog.warn("connection closed during its TLS handshake: palyrad is at its cap of handshakes computing",
		"remote", c.RemoteAddr().String(), "waited", time.Since(queued).Round(time.Millisecond), "cap", cap(l.slots))
}

// failed closes c after its failed handshake, logged at debug level as http.Server
// logs them; a client that spoke plain HTTP gets the answer http.Server gives it.
func (l *handshakeListener) failed(c net.Conn, err error) {
	reason := err.Error()
	var re tls.RecordHeaderError
	if errors.As(err, &re) && re.Conn != nil && looksLikeHTTP(re.RecordHeader) {
		_ = c.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = io.WriteString(re.Conn, "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
		reason = "client sent an HTTP request to an HTTPS server"
	}
	_ = c.Close()
	l.log.Debug("TLS handshake failed", "remote", c.RemoteAddr().String(), "err", reason)
}

// looksLikeHTTP reports whether a TLS record header is the start of an HTTP request.
func looksLikeHTTP(hdr [5]byte) bool {
	switch string(hdr[:]) {
	case "GET /", "HEAD ", "POST ", "PUT /", "OPTIO":
		return true
	}
	return false
}
