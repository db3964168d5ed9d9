package bench

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	"github.com/palyra/palyra/gen/go/palyra/controlplane/v1/controlplanev1connect"
	"github.com/palyra/palyra/internal/eventually"
)

// Palyrad's default server.max_connections_per_address and server.max_calls_per_address.
const (
	perAddressCap      = 64
	callsPerAddressCap = 256
)

// The kinds of slow connection BenchmarkSlowCallers holds, perAddressCap/4 of each per
// address.
const (
	slowH1Body  = "h1-body"  // HTTP/1.1, a unary call whose body never comes
	slowH2Body  = "h2-body"  // HTTP/2, PALYRA_BENCH_SLOW_STREAMS such calls on the connection (default 15)
	slowH2Call  = "h2-call"  // one of those calls (answered, not a connection)
	slowTLSIdle = "tls-idle" // a TLS handshake, then nothing (half h2, half http/1.1)
	slowTCPIdle = "tcp-idle" // a TCP connection that never starts TLS
)

// BenchmarkSlowCallers measures palyrad with its default limits under a sustained
// attack of connections that never finish anything. PALYRA_BENCH_SLOW_ADDRESSES
// loopback addresses (default 64) each keep the per-address cap of 64 connections
// open, a quarter of each kind above, every one opened again as soon as palyrad closes
// it; by default each address also has the most calls in flight its cap allows (16 ×
// 15 on HTTP/2, 16 on HTTP/1.1; each call made again once answered). Once all are
// open they are held for PALYRA_BENCH_SLOW_HOLD (default 60s), during which one more
// connection per address is tried (palyrad must close it before its handshake) and a
// legitimate caller, from an address of its own with a token of its own, calls
// GetStatus in a loop, as it did before the attack. Then the attackers stop opening
// and wait for palyrad to close what they hold. The attackers run in this process, on
// the same machine: their CPU is taken from palyrad's.
//
//	held                 palyra_listener_connections in the middle of the hold
//	refused              palyra_listener_refused_total (per address, at the end)
//	calls-refused        palyra_listener_calls_refused_total (at the end)
//	held-rss-MiB         palyrad's VmRSS in the middle of the hold (idle-rss-MiB: before)
//	<kind>-closed-s      the longest any of that kind stayed open (median in the log)
//	drained-s            from the end of the hold to the last connection closed
//	p50-ms, p99-ms       the caller's latency during the hold
//	before-p50-ms, ...   the same before the attack
//
// Run it with -benchtime 1x: every call is one whole measurement.
func BenchmarkSlowCallers(b *testing.B) {
	addresses := envCount(b, "PALYRA_BENCH_SLOW_ADDRESSES", 64)
	streams := envCount(b, "PALYRA_BENCH_SLOW_STREAMS", (callsPerAddressCap-perAddressCap/4)/(perAddressCap/4))
	hold := time.Minute
	if v := os.Getenv("PALYRA_BENCH_SLOW_HOLD"); v != "" {
		var err error
		if hold, err = time.ParseDuration(v); err != nil {
			b.Fatalf("PALYRA_BENCH_SLOW_HOLD: %v", err)
		}
	}
	pg := openPostgres(b)
	d := startDaemon(b, pg.newDatabase(b), b.TempDir())
	time.Sleep(settle)
	idle := d.memory(b)

	// The caller: its own address, token and connection.
	callerHC := &http.Client{Transport: &bearer{token: d.newToken(b, "bench-caller"), next: d.transport(loopback(9, 0), nil)}}
	caller := controlplanev1connect.NewStatusServiceClient(callerHC, d.baseURL)
	calls := func(h *histogram, until <-chan struct{}, n int) (failed int) {
		for i := 0; n == 0 || i < n; i++ {
			select {
			case <-until:
				return failed
			default:
			}
			began := time.Now()
			if _, err := caller.GetStatus(context.Background(), connect.NewRequest(&controlplanev1.GetStatusRequest{})); err != nil {
				failed++
				continue
			}
			h.record(time.Since(began))
		}
		return failed
	}
	var before histogram
	if failed := calls(&before, nil, 500); failed > 0 {
		b.Fatalf("%d of the caller's calls failed before the attack", failed)
	}

	b.ResetTimer()
	s := &slowSet{d: d, streams: streams, stop: make(chan struct{}), closed: map[string][]time.Duration{}}
	for i := range addresses {
		src := loopback(8, i)
		for j := range perAddressCap / 4 {
			s.slot(slowH2Body, src, s.h2Body)
			s.slot(slowH1Body, src, s.h1Body)
			alpn := []string{"h2", "http/1.1"}[j%2]
			s.slot(slowTLSIdle, src, func(src net.IP) (<-chan struct{}, error) { return s.tlsIdle(src, alpn) })
			s.slot(slowTCPIdle, src, s.tcpIdle)
		}
	}
	target := int64(addresses * perAddressCap)
	began := time.Now()
	eventually.Within(10*time.Minute).True(b, fmt.Sprintf("%d slow connections open", target), func() bool { return s.held.Load() == target })
	b.Logf("%d slow connections open after %v", target, time.Since(began).Round(time.Millisecond))

	holdEnd := make(chan struct{})
	time.AfterFunc(hold, func() { close(holdEnd) })
	var during histogram
	callerDone := make(chan int)
	go func() { callerDone <- calls(&during, holdEnd, 0) }()
	var overCap atomic.Int64
	if err := forEach(addresses, 8, func(i int) error {
		c, err := tls.DialWithDialer(&net.Dialer{LocalAddr: &net.TCPAddr{IP: loopback(8, i)}, Timeout: time.Minute}, "tcp", d.addr(), d.tlsConfig(nil))
		if err == nil {
			c.Close()
			overCap.Add(1)
		}
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	time.Sleep(hold / 2)
	loaded := d.memory(b)
	hc := &http.Client{Transport: d.transport(nil, nil)}
	defer hc.CloseIdleConnections()
	mid, err := d.metrics(context.Background(), hc)
	if err != nil {
		b.Fatal(err)
	}
	heldMid := s.held.Load()
	duringFailed := <-callerDone
	close(s.stop)
	drainBegan := time.Now()
	s.wg.Wait()
	drained := time.Since(drainBegan)
	b.StopTimer()
	after, err := d.metrics(context.Background(), hc)
	if err != nil {
		b.Fatal(err)
	}

	b.ReportMetric(mid["palyra_listener_connections"], "held")
	b.ReportMetric(after[`palyra_listener_refused_total{reason="per_address"}`], "refused")
	b.ReportMetric(after["palyra_listener_calls_refused_total"], "calls-refused")
	b.ReportMetric(idle.rssKiB/1024, "idle-rss-MiB")
	b.ReportMetric(loaded.rssKiB/1024, "held-rss-MiB")
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, kind := range []string{slowH1Body, slowH2Body, slowH2Call, slowTLSIdle, slowTCPIdle} {
		ds := s.closed[kind]
		slices.Sort(ds)
		b.ReportMetric(ds[len(ds)-1].Seconds(), kind+"-closed-s")
		b.Logf("%-8s %6d closed after %v (median), %v (longest)", kind, len(ds), ds[len(ds)/2].Round(time.Millisecond), ds[len(ds)-1].Round(time.Millisecond))
	}
	b.ReportMetric(drained.Seconds(), "drained-s")
	b.ReportMetric(before.quantile(.5).Seconds()*1000, "before-p50-ms")
	b.ReportMetric(before.quantile(.99).Seconds()*1000, "before-p99-ms")
	b.ReportMetric(during.quantile(.5).Seconds()*1000, "p50-ms")
	b.ReportMetric(during.quantile(.99).Seconds()*1000, "p99-ms")
	b.Logf("held for %v: %d slow connections from %d addresses (%d by the attackers' count in the middle; %d calls on HTTP/2 each), "+
		"%d of %d connections over the cap completed a handshake (an address below its cap for a moment), %d reset at once; "+
		"palyrad: RSS %.1f → %.1f MiB, %.0f → %.0f goroutines; the caller: %d calls during the hold, %d failed, p99.9 %v, max %v",
		hold, int(mid["palyra_listener_connections"]), addresses, heldMid, streams, overCap.Load(), addresses, s.resets.Load(),
		idle.rssKiB/1024, loaded.rssKiB/1024, idle.goroutines, loaded.goroutines, during.n, duringFailed, during.quantile(.999).Round(time.Microsecond), during.max.Round(time.Microsecond))
}

// envCount reads a positive count from the environment; empty means def.
func envCount(b *testing.B, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		b.Fatalf("%s=%q is not a positive count", name, v)
	}
	return n
}

// addr is palyrad's host:port.
func (d *daemon) addr() string { return d.baseURL[len("https://"):] }

// slowSet is the attackers of a run: their slots, how many connections they hold, and
// how long each kind stayed open.
type slowSet struct {
	d       *daemon
	streams int
	stop    chan struct{} // closed: open nothing more
	held    atomic.Int64
	resets  atomic.Int64 // connections closed within a second: refused
	wg      sync.WaitGroup

	mu     sync.Mutex // guards closed
	closed map[string][]time.Duration
}

// slot keeps one connection of kind from src open, opening it again whenever palyrad
// closes it, until stop. It has a goroutine of its own.
func (s *slowSet) slot(kind string, src net.IP, open func(src net.IP) (<-chan struct{}, error)) {
	s.wg.Go(func() {
		for {
			select {
			case <-s.stop:
				return
			default:
			}
			ended, err := open(src)
			if err != nil {
				// Refused: palyrad has not yet seen the close of this slot's last one.
				time.Sleep(100 * time.Millisecond)
				continue
			}
			opened := time.Now()
			s.held.Add(1)
			<-ended
			s.held.Add(-1)
			if took := time.Since(opened); took >= time.Second {
				s.record(kind, took)
				continue
			}
			// Reset at once (a TCP connection palyrad refused after it was made).
			s.resets.Add(1)
			time.Sleep(100 * time.Millisecond)
		}
	})
}

func (s *slowSet) record(kind string, d time.Duration) {
	s.mu.Lock()
	s.closed[kind] = append(s.closed[kind], d)
	s.mu.Unlock()
}

// readsUntilClosed returns a channel closed when palyrad closes c.
func readsUntilClosed(c net.Conn) <-chan struct{} {
	ended := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, c)
		c.Close()
		close(ended)
	}()
	return ended
}

