package pairing_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/validate"
	"google.golang.org/protobuf/types/known/durationpb"

	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	"github.com/palyra/palyra/gen/go/palyra/controlplane/v1/controlplanev1connect"
	nodev1 "github.com/palyra/palyra/gen/go/palyra/node/v1"
	"github.com/palyra/palyra/gen/go/palyra/node/v1/nodev1connect"
	"github.com/palyra/palyra/internal/testpki"
	"github.com/palyra/palyra/server/internal/access"
	"github.com/palyra/palyra/server/internal/apiserver"
	"github.com/palyra/palyra/server/internal/audit"
	"github.com/palyra/palyra/server/internal/identity"
	"github.com/palyra/palyra/server/internal/notify/notifytest"
	"github.com/palyra/palyra/server/internal/pairing"
	"github.com/palyra/palyra/server/internal/store"
	"github.com/palyra/palyra/server/internal/store/storetest"
	"github.com/palyra/palyra/server/internal/testclock"
)

// testEpoch is the start of every test clock: far from the real date, so that a
// forgotten injection of the clock shows.
var testEpoch = time.Date(2031, 3, 14, 15, 9, 26, 0, time.UTC)

// Settings of the bundles.
const (
	publicURL    = "https://palyra.example:7443/base?x=1"
	requestTTL   = 20 * time.Minute
	certLifetime = 6 * time.Hour
)

// admin is the principal of every control-plane call in the tests.
var admin = &access.Principal{TokenID: "01JTESTADMINTOKEN000000000", User: "alice", Role: access.Admin}

// testBundle is one replica of palyrad's pairing, served over HTTP/2 with TLS on
// loopback: the Service with its database, CA, audit log and notification listener, and
// clients for both sides.
type testBundle struct {
	url       string
	srv       *httptest.Server
	store     *store.Store
	kek       *identity.KeyEncryptionKey
	clock     *testclock.Clock
	authority *identity.Authority
	audit     *audit.Log
	svc       *pairing.Service
	node      nodev1connect.NodeServiceClient
	nodeGRPC  nodev1connect.NodeServiceClient
	admin     controlplanev1connect.PairingServiceClient
	calls     *callLog
	runOnce   sync.Once
}

// bundleOption changes the options of a bundle's Service, or the Service itself before
// it serves anything.
type bundleOption struct {
	options func(*pairing.Options)
	service func(*pairing.Service)
}

// withOptions changes the Service's options.
func withOptions(f func(*pairing.Options)) bundleOption { return bundleOption{options: f} }

// withService changes the Service before it serves (the hooks of export_test.go).
func withService(f func(*pairing.Service)) bundleOption { return bundleOption{service: f} }

// setup returns a bundle on a fresh migrated database. The Service's Run is not
// started (see run), so that nothing expires unless a test asks.
func setup(t *testing.T, mods ...bundleOption) *testBundle {
	t.Helper()
	ring, _, err := identity.LoadKeyring(t.TempDir(), identity.GenerateMasterKey())
	if err != nil {
		t.Fatalf("key-encryption key: %v", err)
	}
	return newBundle(t, storetest.URL(t), ring.Primary(), testclock.New(testEpoch), mods...)
}

// replica returns a second replica on the same database, master key and clock.
func (b *testBundle) replica(t *testing.T, mods ...bundleOption) *testBundle {
	t.Helper()
	return newBundle(t, b.url, b.kek, b.clock, mods...)
}

