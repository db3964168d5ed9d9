package node

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/palyra/palyra/cli/internal/client"
	"github.com/palyra/palyra/cli/internal/node/capability"
	nodev1 "github.com/palyra/palyra/gen/go/palyra/node/v1"
	"github.com/palyra/palyra/gen/go/palyra/node/v1/nodev1connect"
	"github.com/palyra/palyra/internal/eventually"
	"github.com/palyra/palyra/internal/retry"
)

// testDevice is the device id of the bench's node.
const testDevice = "01JD5ZJ8Q0W1X2Y3Z4A5B6C7V1"

// wait is how long a test waits for something that should happen at once.
const wait = eventually.Deadline

// testTuning are short timings for tests.
var testTuning = tuning{
	attach:          retry.Backoff{Initial: 10 * time.Millisecond, Max: 50 * time.Millisecond, Refused: 10 * time.Millisecond, Stable: 5 * time.Second},
	welcomeTimeout:  2 * time.Second,
	renewBackoffMax: 50 * time.Millisecond,
	renewCheck:      time.Hour,
	ackWait:         500 * time.Millisecond,
	killGrace:       2 * time.Second,
	closeWait:       time.Second,
	coalesce:        20 * time.Millisecond,
	chunk:           32 << 10,
	callTimeout:     5 * time.Second,
}

// peerKey is the context key of the client certificate of a call.
type peerKey struct{}

// resumedKey is the context key of whether a call's connection resumed a TLS session.
type resumedKey struct{}

// fakeDaemon plays palyrad's side of NodeService.Attach and RenewCertificate over mutual
// TLS. Each Attach becomes a fakeSession that the test drives.
type fakeDaemon struct {
	nodev1connect.UnimplementedNodeServiceHandler
	ca    *x509.Certificate
	caKey *ecdsa.PrivateKey
	// sessions receives each Attach once its hello is read and its welcome sent.
	sessions chan *fakeSession

	mu           sync.Mutex // guards the following
	interval     time.Duration
	version      uint32 // the protocol version the welcome names
	refuse       int    // how many Attach calls to refuse with Unavailable
	attaches     int
	renewFail    int                 // how many RenewCertificate calls to refuse with Unavailable
	lifetime     time.Duration       // of the certificates RenewCertificate issues; 0 means a day
	renewals     []*x509.Certificate // the client certificates of RenewCertificate calls
	renewKeys    []any               // the public keys of their CSRs
	renewedCerts []*x509.Certificate // the certificates it issued
}

var _ nodev1connect.NodeServiceHandler = (*fakeDaemon)(nil)

// fakeSession is one Attach stream as the daemon sees it.
type fakeSession struct {
	hello *nodev1.Hello
	peer  *x509.Certificate
	// resumed says whether the stream's connection resumed a TLS session.
	resumed bool
	// in receives every message after the hello; it is closed when the node ends its
	// side of the stream (or the stream breaks).
	in  chan *nodev1.AttachRequest
	out chan *nodev1.AttachResponse
	// end ends the stream with the error sent (nil: normally).
	end  chan error
	done chan struct{} // closed when the handler returned
}

