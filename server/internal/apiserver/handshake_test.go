package apiserver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/palyra/palyra/internal/eventually"
	"github.com/palyra/palyra/internal/testpki"
	"github.com/palyra/palyra/server/internal/identity"
	"github.com/palyra/palyra/server/internal/masterkey"
	"github.com/palyra/palyra/server/internal/testclock"
)

// gauge returns the value of the gauge or counter name of m (of a histogram: its count),
// of the series whose result label is result ("": the one series).
func gauge(t *testing.T, m *Metrics, name, result string) float64 {
	t.Helper()
	families, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, s := range f.GetMetric() {
			match := result == ""
			for _, l := range s.GetLabel() {
				match = match || l.GetName() == "result" && l.GetValue() == result
			}
			if match {
				return s.GetGauge().GetValue() + s.GetCounter().GetValue() + float64(s.GetHistogram().GetSampleCount())
			}
		}
	}
	t.Fatalf("no metric %s{result=%q}", name, result)
	return 0
}

// ticketListener is a listener of the resumption tests: it answers whether the
// connection resumed a session, and records the refusals of client certificates.
type ticketListener struct {
	srv     *Server
	metrics *Metrics
	revoked func() bool

	mu       sync.Mutex // guards refusals
	refusals []refusal
}

type refusal struct {
	resumed bool
	err     error
}

func (l *ticketListener) refused() []refusal {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]refusal(nil), l.refusals...)
}

// startTicketListener serves with the session-ticket keys of the master key master, by
// clock; a client certificate is refused as revoked while revoked() is true.
func startTicketListener(t *testing.T, ca *testpki.CA, master string, clock *testclock.Clock, revoked func() bool, configure func(*ServerOptions)) *ticketListener {
	t.Helper()
	keys, _, err := identity.LoadKeyring(t.TempDir(), master)
	if err != nil {
		t.Fatal(err)
	}
	serverCert := issue(t, ca, 2, ca.Cert.NotBefore, ca.Cert.NotAfter, x509.ExtKeyUsageServerAuth)
	l := &ticketListener{metrics: NewMetrics("test", "test"), revoked: revoked}
	opts := ServerOptions{
		Address:        "127.0.0.1:0",
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &serverCert, nil },
		ClientCAs:      ca.Pool,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if l.revoked() {
				err := errors.New("the certificate is revoked")
				l.mu.Lock()
				l.refusals = append(l.refusals, refusal{resumed: cs.DidResume, err: err})
				l.mu.Unlock()
				return err
			}
			return nil
		},
		HandshakeRefused: func(_ string, _ *x509.Certificate, err error) {
			var invalid x509.CertificateInvalidError
			if errors.As(err, &invalid) {
				l.mu.Lock()
				l.refusals = append(l.refusals, refusal{err: err})
				l.mu.Unlock()
			}
		},
		SessionTicketKeys: masterkey.NewTicketKeys(keys).At,
		MaxConnections:    16,
		Metrics:           l.metrics,
		Now:               clock.Now,
	}
	if configure != nil {
		configure(&opts)
	}
	l.srv, err = Listen(opts)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() {
		served <- l.srv.Serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, strconv.FormatBool(r.TLS.DidResume))
		}))
	}()
	t.Cleanup(func() {
		if err := l.srv.Shutdown(context.Background()); err != nil {
			t.Error(err)
		}
		if err := <-served; err != nil {
			t.Error(err)
		}
	})
	return l
}

// getResuming makes one request on a connection of its own to l, presenting cert and
// resuming a session of sessions when it can; it returns whether the client and the
// server saw the connection resume.
func getResuming(l *ticketListener, sessions tls.ClientSessionCache, cert tls.Certificate, roots *x509.CertPool) (clientResumed, serverResumed bool, err error) {
	tr := &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: roots, ServerName: "localhost", Certificates: []tls.Certificate{cert}, ClientSessionCache: sessions,
	}}
	defer tr.CloseIdleConnections()
	res, err := (&http.Client{Transport: tr}).Get("https://" + l.srv.Addr().String() + "/")
	if err != nil {
		return false, false, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return false, false, err
	}
	return res.TLS.DidResume, string(b) == "true", nil
}

