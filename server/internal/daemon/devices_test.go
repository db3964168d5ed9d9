package daemon_test

import (
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/oklog/ulid/v2"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/palyra/palyra/gen/dbsqlc"
	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	"github.com/palyra/palyra/gen/go/palyra/controlplane/v1/controlplanev1connect"
	nodev1 "github.com/palyra/palyra/gen/go/palyra/node/v1"
	"github.com/palyra/palyra/gen/go/palyra/node/v1/nodev1connect"
	"github.com/palyra/palyra/internal/eventually"
	"github.com/palyra/palyra/internal/testpki"
	"github.com/palyra/palyra/server/internal/identity"
	"github.com/palyra/palyra/server/internal/store"
	"github.com/palyra/palyra/server/internal/store/storetest"
)

// enrolled is a device certificate issued by the daemon's CA outside the pairing flow,
// the way a bulk enrolment would: same CA, same policy, same records.
type enrolled struct {
	deviceID string
	key      *ecdsa.PrivateKey
	cert     tls.Certificate
	leaf     *x509.Certificate
}

// enroll registers a device and issues it a certificate valid for lifetime.
func (b *accessBundle) enroll(t *testing.T, lifetime time.Duration) *enrolled {
	t.Helper()
	ctx := t.Context()
	s, err := store.Open(ctx, store.Options{URL: b.dbURL})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	keys, _, err := identity.LoadKeyring(b.cfg.DataDir, "")
	if err != nil {
		t.Fatal(err)
	}
	authority, err := identity.LoadOrCreateAuthority(ctx, identity.AuthorityOptions{Store: s, Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	key := testpki.Key(t)
	keyFP, _ := identity.PublicKeyFingerprint(&key.PublicKey)
	id := ulid.Make().String()
	issued, err := authority.Sign(&key.PublicKey, identity.DeviceIdentity(id), identity.Lifetime(lifetime))
	if err != nil {
		t.Fatal(err)
	}
	err = s.InTx(ctx, func(tx *store.Tx) error {
		if _, err := tx.Q().InsertDevice(ctx, dbsqlc.InsertDeviceParams{
			ID: id, Name: "test-node", Platform: "linux/amd64", AgentVersion: "test", Labels: []byte("{}"),
			PublicKeyFingerprint: keyFP, Now: time.Now(),
		}); err != nil {
			return err
		}
		return identity.Record(ctx, tx, authority, issued, identity.KindDevice, id, "test")
	})
	if err != nil {
		t.Fatal(err)
	}
	return &enrolled{
		deviceID: id, key: key, leaf: issued.Certificate,
		cert: tls.Certificate{Certificate: [][]byte{issued.Certificate.Raw}, PrivateKey: key, Leaf: issued.Certificate},
	}
}

// mtls returns an HTTP/2 client presenting the device certificate.
func (td *testDaemon) mtls(cert tls.Certificate) *http.Client {
	return &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: td.roots, ServerName: "localhost",
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }},
		ForceAttemptHTTP2: true,
	}}
}

// handshake opens a TLS connection with cert and returns the server's verdict, which
// under TLS 1.3 arrives with the first read: the server's HTTP/2 settings, or an alert.
// Only a server silent for a minute counts as accepting without them: a busy machine
// may take its time to refuse.
func (td *testDaemon) handshake(cert tls.Certificate) error { return td.handshakeFrom(nil, cert) }

// handshakeFrom is handshake from the local address ip (nil: any); a zero cert sends
// none.
func (td *testDaemon) handshakeFrom(ip net.IP, cert tls.Certificate) error {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}, Timeout: 5 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", td.Addr().String(), &tls.Config{RootCAs: td.roots, ServerName: "localhost",
		NextProtos:           []string{"h2"},
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }})
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(time.Minute))
	_, err = conn.Read(make([]byte, 1))
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return nil // nothing to read and no alert: accepted
	}
	return err
}

func csrFor(t *testing.T, key *ecdsa.PrivateKey, extra func(*x509.CertificateRequest)) []byte {
	t.Helper()
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: "node"}}
	if extra != nil {
		extra(tmpl)
	}
	return testpki.CSR(t, key, tmpl)
}