func (f *fakeDaemon) Attach(ctx context.Context, stream *connect.BidiStream[nodev1.AttachRequest, nodev1.AttachResponse]) error {
	f.mu.Lock()
	f.attaches++
	refuse := f.refuse > 0
	if refuse {
		f.refuse--
	}
	interval, version := f.interval, f.version
	f.mu.Unlock()
	if refuse {
		return connect.NewError(connect.CodeUnavailable, errors.New("replica starting"))
	}
	first, err := stream.Receive()
	if err != nil {
		return err
	}
	if first.GetHello() == nil {
		return connect.NewError(connect.CodeInvalidArgument, errors.New("the first message must be a hello"))
	}
	s := &fakeSession{
		hello: first.GetHello(), peer: ctx.Value(peerKey{}).(*x509.Certificate), resumed: ctx.Value(resumedKey{}).(bool),
		in: make(chan *nodev1.AttachRequest, 1024), out: make(chan *nodev1.AttachResponse, 16),
		end: make(chan error, 1), done: make(chan struct{}),
	}
	defer close(s.done)
	if err := stream.Send(&nodev1.AttachResponse{Message: &nodev1.AttachResponse_Welcome{Welcome: &nodev1.Welcome{
		SessionId: fmt.Sprintf("session-%d", time.Now().UnixNano()), ProtocolVersion: version,
		HeartbeatInterval: durationpb.New(interval), MaxMessageBytes: 4 << 20, ServerTime: timestamppb.Now(),
	}}}); err != nil {
		return err
	}
	recvDone := make(chan struct{})
	go func() {
		defer close(recvDone)
		defer close(s.in)
		for {
			m, err := stream.Receive()
			if err != nil {
				return
			}
			s.in <- m
		}
	}()
	f.sessions <- s
	for {
		select {
		case m := <-s.out:
			if err := stream.Send(m); err != nil {
				return err
			}
		case err := <-s.end:
			return err
		case <-recvDone:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (f *fakeDaemon) RenewCertificate(ctx context.Context, req *connect.Request[nodev1.RenewCertificateRequest]) (*connect.Response[nodev1.RenewCertificateResponse], error) {
	peer := ctx.Value(peerKey{}).(*x509.Certificate)
	if req.Msg.GetDeviceId() != testDevice {
		return nil, connect.NewError(connect.CodePermissionDenied, errors.New("not your device"))
	}
	csr, err := x509.ParseCertificateRequest(req.Msg.GetCsr())
	if err != nil || csr.CheckSignature() != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("invalid CSR"))
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.renewals = append(f.renewals, peer)
	f.renewKeys = append(f.renewKeys, csr.PublicKey)
	if f.renewFail > 0 {
		f.renewFail--
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("CA busy"))
	}
	lifetime := f.lifetime
	if lifetime == 0 {
		lifetime = 24 * time.Hour
	}
	cert := deviceCert(f.ca, f.caKey, csr.PublicKey, time.Now().Add(-time.Minute), time.Now().Add(lifetime))
	f.renewedCerts = append(f.renewedCerts, cert)
	return connect.NewResponse(&nodev1.RenewCertificateResponse{
		CertificatePem: pemOf(cert), CaCertificatePem: pemOf(f.ca), CertificateExpireTime: timestamppb.New(cert.NotAfter),
		Fingerprint: client.Fingerprint(cert),
	}), nil
}

// deviceCert issues a device certificate for testDevice, valid from notBefore to
// notAfter.
func deviceCert(ca *x509.Certificate, caKey *ecdsa.PrivateKey, pub any, notBefore, notAfter time.Time) *x509.Certificate {
	u, _ := url.Parse("palyra://device/" + testDevice)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: testDevice},
		NotBefore: notBefore, NotAfter: notAfter, URIs: []*url.URL{u},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, pub, caKey)
	if err != nil {
		panic(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		panic(err)
	}
	return c
}

// bench is a fake daemon with its CA, and the state directory of a node paired with it.
type bench struct {
	t      *testing.T
	daemon *fakeDaemon
	url    string
	dir    *StateDir
	cert   *x509.Certificate // the node's certificate at the start
	srv    *httptest.Server
	gate   *gateListener
}

// newBench serves a fakeDaemon over TLS 1.3 with HTTP/2, requiring client certificates
// of its CA, and pairs a state directory with it: a key and a certificate valid from
// notBefore to notAfter (zero: an hour ago to a day from now).
func newBench(t *testing.T, notBefore, notAfter time.Time) *bench {
	t.Helper()
	ca, caKey := testCA(t)
	serverKey, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "palyrad"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:    x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, ca, &serverKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	daemon := &fakeDaemon{ca: ca, caKey: caKey, sessions: make(chan *fakeSession, 16), interval: time.Hour, version: ProtocolVersion}
	mux := http.NewServeMux()
	mux.Handle(nodev1connect.NewNodeServiceHandler(daemon))
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := context.WithValue(r.Context(), peerKey{}, r.TLS.PeerCertificates[0])
		ctx = context.WithValue(ctx, resumedKey{}, r.TLS.DidResume)
		mux.ServeHTTP(w, r.WithContext(ctx))
	}))
	srv.EnableHTTP2 = true
	gate, err := newGateListener()
	if err != nil {
		t.Fatal(err)
	}
	srv.Listener = gate
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	srv.TLS = &tls.Config{
		MinVersion: tls.VersionTLS13, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: roots,
		Certificates: []tls.Certificate{{Certificate: [][]byte{leafDER, ca.Raw}, PrivateKey: serverKey}},
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)

	if notBefore.IsZero() {
		notBefore, notAfter = time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour)
	}
	key, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	cert := deviceCert(ca, caKey, &key.PublicKey, notBefore, notAfter)
	dir := NewStateDir(t.TempDir() + "/state")
	if err := dir.SaveKey(key); err != nil {
		t.Fatal(err)
	}
	if err := dir.SaveCertificates(cert, ca); err != nil {
		t.Fatal(err)
	}
	keyFP, _ := KeyFingerprint(key.Public())
	if err := dir.SaveHost(&Host{
		URL: srv.URL, CAFingerprint: client.Fingerprint(ca), DeviceName: "build-01", DeviceID: testDevice,
		KeyFingerprint: keyFP, CertificateFingerprint: client.Fingerprint(cert), CertificateExpireTime: cert.NotAfter.UTC(),
	}); err != nil {
		t.Fatal(err)
	}
	return &bench{t: t, daemon: daemon, url: srv.URL, dir: dir, cert: cert, srv: srv, gate: gate}
}

