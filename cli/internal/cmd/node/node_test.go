package node_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/palyra/palyra/cli/internal/client"
	"github.com/palyra/palyra/cli/internal/cmd/cmdtest"
	agent "github.com/palyra/palyra/cli/internal/node"
	nodev1 "github.com/palyra/palyra/gen/go/palyra/node/v1"
	"github.com/palyra/palyra/gen/go/palyra/node/v1/nodev1connect"
	"github.com/palyra/palyra/internal/buildinfo"
	"github.com/palyra/palyra/internal/possession"
	"github.com/palyra/palyra/internal/testpki"
)

const (
	pin    = "48213907"
	qrCode = "Zm9vYmFyYmF6cXV4cXV1eHl6enk"
)

// sign makes a certificate for pub signed by parent (self-signed when nil).
func sign(tmpl *x509.Certificate, pub any, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, error) {
	if parent == nil {
		parent = tmpl
	}
	tmpl.SerialNumber = big.NewInt(time.Now().UnixNano())
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Minute), time.Now().Add(24*time.Hour)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, parentKey)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// certificate is sign for the test's goroutine.
func certificate(t *testing.T, tmpl *x509.Certificate, pub any, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) *x509.Certificate {
	t.Helper()
	c, err := sign(tmpl, pub, parent, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newCA(t *testing.T, name string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key := testpki.Key(t)
	return certificate(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: name}, IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}, &key.PublicKey, nil, key), key
}

func pemOf(c *x509.Certificate) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
}

// request is a pairing request the fake holds.
type request struct {
	secret, deviceID string
	pub              any
}

// fakeNode is palyrad's NodeService for pairing: it signs the CSRs of approved requests
// with its CA, and decides every request as outcome says: "approve" and "reject" and
// "expire" after a first pending status, "hold" never. Its Attach (run_test.go) welcomes
// the nodes it paired.
type fakeNode struct {
	nodev1connect.UnimplementedNodeServiceHandler
	ca    *x509.Certificate
	caKey *ecdsa.PrivateKey
	// watching receives the id of each request being watched with outcome "hold".
	watching chan string
	// hellos receives the hello of each Attach (see run_test.go).
	hellos chan *nodev1.Hello

	mu       sync.Mutex // guards the following
	outcome  string
	infoCA   *x509.Certificate // what GetServerInfo returns; ca when nil
	infos    int
	starts   []*nodev1.StartPairingRequest
	requests map[string]*request
}

var _ nodev1connect.NodeServiceHandler = (*fakeNode)(nil)

func (f *fakeNode) setOutcome(o string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.outcome = o
}

// calls returns how often GetServerInfo and StartPairing were called, and the
// StartPairing requests.
func (f *fakeNode) calls() (infos int, starts []*nodev1.StartPairingRequest) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.infos, append([]*nodev1.StartPairingRequest{}, f.starts...)
}

func (f *fakeNode) GetServerInfo(context.Context, *connect.Request[nodev1.GetServerInfoRequest]) (*connect.Response[nodev1.GetServerInfoResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.infos++
	ca := f.infoCA
	if ca == nil {
		ca = f.ca
	}
	return connect.NewResponse(&nodev1.GetServerInfoResponse{ServerVersion: "v0.3.0", CaCertificatePem: pemOf(ca), CaFingerprint: client.Fingerprint(ca)}), nil
}

func (f *fakeNode) StartPairing(_ context.Context, req *connect.Request[nodev1.StartPairingRequest]) (*connect.Response[nodev1.StartPairingResponse], error) {
	csr, err := x509.ParseCertificateRequest(req.Msg.GetCsr())
	if err != nil || csr.CheckSignature() != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("invalid certificate signing request"))
	}
	if req.Msg.GetPin() != pin && req.Msg.GetQrCode() != qrCode {
		return nil, connect.NewError(connect.CodePermissionDenied, errors.New("the pairing code is not valid"))
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.starts = append(f.starts, req.Msg)
	n := len(f.starts)
	id := fmt.Sprintf("01JD5ZJ8Q0W1X2Y3Z4A5B6C7R%d", n)
	f.requests[id] = &request{secret: "pairing-secret-" + id, deviceID: fmt.Sprintf("01JD5ZJ8Q0W1X2Y3Z4A5B6C7V%d", n), pub: csr.PublicKey}
	fp, _ := agent.KeyFingerprint(csr.PublicKey)
	return connect.NewResponse(&nodev1.StartPairingResponse{
		RequestId: id, PairingSecret: f.requests[id].secret, PublicKeyFingerprint: fp,
		ExpireTime: timestamppb.New(time.Now().Add(10 * time.Minute)), DeviceClaim: f.claim(req.Msg),
	}), nil
}

