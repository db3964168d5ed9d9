package bench

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/palyra/palyra/internal/retry"
)

// BenchmarkReconnectStorm restarts palyrad under N attached nodes
// (PALYRA_BENCH_STORM_NODES, default 1000) and times their return. The nodes pair
// first (the public pairing flow), then attach, each on its own connection from its
// own loopback address; each reconnects the way the node agent does (its backoff,
// retry.AttachBackoff, and a TLS session cache of its own, resuming its session when palyrad takes
// the ticket). Once all are attached, palyrad is stopped (SIGTERM: every stream ends with
// Unavailable) and started again on the same address, data directory and database.
//
//	down-s           from the SIGTERM until the new process is ready
//	storm-s          from ready until all N are attached again (palyra_nodes_attached)
//	reattach-p50-s, reattach-p99-s
//	                 per node, from ready until its welcome
//	stop-s           from the SIGTERM until the old process exited
//	failed-attempts  attempts that failed after palyrad was ready, other than those
//	                 refused because nothing listened yet: each was retried, and a
//	                 node that never came back fails the benchmark
//	attempts/node    attempts per node, from the SIGTERM on
//	resumed, full    TLS handshakes after ready that resumed a session, or did not
//	                 (as the nodes saw them)
//	shed             connections palyrad closed after ready before their handshake,
//	                 having waited too long for a slot (palyra_tls_handshakes_total)
//
// The log shows the curve: nodes attached, sampled at most once a second. Run it with -benchtime 1x.
func BenchmarkReconnectStorm(b *testing.B) {
	n, err := nodeSteps(os.Getenv("PALYRA_BENCH_STORM_NODES"), 1000)
	if err != nil || len(n) != 1 {
		b.Fatalf("PALYRA_BENCH_STORM_NODES=%q is not one number of nodes (%v)", os.Getenv("PALYRA_BENCH_STORM_NODES"), err)
	}
	pg := openPostgres(b)
	dbURL, dataDir := pg.newDatabase(b), b.TempDir()
	listen := freeAddress(b)
	d := startDaemonOn(b, dbURL, dataDir, listen)
	devs := enroll(b, d, d.newToken(b, "bench-setup"), n[0])

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := &storm{d: d}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	nodes := make([]*stormNode, len(devs))
	for i := range devs {
		nodes[i] = &stormNode{s: s, dev: &devs[i], src: loopback(5, i), rand: rand.New(rand.NewPCG(uint64(i), 42)),
			sessions: retry.NewSessionCache(1)}
	}
	// The first attaches, 32 at a time, as BenchmarkIdleNodes does.
	if err := forEach(len(nodes), 32, func(i int) error { return nodes[i].attachOnce() }); err != nil {
		b.Fatalf("first attach: %v", err)
	}
	for _, nd := range nodes {
		wg.Go(func() { nd.run(ctx) })
	}
	d.waitAttached(b, len(nodes))

	b.ResetTimer()
	stopped := time.Now()
	d.stop(b)
	starting := time.Now()
	d2 := startDaemonOn(b, dbURL, dataDir, listen)
	ready := time.Now()
	s.setDaemon(d2, ready)
	prof := profileRun(b, d2.pprof) // the storm's first seconds
	curve := s.follow(b, d2, len(nodes), ready, 5*time.Minute)
	all := time.Now()
	b.StopTimer()
	prof.finish(b)
	hc := &http.Client{Transport: d2.transport(nil, nil)}
	m, err := d2.metrics(context.Background(), hc)
	hc.CloseIdleConnections()
	if err != nil {
		b.Fatal(err)
	}

	var reattach histogram
	for _, nd := range nodes {
		at := nd.welcomed.Load()
		if at == 0 {
			b.Fatalf("a node did not attach again")
		}
		reattach.record(time.Duration(max(at-ready.UnixNano(), 0)))
	}
	b.ReportMetric(ready.Sub(stopped).Seconds(), "down-s")
	b.ReportMetric(starting.Sub(stopped).Seconds(), "stop-s")
	b.ReportMetric(all.Sub(ready).Seconds(), "storm-s")
	b.ReportMetric(reattach.quantile(0.50).Seconds(), "reattach-p50-s")
	b.ReportMetric(reattach.quantile(0.99).Seconds(), "reattach-p99-s")
	b.ReportMetric(float64(s.failedAfterReady.Load()), "failed-attempts")
	b.ReportMetric(float64(s.attempts.Load())/float64(len(nodes)), "attempts/node")
	b.ReportMetric(float64(s.resumed.Load()), "resumed")
	b.ReportMetric(float64(s.full.Load()), "full")
	shed := m[`palyra_tls_handshakes_total{result="shed"}`]
	b.ReportMetric(shed, "shed")
	b.Logf("%d nodes: palyrad down %.2f s (stopping %.2f s), all attached again %.2f s after it was ready; %d attempts failed after ready, %d were refused (nothing listening) and %d failed otherwise while it was down; TLS handshakes after ready: %d resumed, %d full, %.0f shed by palyrad; attached nodes sampled after ready: %v",
		len(nodes), ready.Sub(stopped).Seconds(), starting.Sub(stopped).Seconds(), all.Sub(ready).Seconds(),
		s.failedAfterReady.Load(), s.refused.Load(), s.failedWhileDown.Load(), s.resumed.Load(), s.full.Load(), shed, curve)
}

