package daemon_test

import (
	"context"
	"crypto/tls"
	"net"
	"testing"
	"time"

	"connectrpc.com/connect"

	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	"github.com/palyra/palyra/gen/go/palyra/controlplane/v1/controlplanev1connect"
)

// resume opens a TLS connection to td with cert, resuming a session of sessions when it
// can, and returns the server's verdict (as handshake) and whether the session resumed.
// The read that gets the verdict also takes the server's new session ticket.
func (td *testDaemon) resume(cert tls.Certificate, sessions tls.ClientSessionCache) (resumed bool, err error) {
	d := &net.Dialer{Timeout: 5 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", td.Addr().String(), &tls.Config{RootCAs: td.roots, ServerName: "localhost",
		NextProtos: []string{"h2"}, ClientSessionCache: sessions,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }})
	if err != nil {
		return false, err
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(time.Minute))
	if _, err := conn.Read(make([]byte, 1)); err != nil {
		return false, err
	}
	return conn.ConnectionState().DidResume, nil
}

// TestTLSSessionsResumeAcrossReplicasAndRestarts checks that a node's TLS session,
// established with one replica, resumes on another replica and on a restarted one (their
// ticket keys derive from the shared master key), and that a resumption is refused once
// the device is revoked.
func TestTLSSessionsResumeAcrossReplicasAndRestarts(t *testing.T) {
	t.Parallel()
	a := startAccess(t)
	b := a.startReplica(t)
	dev := a.enroll(t, time.Hour)
	sessions := tls.NewLRUClientSessionCache(1)
	step := func(name string, td *testDaemon, want bool) {
		t.Helper()
		resumed, err := td.resume(dev.cert, sessions)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if resumed != want {
			t.Fatalf("%s: DidResume %v, want %v", name, resumed, want)
		}
	}
	step("the first connection", a.testDaemon, false)
	step("again to the same replica", a.testDaemon, true)
	step("to another replica", b, true)

	dataDir := b.cfg.DataDir
	b.stop(t)
	restarted := startDaemon(t, "--database-url", a.dbURL, "--data-dir", dataDir)
	step("to the restarted replica", restarted, true)

	devices := controlplanev1connect.NewDeviceServiceClient(a.h2, a.baseURL)
	if _, err := devices.RevokeDevice(context.Background(), connect.NewRequest(&controlplanev1.RevokeDeviceRequest{Id: dev.deviceID, Reason: "lost"})); err != nil {
		t.Fatal(err)
	}
	waitRefused(t, restarted, dev.cert)
	if resumed, err := restarted.resume(dev.cert, sessions); err == nil {
		t.Fatalf("a resumption after the device's revocation was accepted (DidResume %v)", resumed)
	}
}