func (s *slowSet) tlsDial(src net.IP, alpn string) (*tls.Conn, error) {
	cfg := s.d.tlsConfig(nil)
	cfg.NextProtos = []string{alpn}
	return tls.DialWithDialer(&net.Dialer{LocalAddr: &net.TCPAddr{IP: src}, Timeout: time.Minute}, "tcp", s.d.addr(), cfg)
}

func (s *slowSet) tcpIdle(src net.IP) (<-chan struct{}, error) {
	c, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: src}, Timeout: time.Minute}).Dial("tcp", s.d.addr())
	if err != nil {
		return nil, err
	}
	return readsUntilClosed(c), nil
}

func (s *slowSet) tlsIdle(src net.IP, alpn string) (<-chan struct{}, error) {
	c, err := s.tlsDial(src, alpn)
	if err != nil {
		return nil, err
	}
	return readsUntilClosed(c), nil
}

func (s *slowSet) h1Body(src net.IP) (<-chan struct{}, error) {
	c, err := s.tlsDial(src, "http/1.1")
	if err != nil {
		return nil, err
	}
	if _, err := fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 64\r\n\r\n",
		controlplanev1connect.StatusServiceGetStatusProcedure); err != nil {
		c.Close()
		return nil, err
	}
	return readsUntilClosed(c), nil
}