// freeAddress returns a loopback address with a port that was free a moment ago.
func freeAddress(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// storm is what the nodes of BenchmarkReconnectStorm share.
type storm struct {
	mu    sync.Mutex // guards d and ready
	d     *daemon
	ready time.Time

	attempts atomic.Int64 // attach attempts since the restart began
	// refused counts the attempts refused because nothing listened (palyrad was down,
	// whenever the node saw it); the others that failed, before or after ready.
	refused, failedWhileDown, failedAfterReady atomic.Int64
	// resumed and full count the TLS handshakes after ready that resumed a session or
	// did not.
	resumed, full atomic.Int64
}

// countHandshakes has the handshakes of cfg's connections after ready counted.
func (s *storm) countHandshakes(cfg *tls.Config) {
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if _, ready := s.daemon(); !ready.IsZero() {
			if cs.DidResume {
				s.resumed.Add(1)
			} else {
				s.full.Add(1)
			}
		}
		return nil
	}
}

func (s *storm) daemon() (*daemon, time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.d, s.ready
}

func (s *storm) setDaemon(d *daemon, ready time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.d, s.ready = d, ready
}

// follow polls d's attached nodes until there are n, and returns the samples, at most
// one a second: "+<seconds after ready>s:<attached>". A scrape can wait long while
// palyrad is busy with handshakes; the gaps show it.
func (s *storm) follow(b *testing.B, d *daemon, n int, ready time.Time, within time.Duration) []string {
	b.Helper()
	hc := &http.Client{Transport: d.transport(nil, nil)}
	defer hc.CloseIdleConnections()
	var curve []string
	last := -1
	for {
		m, err := d.metrics(context.Background(), hc)
		attached := int(m["palyra_nodes_attached"])
		at := int(time.Since(ready) / time.Second)
		if err == nil && (at > last || attached == n) {
			curve = append(curve, fmt.Sprintf("+%ds:%d", at, attached))
			last = at
		}
		if err == nil && attached == n {
			return curve
		}
		if time.Since(ready) > within {
			b.Fatalf("%d of %d nodes attached %s after palyrad was ready (%v)", attached, n, within, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stormNode is a fake node that stays attached the way the node agent does.
type stormNode struct {
	s    *storm
	dev  *device
	src  net.IP
	rand *rand.Rand // used by the node's own goroutine only
	// sessions are the node's TLS sessions, as the node agent keeps them.
	sessions *retry.SessionCache

	cur      *node
	welcomed atomic.Int64 // Unix nanoseconds of the welcome after the restart; 0 before
}

// attachOnce makes the first attachment.
func (sn *stormNode) attachOnce() error {
	d, _ := sn.s.daemon()
	nd, err := attachWith(d, sn.dev, sn.src, false, sn.configure)
	sn.cur = nd
	return err
}

// configure gives a connection of the node its TLS sessions, and counts its handshake.
func (sn *stormNode) configure(cfg *tls.Config) {
	cfg.ClientSessionCache = sn.sessions
	sn.s.countHandshakes(cfg)
}

// run keeps the node attached until ctx ends: when its stream ends, it waits by the
// agent's backoff (retry.AttachBackoff, as the agent's attach loop uses it) and
// attaches again. It has its own goroutine.
func (sn *stormNode) run(ctx context.Context) {
	b := retry.AttachBackoff(sn.rand.Int64N)
	for {
		select {
		case <-sn.cur.done:
		case <-ctx.Done():
			sn.cur.close()
			return
		}
		sn.cur.close()
		b.Reset() // the session held longer than b.Stable: the backoff starts over
		err := sn.cur.err
		for {
			select {
			case <-time.After(b.After(err)):
			case <-ctx.Done():
				return
			}
			d, _ := sn.s.daemon() // the same address, CA and database before and after
			sn.s.attempts.Add(1)
			var nd *node
			nd, err = attachWith(d, sn.dev, sn.src, false, sn.configure)
			if err == nil {
				sn.cur = nd
				sn.welcomed.Store(time.Now().UnixNano())
				break
			}
			sn.sessions.Settle(err)
			if errors.Is(err, syscall.ECONNREFUSED) {
				sn.s.refused.Add(1)
			} else if _, ready := sn.s.daemon(); ready.IsZero() {
				sn.s.failedWhileDown.Add(1)
			} else {
				sn.s.failedAfterReady.Add(1)
				if sn.s.failedAfterReady.Load() <= 3 {
					fmt.Fprintf(os.Stderr, "bench: node %s: attach after ready failed: %v\n", sn.dev.id, err)
				}
			}
		}
	}
}