func newBundle(t *testing.T, dbURL string, kek *identity.KeyEncryptionKey, clk *testclock.Clock, mods ...bundleOption) *testBundle {
	t.Helper()
	ctx := t.Context()
	st, err := store.Open(ctx, store.Options{URL: dbURL})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(st.Close)
	authority, err := identity.LoadOrCreateAuthority(ctx, identity.AuthorityOptions{Store: st, Keys: identity.NewKeyring(kek), Now: clk.Now})
	if err != nil {
		t.Fatalf("authority: %v", err)
	}
	macKey, err := kek.DeriveKey("pairing-codes")
	if err != nil {
		t.Fatal(err)
	}
	listener := notifytest.Start(t, dbURL, pairing.Channel)
	b := &testBundle{url: dbURL, store: st, kek: kek, clock: clk, authority: authority, audit: audit.New(audit.Options{Store: st, ReplicaID: "test", Now: clk.Now}), calls: &callLog{}}
	opts := pairing.Options{
		Store:              st,
		Authority:          authority,
		MACKey:             macKey,
		Notify:             listener,
		Audit:              b.audit,
		ReplicaID:          "replica-test",
		PublicURL:          publicURL,
		RequestTTL:         func() time.Duration { return requestTTL },
		DeviceCertLifetime: certLifetime,
		Now:                clk.Now,
	}
	for _, m := range mods {
		if m.options != nil {
			m.options(&opts)
		}
	}
	b.svc, err = pairing.New(opts)
	if err != nil {
		t.Fatalf("pairing.New: %v", err)
	}
	for _, m := range mods {
		if m.service != nil {
			m.service(b.svc)
		}
	}

	mux := http.NewServeMux()
	nodeOpts := connect.WithInterceptors(&testAccess{calls: b.calls}, apiserver.ErrorInterceptor(slog.New(slog.DiscardHandler)), validate.NewInterceptor())
	mux.Handle(nodev1connect.NewNodeServiceHandler(nodeService{h: b.svc.NodeHandler()}, nodeOpts))
	adminOpts := connect.WithInterceptors(&testAccess{calls: b.calls, principal: admin}, apiserver.ErrorInterceptor(slog.New(slog.DiscardHandler)), validate.NewInterceptor())
	mux.Handle(controlplanev1connect.NewPairingServiceHandler(b.svc.PairingHandler(), adminOpts))
	srv := httptest.NewUnstartedServer(mux)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	b.srv = srv
	b.node = nodev1connect.NewNodeServiceClient(srv.Client(), srv.URL)
	b.nodeGRPC = nodev1connect.NewNodeServiceClient(srv.Client(), srv.URL, connect.WithGRPC())
	b.admin = controlplanev1connect.NewPairingServiceClient(srv.Client(), srv.URL)
	return b
}

// run starts the Service's Run (the sweeper and the dispatch of notifications) until
// the test ends.
func (b *testBundle) run(t *testing.T) {
	b.runOnce.Do(func() { background(t, b.svc.Run) })
}

// background runs fn in a goroutine until the test ends, and waits for it then.
func background(t *testing.T, fn func(context.Context)) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

// nodeService is the test's NodeService: the pairing RPCs from the package, the rest
// unimplemented (the daemon composes the real one).
type nodeService struct {
	nodev1connect.UnimplementedNodeServiceHandler
	h *pairing.NodeHandler
}

func (n nodeService) StartPairing(ctx context.Context, req *connect.Request[nodev1.StartPairingRequest]) (*connect.Response[nodev1.StartPairingResponse], error) {
	return n.h.StartPairing(ctx, req)
}

func (n nodeService) GetPairingStatus(ctx context.Context, req *connect.Request[nodev1.GetPairingStatusRequest]) (*connect.Response[nodev1.GetPairingStatusResponse], error) {
	return n.h.GetPairingStatus(ctx, req)
}

func (n nodeService) WatchPairing(ctx context.Context, req *connect.Request[nodev1.WatchPairingRequest], stream *connect.ServerStream[nodev1.WatchPairingResponse]) error {
	return n.h.WatchPairing(ctx, req, stream)
}

// callLog records the audit target each call named, by procedure.
type callLog struct {
	mu      sync.Mutex // guards targets
	targets map[string][]string
}

func (l *callLog) add(procedure, target string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.targets == nil {
		l.targets = map[string][]string{}
	}
	l.targets[procedure] = append(l.targets[procedure], target)
}

// last returns the target the last call of procedure named.
func (l *callLog) last(procedure string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	ts := l.targets[procedure]
	if len(ts) == 0 {
		return ""
	}
	return ts[len(ts)-1]
}

// testAccess stands in for the access interceptor: it gives calls a principal (for the
// control plane) and an audit note, and records the target the handler named.
type testAccess struct {
	principal *access.Principal
	calls     *callLog
}

func (a *testAccess) context(ctx context.Context) (context.Context, *audit.Note) {
	ctx, note := audit.WithNote(ctx)
	if a.principal != nil {
		ctx = access.WithPrincipal(ctx, a.principal)
	}
	return ctx, note
}

func (a *testAccess) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		ctx, note := a.context(ctx)
		res, err := next(ctx, req)
		a.calls.add(req.Spec().Procedure, note.Target())
		return res, err
	}
}

func (a *testAccess) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (a *testAccess) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		ctx, note := a.context(ctx)
		err := next(ctx, conn)
		a.calls.add(conn.Spec().Procedure, note.Target())
		return err
	}
}

// Object identifiers of the extensions a hostile CSR asks for.
var (
	oidExtKeyUsage       = asn1.ObjectIdentifier{2, 5, 29, 37}
	oidBasicConstraints  = asn1.ObjectIdentifier{2, 5, 29, 19}
	oidServerAuth        = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 1}
	oidCodeSigning       = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 3}
	hostileDNSNames      = []string{"palyra.example", "localhost"}
	hostileURI, _        = url.Parse("palyra://device/01ARZ3NDEKTSV4RRFFQ69G5FAV")
	hostileEmailAddress  = "root@palyra.example"
	hostileIPAddress     = net.ParseIP("10.0.0.1")
	hostileCommonName    = "palyrad"
	hostileOrganisations = []string{"Palyra"}
)