func TestRenewCertificate(t *testing.T) {
	t.Parallel()
	b := startAccess(t)
	dev := b.enroll(t, time.Hour)
	other := b.enroll(t, time.Hour)
	node := nodev1connect.NewNodeServiceClient(b.mtls(dev.cert), b.baseURL)
	newKey := testpki.Key(t)

	res, err := node.RenewCertificate(t.Context(), connect.NewRequest(&nodev1.RenewCertificateRequest{
		DeviceId: dev.deviceID,
		Csr: csrFor(t, newKey, func(r *x509.CertificateRequest) {
			r.DNSNames = []string{"evil.example.com"} // asked for, never granted
		}),
	}))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode([]byte(res.Msg.GetCertificatePem()))
	renewed, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if id, ok := identity.DeviceID(renewed); !ok || id != dev.deviceID || len(renewed.DNSNames) != 0 ||
		!renewed.PublicKey.(*ecdsa.PublicKey).Equal(&newKey.PublicKey) || res.Msg.GetFingerprint() != identity.Fingerprint(renewed.Raw) {
		t.Errorf("renewed certificate: device %q, DNS %v", id, renewed.DNSNames)
	}
	if _, err := renewed.Verify(x509.VerifyOptions{Roots: b.roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("renewed certificate does not verify for client auth: %v", err)
	}
	if renewed.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth || len(renewed.ExtKeyUsage) != 1 {
		t.Errorf("EKU %v", renewed.ExtKeyUsage)
	}

	_, err = node.RenewCertificate(t.Context(), connect.NewRequest(&nodev1.RenewCertificateRequest{DeviceId: other.deviceID, Csr: csrFor(t, newKey, nil)}))
	wantCode(t, "device A's certificate renewing device B", err, connect.CodePermissionDenied)

	badSignature := csrFor(t, newKey, nil)
	badSignature[len(badSignature)-5] ^= 0xff
	_, err = node.RenewCertificate(t.Context(), connect.NewRequest(&nodev1.RenewCertificateRequest{DeviceId: dev.deviceID, Csr: badSignature}))
	wantCode(t, "CSR with a bad signature", err, connect.CodeInvalidArgument)

	anonymous := nodev1connect.NewNodeServiceClient(b.client(""), b.baseURL)
	_, err = anonymous.RenewCertificate(t.Context(), connect.NewRequest(&nodev1.RenewCertificateRequest{DeviceId: dev.deviceID, Csr: csrFor(t, newKey, nil)}))
	wantCode(t, "renewal without a client certificate", err, connect.CodeUnauthenticated)

	if err := b.handshake(foreignClientCertificate(t)); err == nil {
		t.Error("a foreign client certificate passed the handshake")
	}
	// An expired certificate is refused by the listener's clock: controlplane's
	// TestClientCertificatesExpireByTheListenersClock.
}

// TestRevocationBitesOnEveryReplica revokes a device through one replica: the other,
// told by the revocation's NOTIFY, refuses its certificate at the handshake and closes
// the connection it had open. It must have received the notification by the time it
// refuses (a lost one would otherwise go unseen behind the list's 30-second
// safety-net reload). How soon is BenchmarkRevocation's to measure (BENCHMARKS.md): it
// times the same reload of the list, which refuses the certificate before it closes
// the connections.
func TestRevocationBitesOnEveryReplica(t *testing.T) {
	t.Parallel()
	a := startAccess(t)
	var logsB lockedBuffer
	b := a.startReplicaLogging(t, io.MultiWriter(t.Output(), &logsB))
	dev := a.enroll(t, time.Hour)
	for name, td := range map[string]*testDaemon{"A": a.testDaemon, "B": b} {
		if err := td.handshake(dev.cert); err != nil {
			t.Fatalf("replica %s refuses a valid device certificate: %v", name, err)
		}
	}
	// A connection to B, open before the revocation.
	onB := nodev1connect.NewNodeServiceClient(b.mtls(dev.cert), b.baseURL)
	newKey := testpki.Key(t)
	if _, err := onB.RenewCertificate(t.Context(), connect.NewRequest(&nodev1.RenewCertificateRequest{DeviceId: dev.deviceID, Csr: csrFor(t, newKey, nil)})); err != nil {
		t.Fatalf("renewal before the revocation: %v", err)
	}

	devicesOnA := controlplanev1connect.NewDeviceServiceClient(a.h2, a.baseURL)
	revokedAt := time.Now()
	if _, err := devicesOnA.RevokeDevice(t.Context(), connect.NewRequest(&controlplanev1.RevokeDeviceRequest{Id: dev.deviceID, Reason: "lost"})); err != nil {
		t.Fatal(err)
	}
	waitRefused(t, b, dev.cert)
	t.Logf("replica B refused the revoked device at the handshake %v after the revocation on A", time.Since(revokedAt))
	if !notified(&logsB, deviceNotice(dev)) {
		t.Error("replica B refused the revoked device before it received the revocation by NOTIFY")
	}
	// The connection opened before the revocation is closed, or at least refused.
	_, err := onB.RenewCertificate(t.Context(), connect.NewRequest(&nodev1.RenewCertificateRequest{DeviceId: dev.deviceID, Csr: csrFor(t, newKey, nil)}))
	if err == nil {
		t.Error("the connection opened before the revocation still renews")
	}
	waitRefused(t, a.testDaemon, dev.cert) // A, told by its own notification
	got, err := devicesOnA.GetDevice(t.Context(), connect.NewRequest(&controlplanev1.GetDeviceRequest{Id: dev.deviceID}))
	if err != nil {
		t.Fatal(err)
	}
	if got.Msg.GetDevice().GetRevokeTime() == nil || got.Msg.GetDevice().GetRevokeReason() != "lost" || len(got.Msg.GetDevice().GetCertificates()) != 2 {
		t.Errorf("device after revocation: %v", got.Msg.GetDevice())
	}
	for _, c := range got.Msg.GetDevice().GetCertificates() {
		if c.GetRevokeTime() == nil {
			t.Errorf("certificate %s of the revoked device is not revoked", c.GetFingerprint())
		}
	}
	_, err = devicesOnA.RevokeDevice(t.Context(), connect.NewRequest(&controlplanev1.RevokeDeviceRequest{Id: dev.deviceID, Reason: "again"}))
	wantCode(t, "revoking a revoked device", err, connect.CodeFailedPrecondition)
	_, err = devicesOnA.RevokeDevice(t.Context(), connect.NewRequest(&controlplanev1.RevokeDeviceRequest{Id: ulid.Make().String(), Reason: "x"}))
	wantCode(t, "revoking an unknown device", err, connect.CodeNotFound)
}

func TestRevokeCertificateAndRotation(t *testing.T) {
	t.Parallel()
	b := startAccess(t)
	devices := controlplanev1connect.NewDeviceServiceClient(b.h2, b.baseURL)
	ctx := t.Context()

	t.Run("revoking one certificate", func(t *testing.T) {
		dev := b.enroll(t, time.Hour)
		fp := identity.Fingerprint(dev.leaf.Raw)
		res, err := devices.RevokeCertificate(ctx, connect.NewRequest(&controlplanev1.RevokeCertificateRequest{Fingerprint: fp, Reason: "leaked"}))
		if err != nil || res.Msg.GetDeviceId() != dev.deviceID {
			t.Fatalf("revoke certificate: %v, %v", res, err)
		}
		waitRefused(t, b.testDaemon, dev.cert)
		_, err = devices.RevokeCertificate(ctx, connect.NewRequest(&controlplanev1.RevokeCertificateRequest{Fingerprint: fp, Reason: "again"}))
		wantCode(t, "revoking it twice", err, connect.CodeFailedPrecondition)
	})

	t.Run("rotation revokes the current certificate after the grace period", func(t *testing.T) {
		dev := b.enroll(t, time.Hour)
		// Ten seconds of grace: the handshake and the renewal below must fall in it, on
		// a busy machine too.
		_, err := devices.RotateDeviceCertificate(ctx, connect.NewRequest(&controlplanev1.RotateDeviceCertificateRequest{Id: dev.deviceID, Grace: durationpb.New(10 * time.Second)}))
		if err != nil {
			t.Fatal(err)
		}
		// During the grace period the node renews with a new key...
		if err := b.handshake(dev.cert); err != nil {
			t.Fatalf("refused during the grace period: %v", err)
		}
		newKey := testpki.Key(t)
		res, err := nodev1connect.NewNodeServiceClient(b.mtls(dev.cert), b.baseURL).RenewCertificate(ctx,
			connect.NewRequest(&nodev1.RenewCertificateRequest{DeviceId: dev.deviceID, Csr: csrFor(t, newKey, nil)}))
		if err != nil {
			t.Fatal(err)
		}
		block, _ := pem.Decode([]byte(res.Msg.GetCertificatePem()))
		renewed := tls.Certificate{Certificate: [][]byte{block.Bytes}, PrivateKey: newKey}
		// ...and after it the old certificate is refused, the new one is not.
		waitRefused(t, b.testDaemon, dev.cert)
		if err := b.handshake(renewed); err != nil {
			t.Errorf("the renewed certificate is refused after the rotation: %v", err)
		}
		got, _ := devices.GetDevice(ctx, connect.NewRequest(&controlplanev1.GetDeviceRequest{Id: dev.deviceID}))
		if got.Msg.GetDevice().GetRotateTime() != nil {
			t.Error("the rotation request is still pending after the renewal")
		}
	})
}

// waitRefused waits until the daemon refuses cert at the handshake; how soon a
// revocation bites is measured in bench/.
func waitRefused(t *testing.T, td *testDaemon, cert tls.Certificate) {
	t.Helper()
	eventually.True(t, "the certificate refused at the handshake", func() bool { return td.handshake(cert) != nil })
}

// notified reports whether the daemon that logged logs received what ("device:ID" or
// "certificate:FINGERPRINT") on the revocation channel. Revocations must bite through
// that notification; the list's safety-net reload (every 30 s) would hide its loss.
func notified(logs *lockedBuffer, what string) bool {
	for line := range strings.Lines(logs.String()) {
		if strings.Contains(line, `msg="revocation received"`) && strings.Contains(line, what) {
			return true
		}
	}
	return false
}

// deviceNotice is the notification of dev's revocation.
func deviceNotice(dev *enrolled) string { return "device:" + dev.deviceID }

// TestRequireMTLSOff: with require_mtls off (development only) a device that names
// itself in the X-Palyra-Device-Id header proves nothing, so it gets no certificate:
// RenewCertificate is refused and nothing is issued, which would otherwise outlive the
// development mode (issue 10, item 5). A revoked device stays refused too.
func TestRequireMTLSOff(t *testing.T) {
	t.Parallel()
	dbURL := storetest.URL(t)
	b := &accessBundle{testDaemon: startDaemon(t, "--database-url", dbURL, "--data-dir", t.TempDir(), "--require-mtls=false"), dbURL: dbURL}
	dev := b.enroll(t, time.Hour)
	anonymous := nodev1connect.NewNodeServiceClient(b.client(""), b.baseURL)
	newKey := testpki.Key(t)
	renew := func() error {
		req := connect.NewRequest(&nodev1.RenewCertificateRequest{DeviceId: dev.deviceID, Csr: csrFor(t, newKey, nil)})
		req.Header().Set("X-Palyra-Device-Id", dev.deviceID)
		_, err := anonymous.RenewCertificate(t.Context(), req)
		return err
	}
	wantCode(t, "renewal by a device named in the header", renew(), connect.CodeUnauthenticated)
	_, err := anonymous.RenewCertificate(t.Context(), connect.NewRequest(&nodev1.RenewCertificateRequest{DeviceId: dev.deviceID, Csr: csrFor(t, newKey, nil)}))
	wantCode(t, "renewal naming no device", err, connect.CodeUnauthenticated)
	devices := controlplanev1connect.NewDeviceServiceClient(b.h2, b.baseURL)
	got, err := devices.GetDevice(t.Context(), connect.NewRequest(&controlplanev1.GetDeviceRequest{Id: dev.deviceID}))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(got.Msg.GetDevice().GetCertificates()); n != 1 {
		t.Errorf("the device has %d certificates after the refused renewals, want its one", n)
	}
	// Over mutual TLS the same device renews, development mode or not.
	if _, err := nodev1connect.NewNodeServiceClient(b.mtls(dev.cert), b.baseURL).RenewCertificate(t.Context(),
		connect.NewRequest(&nodev1.RenewCertificateRequest{DeviceId: dev.deviceID, Csr: csrFor(t, newKey, nil)})); err != nil {
		t.Fatalf("renewal over mutual TLS with require_mtls off: %v", err)
	}
	if _, err := devices.RevokeDevice(t.Context(), connect.NewRequest(&controlplanev1.RevokeDeviceRequest{Id: dev.deviceID, Reason: "test"})); err != nil {
		t.Fatal(err)
	}
	wantCode(t, "renewal by a revoked device named in the header", renew(), connect.CodeUnauthenticated)
}

// TestOnlyTheNewestCertificateRenews: after a rotation, the rotated certificate keeps
// working during the grace period but cannot renew once the device has renewed, so a
// stolen certificate cannot outlive the rotation meant to end it (issue 10, item 13). A
// node whose answer was lost retries from the old certificate with the key it asked a
// certificate for, and gets one.
func TestOnlyTheNewestCertificateRenews(t *testing.T) {
	t.Parallel()
	b := startAccess(t)
	ctx := t.Context()
	devices := controlplanev1connect.NewDeviceServiceClient(b.h2, b.baseURL)
	dev := b.enroll(t, time.Hour)
	if _, err := devices.RotateDeviceCertificate(ctx, connect.NewRequest(&controlplanev1.RotateDeviceCertificateRequest{
		Id: dev.deviceID, Grace: durationpb.New(time.Hour)})); err != nil {
		t.Fatal(err)
	}
	renew := func(cert tls.Certificate, key *ecdsa.PrivateKey) (tls.Certificate, error) {
		res, err := nodev1connect.NewNodeServiceClient(b.mtls(cert), b.baseURL).RenewCertificate(ctx,
			connect.NewRequest(&nodev1.RenewCertificateRequest{DeviceId: dev.deviceID, Csr: csrFor(t, key, nil)}))
		if err != nil {
			return tls.Certificate{}, err
		}
		block, _ := pem.Decode([]byte(res.Msg.GetCertificatePem()))
		return tls.Certificate{Certificate: [][]byte{block.Bytes}, PrivateKey: key}, nil
	}
	keyB := testpki.Key(t)
	certB, err := renew(dev.cert, keyB)
	if err != nil {
		t.Fatalf("renewal with the rotated certificate before any other: %v", err)
	}
	// The rotated certificate still connects (grace period) but renews no more.
	if err := b.handshake(dev.cert); err != nil {
		t.Fatalf("the rotated certificate is refused during its grace period: %v", err)
	}
	thief := testpki.Key(t)
	_, err = renew(dev.cert, thief)
	wantCode(t, "renewal with the rotated certificate after the device renewed", err, connect.CodePermissionDenied)
	// The node whose answer was lost asks again for the key it asked for: that works.
	if _, err := renew(dev.cert, keyB); err != nil {
		t.Errorf("the retry of a renewal for the device's current key: %v", err)
	}
	// The newest certificate renews.
	keyC := testpki.Key(t)
	if _, err := renew(certB, keyC); err != nil {
		t.Errorf("renewal with the newest certificate: %v", err)
	}
	_, err = renew(certB, thief)
	wantCode(t, "renewal with a superseded certificate", err, connect.CodePermissionDenied)
	got, err := devices.GetDevice(ctx, connect.NewRequest(&controlplanev1.GetDeviceRequest{Id: dev.deviceID}))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(got.Msg.GetDevice().GetCertificates()); n != 4 {
		t.Errorf("the device has %d certificates, want 4 (enrolled, renewed, renewed again for the same key, renewed)", n)
	}
}