// claim judges a start's device claim as palyrad would, without its records: proven
// when the proof's certificate is the fake CA's for that device and its key signed the
// request.
func (f *fakeNode) claim(req *nodev1.StartPairingRequest) nodev1.DeviceClaim {
	if req.GetDeviceId() == "" {
		return nodev1.DeviceClaim_DEVICE_CLAIM_NEW
	}
	proof := req.GetDevicePossession()
	cert, err := x509.ParseCertificate(proof.GetCertificate())
	if err != nil || cert.CheckSignatureFrom(f.ca) != nil || len(cert.URIs) != 1 || cert.URIs[0].String() != "palyra://device/"+req.GetDeviceId() {
		return nodev1.DeviceClaim_DEVICE_CLAIM_UNPROVEN
	}
	if pub, ok := cert.PublicKey.(*ecdsa.PublicKey); !ok || !possession.Verify(pub, req.GetDeviceId(), req.GetCsr(), proof.GetSignature()) {
		return nodev1.DeviceClaim_DEVICE_CLAIM_UNPROVEN
	}
	return nodev1.DeviceClaim_DEVICE_CLAIM_PROVEN
}

func (f *fakeNode) WatchPairing(ctx context.Context, req *connect.Request[nodev1.WatchPairingRequest], stream *connect.ServerStream[nodev1.WatchPairingResponse]) error {
	f.mu.Lock()
	r, outcome := f.requests[req.Msg.GetRequestId()], f.outcome
	f.mu.Unlock()
	if r == nil || r.secret != req.Msg.GetPairingSecret() {
		return connect.NewError(connect.CodeNotFound, errors.New("no such pairing request"))
	}
	send := func(st *nodev1.PairingStatus) error {
		st.RequestId = req.Msg.GetRequestId()
		return stream.Send(&nodev1.WatchPairingResponse{Status: st})
	}
	if err := send(&nodev1.PairingStatus{State: nodev1.PairingState_PAIRING_STATE_PENDING_APPROVAL}); err != nil {
		return err
	}
	switch outcome {
	case "approve":
		u, _ := url.Parse("palyra://device/" + r.deviceID)
		cert, err := sign(&x509.Certificate{
			Subject: pkix.Name{CommonName: r.deviceID}, URIs: []*url.URL{u},
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}, r.pub, f.ca, f.caKey)
		if err != nil {
			return connect.NewError(connect.CodeInternal, err)
		}
		return send(&nodev1.PairingStatus{
			State: nodev1.PairingState_PAIRING_STATE_APPROVED, DeviceId: r.deviceID, CertificatePem: pemOf(cert),
			CaCertificatePem: pemOf(f.ca), CertificateExpireTime: timestamppb.New(cert.NotAfter),
		})
	case "reject":
		return send(&nodev1.PairingStatus{State: nodev1.PairingState_PAIRING_STATE_REJECTED, Reason: "unknown machine"})
	case "expire":
		return send(&nodev1.PairingStatus{State: nodev1.PairingState_PAIRING_STATE_EXPIRED, Reason: "no decision within 10m0s"})
	}
	select {
	case f.watching <- req.Msg.GetRequestId():
	default:
	}
	<-ctx.Done()
	return ctx.Err()
}

// bench is a fake palyrad with its own CA, served over TLS like palyrad (the chain
// ends with the CA), and a state directory for the node.
type bench struct {
	fake    *fakeNode
	url, fp string
	caFile  string
	dir     string
	otherFP string
	otherCA *x509.Certificate
}