// csrFor returns a CSR signed by key that asks for everything a node must not get: DNS,
// IP, e-mail and URI SANs (another device's id), the serverAuth and codeSigning EKUs,
// and CA rights.
func csrFor(t *testing.T, key crypto.Signer) []byte {
	t.Helper()
	eku, err := asn1.Marshal([]asn1.ObjectIdentifier{oidServerAuth, oidCodeSigning})
	if err != nil {
		t.Fatal(err)
	}
	bc, err := asn1.Marshal(struct {
		IsCA bool `asn1:"optional"`
	}{IsCA: true})
	if err != nil {
		t.Fatal(err)
	}
	der := testpki.CSR(t, key, &x509.CertificateRequest{
		Subject:        pkix.Name{CommonName: hostileCommonName, Organization: hostileOrganisations},
		DNSNames:       hostileDNSNames,
		IPAddresses:    []net.IP{hostileIPAddress},
		EmailAddresses: []string{hostileEmailAddress},
		URIs:           []*url.URL{hostileURI},
		ExtraExtensions: []pkix.Extension{
			{Id: oidExtKeyUsage, Value: eku},
			{Id: oidBasicConstraints, Critical: true, Value: bc},
		},
	})
	// The request does ask for all of it, or the tests that it is ignored prove nothing.
	r, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	asks := map[string]bool{}
	for _, e := range r.Extensions {
		asks[e.Id.String()] = true
	}
	if len(r.DNSNames) != len(hostileDNSNames) || len(r.URIs) != 1 || !asks[oidExtKeyUsage.String()] || !asks[oidBasicConstraints.String()] {
		t.Fatalf("the hostile CSR asks for too little: %v %v %v", r.DNSNames, r.URIs, asks)
	}
	return der
}

// fingerprint is the public-key fingerprint of key, as the node shows it.
func fingerprint(t *testing.T, key *ecdsa.PrivateKey) string {
	t.Helper()
	fp, err := identity.PublicKeyFingerprint(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	return fp
}

// createCode creates a code through the control plane.
func (b *testBundle) createCode(t *testing.T, req *controlplanev1.CreatePairingCodeRequest) *controlplanev1.CreatePairingCodeResponse {
	t.Helper()
	res, err := b.admin.CreatePairingCode(t.Context(), connect.NewRequest(req))
	if err != nil {
		t.Fatalf("create pairing code: %v", err)
	}
	return res.Msg
}

// createPIN creates a PIN code of the default length.
func (b *testBundle) createPIN(t *testing.T) *controlplanev1.CreatePairingCodeResponse {
	t.Helper()
	return b.createCode(t, &controlplanev1.CreatePairingCodeRequest{Method: controlplanev1.PairingMethod_PAIRING_METHOD_PIN})
}

// createQR creates a QR code.
func (b *testBundle) createQR(t *testing.T) *controlplanev1.CreatePairingCodeResponse {
	t.Helper()
	return b.createCode(t, &controlplanev1.CreatePairingCodeRequest{Method: controlplanev1.PairingMethod_PAIRING_METHOD_QR})
}

// startReq is a start with a code (a PIN of digits, else a QR code) and a fresh CSR.
func startReq(t *testing.T, code string) (*nodev1.StartPairingRequest, *ecdsa.PrivateKey) {
	t.Helper()
	key := testpki.Key(t)
	req := &nodev1.StartPairingRequest{
		Csr:          csrFor(t, key),
		DeviceName:   "node-1",
		Platform:     "linux/amd64",
		AgentVersion: "1.2.3",
	}
	if strings.Contains(code, "_") {
		req.Code = &nodev1.StartPairingRequest_QrCode{QrCode: code}
	} else {
		req.Code = &nodev1.StartPairingRequest_Pin{Pin: code}
	}
	return req, key
}

// start calls StartPairing.
func (b *testBundle) start(t *testing.T, req *nodev1.StartPairingRequest) (*nodev1.StartPairingResponse, error) {
	t.Helper()
	return startWith(t, b.node, req)
}

// startWith calls StartPairing through client.
func startWith(t *testing.T, client nodev1connect.NodeServiceClient, req *nodev1.StartPairingRequest) (*nodev1.StartPairingResponse, error) {
	t.Helper()
	res, err := client.StartPairing(t.Context(), connect.NewRequest(req))
	if err != nil {
		return nil, err
	}
	return res.Msg, nil
}

// nodeFrom returns a node client whose connections come from the loopback address
// 127.0.2.<last>: another source address for the per-address limits.
func (b *testBundle) nodeFrom(last byte) nodev1connect.NodeServiceClient {
	tr := b.srv.Client().Transport.(*http.Transport).Clone()
	tr.DialContext = (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 2, last)}}).DialContext
	return nodev1connect.NewNodeServiceClient(&http.Client{Transport: tr}, b.srv.URL)
}