// TestSessionResumptionAcrossReplicasRestartsAndPeriods checks that a client resumes
// its TLS session on any listener whose ticket keys come from the same master key (the
// replicas, or a restart: each listener here derives them anew), not on one with
// another master key, and not with a ticket older than the keys kept.
func TestSessionResumptionAcrossReplicasRestartsAndPeriods(t *testing.T) {
	t.Parallel()
	epoch := time.Date(2040, 3, 1, 0, 0, 0, 0, time.UTC)
	clock := testclock.New(epoch)
	ca := newTestCA(t)
	client := issue(t, ca, 3, epoch, epoch.Add(30*24*time.Hour), x509.ExtKeyUsageClientAuth)
	master := identity.GenerateMasterKey()
	never := func() bool { return false }
	a := startTicketListener(t, ca, master, clock, never, nil)
	b := startTicketListener(t, ca, master, clock, never, nil)
	other := startTicketListener(t, ca, identity.GenerateMasterKey(), clock, never, nil)
	// A master key rotation: the new primary first, the old key still known.
	rotated := startTicketListener(t, ca, identity.GenerateMasterKey()+","+master, clock, never, nil)
	sessions := tls.NewLRUClientSessionCache(1)

	for _, step := range []struct {
		name    string
		l       *ticketListener
		advance time.Duration
		resumed bool
	}{
		{"the first connection", a, 0, false},
		{"the same listener", a, 0, true},
		{"another replica", b, 0, true},
		{"a listener with another master key", other, 0, false},
		{"back on the replicas, with the ticket of the other key", a, 0, false},
		{"a replica whose old master key issued the ticket", rotated, 0, true},
		{"a replica without the new primary that issued the last ticket", a, 0, false},
		{"three periods later", b, 3 * masterkey.TicketKeyPeriod, true},
		{"five periods later", a, 5 * masterkey.TicketKeyPeriod, false},
		{"after that full handshake", b, 0, true},
	} {
		clock.Advance(step.advance)
		client, server, err := getResuming(step.l, sessions, client, ca.Pool)
		if err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		if client != step.resumed || server != step.resumed {
			t.Errorf("%s: the client saw DidResume %v, the server %v; want %v", step.name, client, server, step.resumed)
		}
	}
	full := gauge(t, a.metrics, "palyra_tls_handshakes_total", handshakeFull)
	resumed := gauge(t, a.metrics, "palyra_tls_handshakes_total", handshakeResumed)
	if full != 4 || resumed != 1 {
		t.Errorf("replica a counted %v full and %v resumed handshakes, want 4 and 1", full, resumed)
	}
}

// TestResumptionChecksTheClientCertificateAgain checks that a resumed session's client
// certificate, carried in the ticket, is checked as at a full handshake: once it is
// revoked, or once it expired, the connection is refused.
func TestResumptionChecksTheClientCertificateAgain(t *testing.T) {
	t.Parallel()
	epoch := time.Date(2040, 3, 1, 0, 0, 0, 0, time.UTC)
	ca := newTestCA(t)
	client := issue(t, ca, 3, epoch, epoch.Add(time.Hour), x509.ExtKeyUsageClientAuth)
	master := identity.GenerateMasterKey()

	t.Run("revoked", func(t *testing.T) {
		t.Parallel()
		clock := testclock.New(epoch)
		var mu sync.Mutex
		revoked := false
		l := startTicketListener(t, ca, master, clock, func() bool { mu.Lock(); defer mu.Unlock(); return revoked }, nil)
		sessions := tls.NewLRUClientSessionCache(1)
		for range 2 {
			if _, _, err := getResuming(l, sessions, client, ca.Pool); err != nil {
				t.Fatal(err)
			}
		}
		mu.Lock()
		revoked = true
		mu.Unlock()
		_, _, err := getResuming(l, sessions, client, ca.Pool)
		if err == nil || !strings.Contains(err.Error(), "bad certificate") {
			t.Fatalf("a resumption with a revoked certificate: %v, want it refused with bad certificate", err)
		}
		if got := l.refused(); len(got) != 1 || !got[0].resumed {
			t.Errorf("refusals %+v, want one, of the resumption", got)
		}
	})
	t.Run("expired", func(t *testing.T) {
		t.Parallel()
		clock := testclock.New(epoch)
		l := startTicketListener(t, ca, master, clock, func() bool { return false }, nil)
		sessions := tls.NewLRUClientSessionCache(1)
		for range 2 {
			if _, _, err := getResuming(l, sessions, client, ca.Pool); err != nil {
				t.Fatal(err)
			}
		}
		clock.Advance(time.Hour + time.Second) // the certificate expired; the ticket key is current
		_, _, err := getResuming(l, sessions, client, ca.Pool)
		if err == nil || !strings.Contains(err.Error(), "bad certificate") {
			t.Fatalf("a resumption with an expired certificate: %v, want it refused with bad certificate", err)
		}
		var invalid x509.CertificateInvalidError
		if got := l.refused(); len(got) != 1 || !errors.As(got[0].err, &invalid) || invalid.Reason != x509.Expired {
			t.Errorf("refusals %+v, want one, for an expired certificate", got)
		}
	})
}