func newBench(t *testing.T, outcome string) *bench {
	t.Helper()
	ca, caKey := newCA(t, "Test Palyra CA")
	leafKey := testpki.Key(t)
	leaf := certificate(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: "palyrad"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, &leafKey.PublicKey, ca, caKey)
	fake := &fakeNode{
		ca: ca, caKey: caKey, outcome: outcome, requests: map[string]*request{}, watching: make(chan string, 1),
		hellos: make(chan *nodev1.Hello, 16),
	}
	mux := http.NewServeMux()
	mux.Handle(nodev1connect.NewNodeServiceHandler(fake))
	srv := httptest.NewUnstartedServer(withPeer(mux))
	srv.EnableHTTP2 = true
	// Like palyrad: a client certificate is verified against the CA when one is given.
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{leaf.Raw, ca.Raw}, PrivateKey: leafKey}},
		ClientAuth:   tls.VerifyClientCertIfGiven, ClientCAs: roots,
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, []byte(pemOf(ca)), 0o644); err != nil {
		t.Fatal(err)
	}
	other, _ := newCA(t, "Other CA")
	return &bench{
		fake: fake, url: srv.URL, fp: client.Fingerprint(ca), caFile: caFile, dir: filepath.Join(dir, "state"),
		otherFP: client.Fingerprint(other), otherCA: other,
	}
}

// pairArgs are the arguments of a PIN pairing with the bench.
func (b *bench) pairArgs(extra ...string) []string {
	return append([]string{"node", "pair", "--url", b.url, "--pin", pin, "--ca-fingerprint", b.fp, "--state-dir", b.dir, "--name", "build-01"}, extra...)
}

// run runs palyra with an environment of its own.
func (b *bench) run(ctx context.Context, t *testing.T, args ...string) cmdtest.Result {
	t.Helper()
	return cmdtest.Run(ctx, map[string]string{"HOME": t.TempDir()}, args...)
}

// secretsHidden checks that the output never shows the node's private key nor the
// pairing secret.
func (b *bench) secretsHidden(t *testing.T, dir string, res cmdtest.Result) {
	t.Helper()
	out := res.Stdout + res.Stderr
	if strings.Contains(out, "PRIVATE KEY") || strings.Contains(out, "pairing-secret-") {
		t.Errorf("the output shows the key or the pairing secret:\n%s", out)
	}
	raw, err := os.ReadFile(filepath.Join(dir, agent.KeyFile))
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if len(line) > 16 && !strings.HasPrefix(line, "-----") && strings.Contains(out, line) {
			t.Errorf("the output shows a line of the private key")
		}
	}
}

// fileMode returns the permission bits of a file; absent files are 0.
func fileMode(t *testing.T, path string) os.FileMode {
	t.Helper()
	info, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return info.Mode().Perm()
}

func readHost(t *testing.T, dir string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, agent.HostFile))
	if err != nil {
		t.Fatal(err)
	}
	var h map[string]any
	if err := json.Unmarshal(b, &h); err != nil {
		t.Fatal(err)
	}
	return h
}

func keyFingerprint(t *testing.T, dir string) string {
	t.Helper()
	k, err := agent.NewStateDir(dir).Key()
	if err != nil || k == nil {
		t.Fatalf("key: %v, %v", k, err)
	}
	fp, _ := agent.KeyFingerprint(k.Public())
	return fp
}

