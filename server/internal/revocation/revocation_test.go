package revocation_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/palyra/palyra/gen/dbsqlc"
	"github.com/palyra/palyra/internal/eventually"
	"github.com/palyra/palyra/internal/testpki"
	"github.com/palyra/palyra/server/internal/devices"
	"github.com/palyra/palyra/server/internal/identity"
	"github.com/palyra/palyra/server/internal/notify/notifytest"
	"github.com/palyra/palyra/server/internal/revocation"
	"github.com/palyra/palyra/server/internal/store"
	"github.com/palyra/palyra/server/internal/store/storetest"
	"github.com/palyra/palyra/server/internal/testclock"
)

// testBundle is a deployment on one database: its CA, the devices service that revokes,
// and a clock they share.
type testBundle struct {
	url       string
	store     *store.Store
	authority *identity.Authority
	devices   *devices.Service
	clock     *testclock.Clock
}

func setup(t *testing.T) *testBundle {
	t.Helper()
	b := &testBundle{url: storetest.URL(t), clock: testclock.New(time.Now().Truncate(time.Second))}
	s, err := store.Open(t.Context(), store.Options{URL: b.url})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	keys, _, err := identity.LoadKeyring(t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	b.store = s
	b.authority, err = identity.LoadOrCreateAuthority(t.Context(), identity.AuthorityOptions{Store: s, Keys: keys, Now: b.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	b.devices = devices.New(devices.Options{Store: s, Authority: b.authority, ReplicaID: "test", DeviceCertLifetime: 24 * time.Hour, Now: b.clock.Now})
	return b
}

// device stores a new device and issues it n certificates, each for a key of its own,
// as pairing and renewals do.
func (b *testBundle) device(t *testing.T, n int) (string, []tls.Certificate) {
	t.Helper()
	id := ulid.Make().String()
	keys := make([]*ecdsa.PrivateKey, n)
	for i := range keys {
		keys[i] = testpki.Key(t)
	}
	current, err := identity.PublicKeyFingerprint(&keys[n-1].PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.store.Q().InsertDevice(t.Context(), dbsqlc.InsertDeviceParams{
		ID: id, Name: "test-" + id, Platform: "linux", Labels: []byte("{}"), PublicKeyFingerprint: current, Now: b.clock.Now(),
	}); err != nil {
		t.Fatal(err)
	}
	var certs []tls.Certificate
	for _, key := range keys {
		issued, err := b.authority.Sign(&key.PublicKey, identity.DeviceIdentity(id), identity.Lifetime(24*time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if err := identity.Record(t.Context(), b.store, b.authority, issued, identity.KindDevice, id, "test"); err != nil {
			t.Fatal(err)
		}
		certs = append(certs, tls.Certificate{Certificate: [][]byte{issued.Certificate.Raw}, PrivateKey: key, Leaf: issued.Certificate})
	}
	return id, certs
}

// replica is the TLS listener of one palyrad replica with its revocation list, fed by a
// notification listener of its own.
type replica struct {
	list *revocation.List
	addr string
	pool *x509.CertPool

	mu      sync.Mutex // guards refused
	refused []string   // revocation.Reason of each refusal
}

// replica starts a replica: a notification listener, the list loaded and kept current,
// and a TLS listener on loopback that asks for a client certificate and lets the list
// refuse it during the handshake, as palyrad's does.
func (b *testBundle) replica(t *testing.T) *replica {
	t.Helper()
	notes := notifytest.Start(t, b.url, revocation.Channel)
	ctx, cancel := context.WithCancel(context.Background())
	var bg sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		bg.Wait()
	})
	list, err := revocation.New(revocation.Options{Store: b.store, Notify: notes, Now: b.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	if err := list.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	bg.Go(func() { list.Run(ctx) })

	key := testpki.Key(t)
	issued, err := b.authority.Sign(&key.PublicKey, identity.ServerIdentity([]string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}), identity.Lifetime(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	r := &replica{list: list, pool: b.authority.CertPool()}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{issued.Certificate.Raw}, PrivateKey: key}},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    r.pool,
		VerifyConnection: func(cs tls.ConnectionState) error {
			err := list.VerifyConnection(cs)
			if err != nil {
				r.mu.Lock()
				r.refused = append(r.refused, revocation.Reason(err))
				r.mu.Unlock()
			}
			return err
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	r.addr = ln.Addr().String()
	bg.Go(func() {
		<-ctx.Done()
		ln.Close()
	})
	bg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if c.(*tls.Conn).HandshakeContext(ctx) == nil {
					_, _ = c.Write([]byte("ok"))
				}
			}()
		}
	})
	return r
}

// handshake connects with cert and reads the replica's greeting: nil once the
// handshake passed, the refusal otherwise.
func (r *replica) handshake(cert tls.Certificate) error {
	c, err := tls.Dial("tcp", r.addr, &tls.Config{RootCAs: r.pool, ServerName: "localhost", Certificates: []tls.Certificate{cert}})
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(eventually.Deadline))
	buf := make([]byte, 2)
	_, err = c.Read(buf)
	return err
}

// lastRefusal is the reason of the replica's last refusal.
func (r *replica) lastRefusal() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.refused) == 0 {
		return ""
	}
	return r.refused[len(r.refused)-1]
}