// mustStart starts pairing with code and fails the test if that fails.
func (b *testBundle) mustStart(t *testing.T, code string) (*nodev1.StartPairingResponse, *ecdsa.PrivateKey) {
	t.Helper()
	req, key := startReq(t, code)
	res, err := b.start(t, req)
	if err != nil {
		t.Fatalf("start pairing: %v", err)
	}
	return res, key
}

// status calls GetPairingStatus.
func (b *testBundle) status(t *testing.T, id, secret string) (*nodev1.PairingStatus, error) {
	t.Helper()
	res, err := b.node.GetPairingStatus(t.Context(), connect.NewRequest(&nodev1.GetPairingStatusRequest{RequestId: id, PairingSecret: secret}))
	if err != nil {
		return nil, err
	}
	return res.Msg.GetStatus(), nil
}

// approve calls ApprovePairingRequest.
func (b *testBundle) approve(t *testing.T, req *controlplanev1.ApprovePairingRequestRequest) (*controlplanev1.PairingRequest, error) {
	t.Helper()
	res, err := b.admin.ApprovePairingRequest(t.Context(), connect.NewRequest(req))
	if err != nil {
		return nil, err
	}
	return res.Msg.GetPairingRequest(), nil
}

// reject calls RejectPairingRequest.
func (b *testBundle) reject(t *testing.T, id, reason string) (*controlplanev1.PairingRequest, error) {
	t.Helper()
	res, err := b.admin.RejectPairingRequest(t.Context(), connect.NewRequest(&controlplanev1.RejectPairingRequestRequest{Id: id, Reason: reason}))
	if err != nil {
		return nil, err
	}
	return res.Msg.GetPairingRequest(), nil
}

// getRequest calls GetPairingRequest.
func (b *testBundle) getRequest(t *testing.T, id string) *controlplanev1.PairingRequest {
	t.Helper()
	res, err := b.admin.GetPairingRequest(t.Context(), connect.NewRequest(&controlplanev1.GetPairingRequestRequest{Id: id}))
	if err != nil {
		t.Fatalf("get pairing request: %v", err)
	}
	return res.Msg.GetPairingRequest()
}

// listCodes returns every code, newest first.
func (b *testBundle) listCodes(t *testing.T) map[string]*controlplanev1.PairingCode {
	t.Helper()
	res, err := b.admin.ListPairingCodes(t.Context(), connect.NewRequest(&controlplanev1.ListPairingCodesRequest{PageSize: 500}))
	if err != nil {
		t.Fatalf("list pairing codes: %v", err)
	}
	out := map[string]*controlplanev1.PairingCode{}
	for _, c := range res.Msg.GetPairingCodes() {
		out[c.GetId()] = c
	}
	return out
}

// wantCode fails the test unless err is a Connect error with code.
func wantCode(t *testing.T, err error, code connect.Code) *connect.Error {
	t.Helper()
	var ce *connect.Error
	if !errors.As(err, &ce) {
		t.Fatalf("error %v is not a Connect error with code %v", err, code)
	}
	if ce.Code() != code {
		t.Fatalf("error %q has code %v, want %v", ce.Message(), ce.Code(), code)
	}
	return ce
}

// ttl is a durationpb for the requests.
func ttl(d time.Duration) *durationpb.Duration { return durationpb.New(d) }

func TestNewRefusesBadOptions(t *testing.T) {
	t.Parallel()
	b := setup(t)
	good := func() pairing.Options {
		key := make([]byte, 32)
		return pairing.Options{Store: b.store, Authority: b.authority, MACKey: key, Audit: b.audit, PublicURL: publicURL}
	}
	if _, err := pairing.New(good()); err != nil {
		t.Fatalf("New with good options: %v", err)
	}
	cases := map[string]func(*pairing.Options){
		"no store":               func(o *pairing.Options) { o.Store = nil },
		"no authority":           func(o *pairing.Options) { o.Authority = nil },
		"no audit log":           func(o *pairing.Options) { o.Audit = nil },
		"short MAC key":          func(o *pairing.Options) { o.MACKey = make([]byte, 16) },
		"short older MAC key":    func(o *pairing.Options) { o.OlderMACKeys = [][]byte{make([]byte, 32), make([]byte, 31)} },
		"no public URL":          func(o *pairing.Options) { o.PublicURL = "" },
		"relative public URL":    func(o *pairing.Options) { o.PublicURL = "palyra.example:7443" },
		"negative cert lifetime": func(o *pairing.Options) { o.DeviceCertLifetime = -time.Hour },
	}
	for name, mod := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			o := good()
			mod(&o)
			if _, err := pairing.New(o); err == nil {
				t.Error("New accepted the options")
			}
		})
	}
}