// TestNodePairApproved pairs a node, checks what it sent, printed and stored, then
// that it refuses to pair again without --force, and pairs again with a new key with
// it.
func TestNodePairApproved(t *testing.T) {
	t.Parallel()
	b := newBench(t, "approve")
	res := b.run(t.Context(), t, b.pairArgs()...)
	if res.Code != 0 {
		t.Fatalf("exit %d:\n%s", res.Code, res.Stderr)
	}
	_, starts := b.fake.calls()
	if len(starts) != 1 {
		t.Fatalf("%d StartPairing calls", len(starts))
	}
	s := starts[0]
	if s.GetPin() != pin || s.GetDeviceName() != "build-01" || s.GetPlatform() != runtime.GOOS+"/"+runtime.GOARCH ||
		s.GetAgentVersion() != buildinfo.Version() || s.GetDeviceId() != "" {
		t.Errorf("StartPairing got %v", s)
	}
	csr, err := x509.ParseCertificateRequest(s.GetCsr())
	if err != nil || csr.Subject.CommonName != "build-01" || len(csr.DNSNames)+len(csr.IPAddresses)+len(csr.URIs) != 0 {
		t.Errorf("CSR %v, %v", csr, err)
	}

	const id, device = "01JD5ZJ8Q0W1X2Y3Z4A5B6C7R1", "01JD5ZJ8Q0W1X2Y3Z4A5B6C7V1"
	fp := keyFingerprint(t, b.dir)
	cmdtest.WantOutput(t, "stderr", res.Stderr, "waiting for approval (request "+id+", key "+fp+")",
		"palyra pairing requests approve "+id+" --expect-fingerprint "+fp, "palyra pairing requests reject "+id)
	cmdtest.WantOutput(t, "stdout", res.Stdout, "paired as device "+device+"; certificate valid until ")
	b.secretsHidden(t, b.dir, res)

	if runtime.GOOS != "windows" {
		modes := map[string]os.FileMode{"": 0o700, agent.KeyFile: 0o600, agent.HostFile: 0o600, agent.CertFile: 0o644, agent.CAFile: 0o644, agent.PendingFile: 0}
		for name, want := range modes {
			if got := fileMode(t, filepath.Join(b.dir, name)); got != want {
				t.Errorf("%q has mode %v, want %v", name, got, want)
			}
		}
	}
	dir := agent.NewStateDir(b.dir)
	cert, err := dir.Certificate()
	if err != nil {
		t.Fatal(err)
	}
	if cafile, err := dir.CA(); err != nil || !cafile.Equal(b.fake.ca) {
		t.Errorf("ca.pem holds %v, %v", cafile, err)
	}
	if certFP, _ := agent.KeyFingerprint(cert.PublicKey); certFP != fp {
		t.Errorf("cert.pem certifies %s, not the node's key %s", certFP, fp)
	}
	h := readHost(t, b.dir)
	want := map[string]any{
		"url": b.url, "device_id": device, "device_name": "build-01", "ca_fingerprint": b.fp, "key_fingerprint": fp,
		"certificate_fingerprint": client.Fingerprint(cert), "certificate_expire_time": cert.NotAfter.UTC().Format(time.RFC3339),
	}
	for k, v := range want {
		if h[k] != v {
			t.Errorf("node-host.json %s = %v, want %v", k, h[k], v)
		}
	}
	if h["paired_at"] == nil || h["request_id"] != nil {
		t.Errorf("node-host.json = %v: want paired_at and no request_id", h)
	}

	// Paired: a second pairing is refused without a call, whatever the flags.
	res = b.run(t.Context(), t, b.pairArgs()...)
	if res.Code != 1 || !strings.Contains(res.Stderr, "already paired as device "+device) || !strings.Contains(res.Stderr, "--force") {
		t.Errorf("pairing a paired node: exit %d, %s", res.Code, res.Stderr)
	}
	if res := b.run(t.Context(), t, "node", "pair", "--state-dir", b.dir); res.Code != 1 || !strings.Contains(res.Stderr, "already paired") {
		t.Errorf("pairing a paired node without flags: exit %d, %s", res.Code, res.Stderr)
	}
	if _, starts := b.fake.calls(); len(starts) != 1 {
		t.Errorf("%d StartPairing calls after the refusals", len(starts))
	}

	// --force pairs again: a new key, and the device it was.
	res = b.run(t.Context(), t, b.pairArgs("--force")...)
	if res.Code != 0 {
		t.Fatalf("--force: exit %d:\n%s", res.Code, res.Stderr)
	}
	_, starts = b.fake.calls()
	if len(starts) != 2 || starts[1].GetDeviceId() != device {
		t.Errorf("the second StartPairing named device %q, want %s", starts[1].GetDeviceId(), device)
	}
	// It proved it is that device, with the key and certificate it had.
	if proof := starts[1].GetDevicePossession(); proof == nil || !bytes.Equal(proof.GetCertificate(), cert.Raw) ||
		!possession.Verify(cert.PublicKey.(*ecdsa.PublicKey), device, starts[1].GetCsr(), proof.GetSignature()) {
		t.Errorf("the second StartPairing proves nothing: %v", proof)
	}
	cmdtest.WantOutput(t, "stderr", res.Stderr, "pairing again as device "+device+": palyrad checked that this node holds the device's key")
	for _, name := range []string{agent.PrevKeyFile, agent.PrevCertFile} {
		if fileMode(t, filepath.Join(b.dir, name)) != 0 {
			t.Errorf("%s is left after the node paired again", name)
		}
	}
	if again := keyFingerprint(t, b.dir); again == fp {
		t.Error("--force kept the old key")
	}
	if h := readHost(t, b.dir); h["device_id"] != "01JD5ZJ8Q0W1X2Y3Z4A5B6C7V2" || h["previous_device_id"] != nil {
		t.Errorf("node-host.json after re-pairing = %v", h)
	}
}