// TestRevocationsBiteAtTheHandshakeOfEveryReplica revokes a certificate, then its
// device, through the devices service: two replicas, each told by its own NOTIFY, refuse
// what is revoked at the TLS handshake and still accept the rest.
func TestRevocationsBiteAtTheHandshakeOfEveryReplica(t *testing.T) {
	t.Parallel()
	b := setup(t)
	replicas := map[string]*replica{"A": b.replica(t), "B": b.replica(t)}
	id, certs := b.device(t, 2)
	other, otherCerts := b.device(t, 1)
	for name, r := range replicas {
		for i, c := range append(certs, otherCerts...) {
			if err := r.handshake(c); err != nil {
				t.Fatalf("replica %s refuses certificate %d before any revocation: %v", name, i, err)
			}
		}
	}

	if _, err := b.devices.RevokeCertificate(t.Context(), identity.Fingerprint(certs[0].Leaf.Raw), "lost"); err != nil {
		t.Fatal(err)
	}
	for name, r := range replicas {
		eventually.True(t, "replica "+name+" refuses the revoked certificate", func() bool { return r.handshake(certs[0]) != nil })
		if got := r.lastRefusal(); got != "certificate-revoked" {
			t.Errorf("replica %s refused the revoked certificate as %q", name, got)
		}
		if err := r.handshake(certs[1]); err != nil {
			t.Errorf("replica %s refuses the device's other certificate: %v", name, err)
		}
	}

	if _, err := b.devices.Revoke(t.Context(), id, "stolen"); err != nil {
		t.Fatal(err)
	}
	for name, r := range replicas {
		eventually.True(t, "replica "+name+" refuses the revoked device", func() bool { return r.handshake(certs[1]) != nil })
		// Revoking a device revokes its certificates too: either refusal is right.
		if got := r.lastRefusal(); got != "device-revoked" && got != "certificate-revoked" {
			t.Errorf("replica %s refused the revoked device's certificate as %q", name, got)
		}
		if err := r.list.CheckDevice(id); !errors.Is(err, revocation.ErrDeviceRevoked) {
			t.Errorf("replica %s: CheckDevice of the revoked device: %v", name, err)
		}
		if err := r.handshake(otherCerts[0]); err != nil {
			t.Errorf("replica %s refuses device %s, which nobody revoked: %v", name, other, err)
		}
	}
}

// TestARotatedCertificateIsRefusedWhenItsGraceEnds rotates a device: its certificate
// stays valid through the grace period and is refused from its end, by the list's clock.
func TestARotatedCertificateIsRefusedWhenItsGraceEnds(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r := b.replica(t)
	id, certs := b.device(t, 1)
	const grace = time.Hour
	if _, err := b.devices.Rotate(t.Context(), id, grace); err != nil {
		t.Fatal(err)
	}
	// The rotation is in the list once it has been reloaded on its notification: seen
	// by asking, for a moment, about the end of the grace period.
	eventually.True(t, "the scheduled revocation in the list", func() bool {
		b.clock.Advance(grace)
		defer b.clock.Advance(-grace)
		_, err := r.list.Check(certs[0].Leaf)
		return errors.Is(err, revocation.ErrCertificateRevoked)
	})
	if _, err := r.list.Check(certs[0].Leaf); err != nil {
		t.Errorf("within the grace period: %v", err)
	}
	if err := r.handshake(certs[0]); err != nil {
		t.Errorf("the handshake within the grace period: %v", err)
	}
	b.clock.Advance(grace)
	if err := r.handshake(certs[0]); err == nil || r.lastRefusal() != "certificate-revoked" {
		t.Errorf("the handshake at the end of the grace period: %v, refused as %q", err, r.lastRefusal())
	}
	if _, err := r.list.Check(certs[0].Leaf); !errors.Is(err, revocation.ErrCertificateRevoked) {
		t.Errorf("Check at the end of the grace period: %v", err)
	}
}

// TestACertificateWithoutADeviceIsRefused: a certificate of the CA that names no
// device (a server's) is not a client.
func TestACertificateWithoutADeviceIsRefused(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r := b.replica(t)
	key := testpki.Key(t)
	issued, err := b.authority.Sign(&key.PublicKey, identity.ServerIdentity([]string{"localhost"}, nil), identity.Lifetime(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.list.Check(issued.Certificate); !errors.Is(err, revocation.ErrNotDevice) || revocation.Reason(err) != "not-a-device" {
		t.Errorf("Check of a server certificate: %v (%s)", err, revocation.Reason(err))
	}
}