// gateListener is the fake daemon's listener, which a test can take down (nothing
// listens on the port: dials are refused, as while palyrad restarts), have shed every
// connection (accepted, then reset, as palyrad's handshake admission sheds under
// overload), and bring up again on the same address.
type gateListener struct {
	addr net.Addr

	mu      sync.Mutex // guards the following
	ln      net.Listener
	changed chan struct{} // closed, and replaced, when ln or shed changes
	shed    bool
	closed  bool
}

func newGateListener() (*gateListener, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	return &gateListener{addr: ln.Addr(), ln: ln, changed: make(chan struct{})}, nil
}

// Accept returns the next connection while the gate is up (and does not shed).
func (g *gateListener) Accept() (net.Conn, error) {
	for {
		g.mu.Lock()
		ln, closed, changed := g.ln, g.closed, g.changed
		g.mu.Unlock()
		if closed {
			return nil, net.ErrClosed
		}
		if ln == nil {
			<-changed
			continue
		}
		c, err := ln.Accept()
		if err != nil {
			// Taken down (or closed) meanwhile: look again.
			continue
		}
		g.mu.Lock()
		shed := g.shed
		g.mu.Unlock()
		if shed {
			_ = c.(*net.TCPConn).SetLinger(0)
			_ = c.Close()
			continue
		}
		return c, nil
	}
}

// set changes the gate: up (listening), shedding what it accepts.
func (g *gateListener) set(up, shed bool) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case !up && g.ln != nil:
		if err := g.ln.Close(); err != nil {
			return err
		}
		g.ln = nil
	case up && g.ln == nil:
		ln, err := net.Listen("tcp", g.addr.String())
		if err != nil {
			return err
		}
		g.ln = ln
	}
	g.shed = shed
	close(g.changed)
	g.changed = make(chan struct{})
	return nil
}

func (g *gateListener) Close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = true
	close(g.changed)
	g.changed = make(chan struct{})
	if g.ln != nil {
		return g.ln.Close()
	}
	return nil
}

func (g *gateListener) Addr() net.Addr { return g.addr }

// down takes the fake daemon down, as a stopped palyrad: its sessions end and nothing
// listens on its address. shedding keeps it listening but resets every connection.
func (b *bench) down(shedding bool) {
	b.t.Helper()
	if err := b.gate.set(shedding, shedding); err != nil {
		b.t.Fatal(err)
	}
	b.srv.CloseClientConnections()
}

// up brings the fake daemon back on its address.
func (b *bench) up() {
	b.t.Helper()
	if err := b.gate.set(true, false); err != nil {
		b.t.Fatal(err)
	}
}

// set changes the daemon's settings.
func (b *bench) set(change func(f *fakeDaemon)) {
	b.daemon.mu.Lock()
	defer b.daemon.mu.Unlock()
	change(b.daemon)
}

// options returns agent options for the bench with caps, which the test may change.
func (b *bench) options(caps ...capability.Capability) AgentOptions {
	b.t.Helper()
	reg, err := capability.NewRegistry(caps...)
	if err != nil {
		b.t.Fatal(err)
	}
	return AgentOptions{
		Dir: b.dir, Registry: reg, AgentVersion: "v1.2.3", Log: testLogger(b.t), tune: testTuning,
	}
}

// running is an agent running in the background.
type running struct {
	agent  *Agent
	cancel context.CancelFunc
	done   chan error
}