// TestNodePairQRJSON pairs with a QR pairing URI, in the default state directory, and
// checks -o json.
func TestNodePairQRJSON(t *testing.T) {
	t.Parallel()
	b := newBench(t, "approve")
	state := t.TempDir()
	uri := agent.PairingURI{URL: b.url, Code: qrCode, CAFingerprint: b.fp}.String()
	res := cmdtest.Run(t.Context(), map[string]string{"XDG_STATE_HOME": state, "PALYRA_URL": b.url},
		"node", "pair", "--qr-uri", uri, "--name", "build 02", "-o", "json")
	if res.Code != 0 {
		t.Fatalf("exit %d:\n%s", res.Code, res.Stderr)
	}
	dir := filepath.Join(state, "palyra", "node")
	var got map[string]any
	if err := json.Unmarshal([]byte(res.Stdout), &got); err != nil {
		t.Fatalf("-o json printed %q: %v", res.Stdout, err)
	}
	want := map[string]any{
		"device_id": "01JD5ZJ8Q0W1X2Y3Z4A5B6C7V1", "request_id": "01JD5ZJ8Q0W1X2Y3Z4A5B6C7R1", "device_name": "build 02",
		"url": b.url, "ca_fingerprint": b.fp, "key_fingerprint": keyFingerprint(t, dir), "state_dir": dir,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("JSON %s = %v, want %v", k, got[k], v)
		}
	}
	if fp, _ := got["certificate_fingerprint"].(string); !client.ValidFingerprint(fp) || got["certificate_expire_time"] == nil {
		t.Errorf("JSON = %v", got)
	}
	if _, starts := b.fake.calls(); len(starts) != 1 || starts[0].GetQrCode() != qrCode {
		t.Errorf("StartPairing got %v", starts)
	}
	b.secretsHidden(t, dir, res)
}

// TestNodePairDecided checks rejected and expired requests: exit 1 with the reason,
// and the pending request forgotten, the key kept.
func TestNodePairDecided(t *testing.T) {
	t.Parallel()
	for outcome, want := range map[string]string{
		"reject": "palyra: pairing rejected: unknown machine",
		"expire": "palyra: pairing request expired: no decision within 10m0s",
	} {
		b := newBench(t, outcome)
		res := b.run(t.Context(), t, b.pairArgs()...)
		if res.Code != 1 || !strings.Contains(res.Stderr, want) {
			t.Errorf("%s: exit %d, stderr:\n%s", outcome, res.Code, res.Stderr)
		}
		for name, present := range map[string]bool{agent.KeyFile: true, agent.HostFile: true, agent.PendingFile: false, agent.CertFile: false} {
			if _, err := os.Stat(filepath.Join(b.dir, name)); (err == nil) != present {
				t.Errorf("%s: %s present=%v, want %v", outcome, name, err == nil, present)
			}
		}
		if h := readHost(t, b.dir); h["request_id"] != nil || h["device_id"] != nil {
			t.Errorf("%s: node-host.json = %v", outcome, h)
		}
		b.secretsHidden(t, b.dir, res)
	}
}