// startFullListener starts a listener with one handshake slot, a handshake waiting for
// it at most queueTimeout, and that slot held by a first handshake whose server side
// blocks (in GetCertificate) until release. It returns a client certificate, the CA,
// and the first handshake's request's result once it ends.
func startFullListener(t *testing.T, queueTimeout time.Duration) (l *ticketListener, release func(), client tls.Certificate, ca *testpki.CA, holder <-chan error) {
	t.Helper()
	epoch := time.Date(2040, 3, 1, 0, 0, 0, 0, time.UTC)
	ca = newTestCA(t)
	client = issue(t, ca, 3, epoch, epoch.Add(time.Hour), x509.ExtKeyUsageClientAuth)
	hold := make(chan struct{})
	var first atomic.Bool
	l = startTicketListener(t, ca, identity.GenerateMasterKey(), testclock.New(epoch), func() bool { return false },
		func(o *ServerOptions) {
			o.MaxHandshakes, o.HandshakeQueueTimeout = 1, queueTimeout
			get := o.GetCertificate
			o.GetCertificate = func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
				if first.CompareAndSwap(false, true) {
					<-hold
				}
				return get(h)
			}
		})
	var once sync.Once
	release = func() { once.Do(func() { close(hold) }) }
	t.Cleanup(release) // before the listener's shutdown
	held := make(chan error, 1)
	go func() {
		_, _, err := getResuming(l, tls.NewLRUClientSessionCache(1), client, ca.Pool)
		held <- err
	}()
	eventually.True(t, "the first handshake holds the slot", func() bool {
		return gauge(t, l.metrics, "palyra_tls_handshakes_in_progress", "") == 1
	})
	return l, release, client, ca, held
}

// TestHandshakesBeyondTheCapWaitForASlot checks that a handshake that finds every slot
// taken waits for one, and is then served.
func TestHandshakesBeyondTheCapWaitForASlot(t *testing.T) {
	t.Parallel()
	l, release, client, ca, holder := startFullListener(t, time.Hour)
	got := make(chan error, 1)
	go func() {
		_, _, err := getResuming(l, tls.NewLRUClientSessionCache(1), client, ca.Pool)
		got <- err
	}()
	eventually.True(t, "the request waits for a slot", func() bool { return gauge(t, l.metrics, "palyra_tls_handshakes_waiting", "") == 1 })
	select {
	case err := <-got:
		t.Fatalf("the request ended while every slot was taken: %v", err)
	default:
	}
	release()
	if err := <-holder; err != nil {
		t.Fatalf("the request that held the slot: %v", err)
	}
	if err := <-got; err != nil {
		t.Fatalf("the request that waited for a slot: %v", err)
	}
	if n := gauge(t, l.metrics, "palyra_tls_handshakes_waiting", ""); n != 0 {
		t.Errorf("%v connections still waiting", n)
	}
	if n := gauge(t, l.metrics, "palyra_tls_handshakes_total", handshakeFull); n != 2 {
		t.Errorf("%v full handshakes counted, want 2", n)
	}
}

// TestHandshakesWaitingTooLongAreShed checks that a handshake that waited for a slot
// longer than HandshakeQueueTimeout is closed, and counted.
func TestHandshakesWaitingTooLongAreShed(t *testing.T) {
	t.Parallel()
	l, _, client, ca, _ := startFullListener(t, time.Millisecond)
	if _, _, err := getResuming(l, tls.NewLRUClientSessionCache(1), client, ca.Pool); err == nil {
		t.Fatal("a connection that found no slot within the queue timeout was served")
	}
	if n := gauge(t, l.metrics, "palyra_tls_handshakes_total", handshakeShed); n != 1 {
		t.Errorf("%v connections shed, want 1", n)
	}
}

// TestAStalledClientHoldsNoSlot checks that a client that connects and sends nothing,
// or stalls after the server's flight, does not keep others from their handshakes.
func TestAStalledClientHoldsNoSlot(t *testing.T) {
	t.Parallel()
	epoch := time.Date(2040, 3, 1, 0, 0, 0, 0, time.UTC)
	ca := newTestCA(t)
	client := issue(t, ca, 3, epoch, epoch.Add(time.Hour), x509.ExtKeyUsageClientAuth)
	l := startTicketListener(t, ca, identity.GenerateMasterKey(), testclock.New(epoch), func() bool { return false },
		func(o *ServerOptions) { o.MaxHandshakes, o.HandshakeQueueTimeout = 1, time.Hour })
	silent, err := net.Dial("tcp", l.srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	// A client that sends its ClientHello, then never answers the server's flight.
	stalled, err := net.Dial("tcp", l.srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	go func() {
		tc := tls.Client(&writeOnly{stalled}, &tls.Config{RootCAs: ca.Pool, ServerName: "localhost"})
		_ = tc.Handshake()
	}()
	eventually.True(t, "the stalled handshake's server flight", func() bool {
		return gauge(t, l.metrics, "palyra_tls_handshake_queue_seconds", "") >= 1
	})
	if _, _, err := getResuming(l, tls.NewLRUClientSessionCache(1), client, ca.Pool); err != nil {
		t.Fatalf("a request beside stalled clients: %v", err)
	}
}

// writeOnly is a connection whose reads block until it is closed: a TLS client on it
// sends its ClientHello and then waits forever.
type writeOnly struct{ net.Conn }

func (c *writeOnly) Read([]byte) (int, error) {
	b := make([]byte, 1)
	for {
		if _, err := c.Conn.Read(b); err != nil {
			return 0, err
		}
	}
}