// start runs an agent with o until stop or the end of the test.
func (b *bench) start(o AgentOptions) *running {
	b.t.Helper()
	a, err := NewAgent(o)
	if err != nil {
		b.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{agent: a, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- a.Run(ctx) }()
	b.t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(wait):
			b.t.Errorf("the agent did not stop")
		}
	})
	return r
}

// stop stops the agent and returns Run's error.
func (r *running) stop(t *testing.T) error {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		r.done <- err // for the cleanup
		return err
	case <-time.After(wait):
		t.Fatal("the agent did not stop")
		return nil
	}
}

// session waits for the next Attach.
func (b *bench) session() *fakeSession {
	b.t.Helper()
	select {
	case s := <-b.daemon.sessions:
		return s
	case <-time.After(wait):
		b.t.Fatal("the node did not attach")
		return nil
	}
}

// next returns the next message that is not a heartbeat.
func (s *fakeSession) next(t *testing.T) *nodev1.AttachRequest {
	t.Helper()
	timeout := time.After(wait)
	for {
		select {
		case m, ok := <-s.in:
			if !ok {
				t.Fatal("the node ended the stream")
			}
			if m.GetHeartbeat() == nil {
				return m
			}
		case <-timeout:
			t.Fatal("no message from the node")
		}
	}
}

// quiet checks that the node sends nothing but heartbeats for d.
func (s *fakeSession) quiet(t *testing.T, d time.Duration) {
	t.Helper()
	timeout := time.After(d)
	for {
		select {
		case m, ok := <-s.in:
			if !ok {
				return
			}
			if m.GetHeartbeat() == nil {
				t.Errorf("unexpected message from the node: %v", m)
			}
		case <-timeout:
			return
		}
	}
}

// result reads messages up to the next result: the accepted and output messages
// before it are returned too.
func (s *fakeSession) result(t *testing.T) (r *nodev1.DispatchResult, before []*nodev1.AttachRequest) {
	t.Helper()
	for {
		m := s.next(t)
		if r := m.GetResult(); r != nil {
			return r, before
		}
		before = append(before, m)
	}
}

func (s *fakeSession) send(m *nodev1.AttachResponse) { s.out <- m }

// dispatch sends a dispatch with an hour to its deadline (deadline overrides it when
// not zero).
func (s *fakeSession) dispatch(id, capability, input string, maxOutput uint64, deadline time.Time) {
	if deadline.IsZero() {
		deadline = time.Now().Add(time.Hour)
	}
	s.send(&nodev1.AttachResponse{Message: &nodev1.AttachResponse_Dispatch{Dispatch: &nodev1.Dispatch{
		DispatchId: id, Capability: capability, InputJson: input, Deadline: timestamppb.New(deadline), MaxOutputBytes: maxOutput,
	}}})
}

func (s *fakeSession) ack(id string) {
	s.send(&nodev1.AttachResponse{Message: &nodev1.AttachResponse_ResultAck{ResultAck: &nodev1.ResultAck{DispatchId: id}}})
}

func (s *fakeSession) cancel(id, reason string) {
	s.send(&nodev1.AttachResponse{Message: &nodev1.AttachResponse_Cancel{Cancel: &nodev1.Cancel{DispatchId: id, Reason: reason}}})
}

// fakeCap is a capability whose Run the test writes.
type fakeCap struct {
	name      string
	available bool
	runs      atomic.Int32
	run       func(ctx context.Context, input json.RawMessage, out capability.Output) (capability.Result, error)
}

func (c *fakeCap) Describe() capability.Descriptor {
	return capability.Descriptor{
		Name: c.name, Description: "a test capability", Available: c.available,
		InputSchema: json.RawMessage(`{"type":"object"}`),
	}
}

func (c *fakeCap) Run(ctx context.Context, input json.RawMessage, out capability.Output) (capability.Result, error) {
	c.runs.Add(1)
	return c.run(ctx, input, out)
}

// blocking is a Run that waits for its context and reports its error on seen.
func blocking(seen chan<- error) func(context.Context, json.RawMessage, capability.Output) (capability.Result, error) {
	return func(ctx context.Context, _ json.RawMessage, _ capability.Output) (capability.Result, error) {
		<-ctx.Done()
		seen <- ctx.Err()
		return capability.Result{}, ctx.Err()
	}
}

// testLogger logs to the test's log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p[:len(p)-1]))
	return len(p), nil
}

// spooled reports whether the result of id is in the spool.
func (b *bench) spooled(id string) bool {
	_, ok, err := newSpool(b.dir).get(id)
	return ok && err == nil
}