// TestNodePairResume interrupts a node that waits, checks that the request stays
// pending, and that a new run resumes it without a new request.
func TestNodePairResume(t *testing.T) {
	t.Parallel()
	b := newBench(t, "hold")
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan cmdtest.Result)
	go func() { done <- b.run(ctx, t, b.pairArgs()...) }()
	select {
	case <-b.fake.watching:
	case res := <-done:
		t.Fatalf("pair ended before waiting: exit %d:\n%s", res.Code, res.Stderr)
	}
	cancel() // Ctrl-C
	res := <-done
	const id = "01JD5ZJ8Q0W1X2Y3Z4A5B6C7R1"
	if res.Code != 130 || !strings.Contains(res.Stderr, "interrupted: pairing request "+id+" stays pending; run `palyra node pair --state-dir") {
		t.Fatalf("interrupted: exit %d, stderr:\n%s", res.Code, res.Stderr)
	}
	if runtime.GOOS != "windows" && fileMode(t, filepath.Join(b.dir, agent.PendingFile)) != 0o600 {
		t.Errorf("pairing.json mode %v, want 0600", fileMode(t, filepath.Join(b.dir, agent.PendingFile)))
	}
	if h := readHost(t, b.dir); h["request_id"] != id {
		t.Errorf("node-host.json = %v, want the pending request", h)
	}
	fp := keyFingerprint(t, b.dir)

	// Flags naming another server do not resume the request.
	res = b.run(t.Context(), t, "node", "pair", "--state-dir", b.dir, "--url", "https://127.0.0.2:1")
	if res.Code != 1 || !strings.Contains(res.Stderr, "is pending with "+b.url) {
		t.Errorf("resume with another URL: exit %d, %s", res.Code, res.Stderr)
	}
	res = b.run(t.Context(), t, "node", "pair", "--state-dir", b.dir, "--ca-fingerprint", b.otherFP)
	if res.Code != 1 || !strings.Contains(res.Stderr, "whose CA is "+b.fp) {
		t.Errorf("resume with another CA: exit %d, %s", res.Code, res.Stderr)
	}

	b.fake.setOutcome("approve")
	res = b.run(t.Context(), t, "node", "pair", "--state-dir", b.dir)
	if res.Code != 0 {
		t.Fatalf("resume: exit %d:\n%s", res.Code, res.Stderr)
	}
	cmdtest.WantOutput(t, "stderr", res.Stderr, "resuming pairing request "+id+" with "+b.url, "waiting for approval (request "+id+", key "+fp+")")
	if _, starts := b.fake.calls(); len(starts) != 1 {
		t.Errorf("%d StartPairing calls; resuming must not make a new request", len(starts))
	}
	if again := keyFingerprint(t, b.dir); again != fp {
		t.Error("resuming changed the key")
	}
	if _, err := os.Stat(filepath.Join(b.dir, agent.PendingFile)); err == nil {
		t.Error("pairing.json outlived the approval")
	}
	b.secretsHidden(t, b.dir, res)
}