// h2Body opens an HTTP/2 connection of its own and keeps s.streams calls on it whose
// body never comes, each made again once palyrad answers it, until the connection ends.
func (s *slowSet) h2Body(src net.IP) (<-chan struct{}, error) {
	ended := make(chan struct{})
	var once sync.Once
	var dialed atomic.Bool
	tr := s.d.transport(src, nil)
	dial := tr.DialContext
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if dialed.Swap(true) {
			return nil, errors.New("one connection per slot")
		}
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &endedConn{Conn: c, end: func() { once.Do(func() { close(ended) }) }}, nil
	}
	hc := &http.Client{Transport: tr}
	res, err := hc.Get(s.d.baseURL + "/nothing") // the connection, before the calls
	if err != nil {
		tr.CloseIdleConnections()
		return nil, err
	}
	res.Body.Close()
	for range s.streams {
		go func() {
			for {
				select {
				case <-ended:
					return
				case <-s.stop:
					return
				default:
				}
				never, _ := io.Pipe()
				req, _ := http.NewRequest(http.MethodPost, s.d.baseURL+controlplanev1connect.StatusServiceGetStatusProcedure, never)
				req.Header.Set("Content-Type", "application/json")
				opened := time.Now()
				res, err := hc.Do(req)
				if err != nil {
					return // the connection ended; a new one would count against the cap
				}
				_, _ = io.Copy(io.Discard, res.Body)
				res.Body.Close()
				s.record(slowH2Call, time.Since(opened))
			}
		}()
	}
	return ended, nil
}

// endedConn calls end when its reader sees the peer close it, or when it is closed
// (the HTTP/2 transport closes it after palyrad's GOAWAY or close_notify).
type endedConn struct {
	net.Conn
	end func()
}

func (c *endedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil {
		c.end()
	}
	return n, err
}

func (c *endedConn) Close() error {
	c.end()
	return c.Conn.Close()
}