// TestNodePairTrust checks that a node sends nothing to a daemon whose CA is not the
// pinned one, and that --ca-file pins the CA in the file.
func TestNodePairTrust(t *testing.T) {
	t.Parallel()
	b := newBench(t, "approve")
	res := b.run(t.Context(), t, "node", "pair", "--url", b.url, "--pin", pin, "--ca-fingerprint", b.otherFP, "--state-dir", b.dir, "--name", "n1")
	if res.Code != 1 || !strings.Contains(res.Stderr, "presented no CA certificate with fingerprint "+b.otherFP) {
		t.Errorf("wrong pin: exit %d, %s", res.Code, res.Stderr)
	}
	if infos, starts := b.fake.calls(); infos != 0 || len(starts) != 0 {
		t.Errorf("a daemon with another CA got %d GetServerInfo and %d StartPairing calls", infos, len(starts))
	}

	// The handshake presents the pinned CA, but GetServerInfo returns another.
	b.fake.mu.Lock()
	b.fake.infoCA = b.otherCA
	b.fake.mu.Unlock()
	res = b.run(t.Context(), t, b.pairArgs()...)
	if res.Code != 1 || !strings.Contains(res.Stderr, "returned the CA "+b.otherFP+", not the pinned "+b.fp) {
		t.Errorf("another CA from GetServerInfo: exit %d, %s", res.Code, res.Stderr)
	}
	if _, starts := b.fake.calls(); len(starts) != 0 {
		t.Errorf("the CSR was sent to a daemon whose CA is not pinned")
	}
	if _, err := os.Stat(filepath.Join(b.dir, agent.KeyFile)); err == nil {
		t.Error("a key was made before the daemon was trusted")
	}
	b.fake.mu.Lock()
	b.fake.infoCA = nil
	b.fake.mu.Unlock()

	res = b.run(t.Context(), t, "node", "pair", "--url", b.url, "--pin", pin, "--ca-file", b.caFile, "--state-dir", b.dir, "--name", "n1")
	if res.Code != 0 {
		t.Fatalf("--ca-file: exit %d:\n%s", res.Code, res.Stderr)
	}
	if h := readHost(t, b.dir); h["ca_fingerprint"] != b.fp {
		t.Errorf("node-host.json = %v", h)
	}
}

// TestNodePairArguments checks that malformed command lines exit 2 before any call.
func TestNodePairArguments(t *testing.T) {
	t.Parallel()
	b := newBench(t, "approve")
	uri := agent.PairingURI{URL: b.url, Code: qrCode, CAFingerprint: b.fp}.String()
	base := []string{"node", "pair", "--state-dir", b.dir, "--name", "n1"}
	bad := map[string][]string{
		"no code":               {"--url", b.url, "--ca-fingerprint", b.fp},
		"pin without url":       {"--pin", pin, "--ca-fingerprint", b.fp},
		"pin without trust":     {"--url", b.url, "--pin", pin},
		"both trusts":           {"--url", b.url, "--pin", pin, "--ca-fingerprint", b.fp, "--ca-file", b.caFile},
		"malformed fingerprint": {"--url", b.url, "--pin", pin, "--ca-fingerprint", "sha256:abc"},
		"missing ca file":       {"--url", b.url, "--pin", pin, "--ca-file", filepath.Join(b.dir, "none.pem")},
		"short pin":             {"--url", b.url, "--pin", "12345", "--ca-fingerprint", b.fp},
		"letters in pin":        {"--url", b.url, "--pin", "4821390x", "--ca-fingerprint", b.fp},
		"pin and qr":            {"--pin", pin, "--qr-uri", uri},
		"qr of another scheme":  {"--qr-uri", strings.Replace(uri, "palyra://", "https://", 1)},
		"qr without ca":         {"--qr-uri", "palyra://pair?url=" + url.QueryEscape(b.url) + "&code=" + qrCode},
		"qr and another url":    {"--qr-uri", uri, "--url", "https://elsewhere:7443"},
		"qr and another ca":     {"--qr-uri", uri, "--ca-fingerprint", b.otherFP},
		"http url":              {"--url", strings.Replace(b.url, "https", "http", 1), "--pin", pin, "--ca-fingerprint", b.fp},
		"bad name":              {"--url", b.url, "--pin", pin, "--ca-fingerprint", b.fp, "--name", "-x"},
		"long name":             {"--url", b.url, "--pin", pin, "--ca-fingerprint", b.fp, "--name", strings.Repeat("n", 65)},
		"an argument":           {"--url", b.url, "--pin", pin, "--ca-fingerprint", b.fp, "now"},
	}
	for name, args := range bad {
		res := b.run(t.Context(), t, append(append([]string{}, base...), args...)...)
		if res.Code != 2 {
			t.Errorf("%s: exit %d, want 2; stderr:\n%s", name, res.Code, res.Stderr)
		}
		if strings.Contains(res.Stderr, qrCode) {
			t.Errorf("%s: the error repeats the QR code: %s", name, res.Stderr)
		}
	}
	if infos, starts := b.fake.calls(); infos != 0 || len(starts) != 0 {
		t.Errorf("palyrad got %d GetServerInfo and %d StartPairing calls", infos, len(starts))
	}
	if _, err := os.Stat(b.dir); err == nil {
		t.Error("a mistaken command line created the state directory")
	}
	// The same QR URI with the same URL and pin is fine.
	res := b.run(t.Context(), t, append(append([]string{}, base...), "--qr-uri", uri, "--url", b.url, "--ca-fingerprint", b.fp)...)
	if res.Code != 0 {
		t.Errorf("--qr-uri with matching --url and --ca-fingerprint: exit %d, %s", res.Code, res.Stderr)
	}
}

// TestNodePairAgainKeepsItsProof: a node that pairs again puts its key and certificate
// aside until a request is approved, so that after a rejected (or expired) request the
// next one still proves it is the device; one without them names the device unproven,
// and says what the approver must choose.
func TestNodePairAgainKeepsItsProof(t *testing.T) {
	t.Parallel()
	b := newBench(t, "approve")
	if res := b.run(t.Context(), t, b.pairArgs()...); res.Code != 0 {
		t.Fatalf("exit %d:\n%s", res.Code, res.Stderr)
	}
	const device = "01JD5ZJ8Q0W1X2Y3Z4A5B6C7V1"
	cert, err := agent.NewStateDir(b.dir).Certificate()
	if err != nil {
		t.Fatal(err)
	}
	b.fake.setOutcome("reject")
	if res := b.run(t.Context(), t, b.pairArgs("--force")...); res.Code != 1 {
		t.Fatalf("a rejected re-pairing: exit %d:\n%s", res.Code, res.Stderr)
	}
	if paired, _ := agent.NewStateDir(b.dir).Paired(); paired {
		t.Error("still paired with the certificate it gave up")
	}
	b.fake.setOutcome("approve")
	res := b.run(t.Context(), t, b.pairArgs()...)
	if res.Code != 0 {
		t.Fatalf("pairing again after the rejection: exit %d:\n%s", res.Code, res.Stderr)
	}
	_, starts := b.fake.calls()
	if len(starts) != 3 {
		t.Fatalf("%d StartPairing calls", len(starts))
	}
	for i, s := range starts[1:] {
		if s.GetDeviceId() != device || !bytes.Equal(s.GetDevicePossession().GetCertificate(), cert.Raw) {
			t.Errorf("start %d named %q with proof %v", i+2, s.GetDeviceId(), s.GetDevicePossession())
		}
	}
	cmdtest.WantOutput(t, "stderr", res.Stderr, "pairing again as device "+device)

	// A node that lost its key and certificate names its device without a proof.
	for _, name := range []string{agent.KeyFile, agent.CertFile} {
		if err := os.Remove(filepath.Join(b.dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	res = b.run(t.Context(), t, b.pairArgs()...)
	if res.Code != 0 {
		t.Fatalf("pairing without key: exit %d:\n%s", res.Code, res.Stderr)
	}
	_, starts = b.fake.calls()
	if last := starts[len(starts)-1]; last.GetDeviceId() != "01JD5ZJ8Q0W1X2Y3Z4A5B6C7V3" || last.GetDevicePossession() != nil {
		t.Errorf("the start without key named %q with proof %v", last.GetDeviceId(), last.GetDevicePossession())
	}
	cmdtest.WantOutput(t, "stderr", res.Stderr, "palyrad could not check that this node is device 01JD5ZJ8Q0W1X2Y3Z4A5B6C7V3",
		"--expect-fingerprint "+keyFingerprint(t, b.dir)+" --replace-device 01JD5ZJ8Q0W1X2Y3Z4A5B6C7V3")
}
