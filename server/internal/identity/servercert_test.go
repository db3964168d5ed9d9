package identity_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/palyra/palyra/internal/eventually"
	"github.com/palyra/palyra/internal/testpki"
	"github.com/palyra/palyra/server/internal/identity"
)

// serverLifetime is the validity of the test server certificates.
const serverLifetime = 24 * time.Hour

// newServerCertificate issues the bundle's server certificate for localhost and the
// given addresses, on the bundle's clock.
func (b *testBundle) newServerCertificate(t *testing.T, replica string, dnsNames []string, ips []net.IP) *identity.ServerCertificate {
	t.Helper()
	sc, err := identity.NewServerCertificate(t.Context(), identity.ServerCertificateOptions{
		Authority: b.authority,
		Store:     b.store,
		ReplicaID: replica,
		DNSNames:  dnsNames,
		IPs:       ips,
		Lifetime:  serverLifetime,
	})
	if err != nil {
		t.Fatalf("new server certificate: %v", err)
	}
	return sc
}

var loopback = []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")}

// checkRecorded checks that leaf has its row in issued_certificates.
func (b *testBundle) checkRecorded(t *testing.T, leaf *x509.Certificate, replica string) {
	t.Helper()
	row, err := b.store.Q().GetIssuedCertificate(t.Context(), identity.Fingerprint(leaf.Raw))
	if err != nil {
		t.Fatalf("issued certificate %x not recorded: %v", leaf.SerialNumber, err)
	}
	ips := make([]string, len(leaf.IPAddresses))
	for i, ip := range leaf.IPAddresses {
		ips[i] = ip.String()
	}
	switch {
	case row.Kind != "server":
		t.Errorf("recorded kind %q, want server", row.Kind)
	case row.AuthorityID != b.authority.ID():
		t.Errorf("recorded authority %s, want %s", row.AuthorityID, b.authority.ID())
	case row.IssuedByReplica != replica:
		t.Errorf("recorded replica %q, want %q", row.IssuedByReplica, replica)
	case row.Serial != hex.EncodeToString(leaf.SerialNumber.Bytes()):
		t.Errorf("recorded serial %s, certificate %x", row.Serial, leaf.SerialNumber)
	case row.Subject != leaf.Subject.String():
		t.Errorf("recorded subject %q, certificate %q", row.Subject, leaf.Subject)
	case !slices.Equal(row.DnsNames, leaf.DNSNames) || !slices.Equal(row.IpAddresses, ips) || len(row.Uris) != 0:
		t.Errorf("recorded names %v %v %v, certificate %v %v", row.DnsNames, row.IpAddresses, row.Uris, leaf.DNSNames, ips)
	case !row.NotBefore.Equal(leaf.NotBefore) || !row.NotAfter.Equal(leaf.NotAfter):
		t.Errorf("recorded validity %v..%v, certificate %v..%v", row.NotBefore, row.NotAfter, leaf.NotBefore, leaf.NotAfter)
	}
}

func TestNewServerCertificate(t *testing.T) {
	t.Parallel()
	b := setup(t)
	sc := b.newServerCertificate(t, "replica-a", []string{"localhost"}, loopback)

	c, err := sc.GetCertificate(&tls.ClientHelloInfo{ServerName: "localhost"})
	if err != nil || c == nil {
		t.Fatalf("GetCertificate: %v, %v", c, err)
	}
	if len(c.Certificate) != 2 || !slices.Equal(c.Certificate[0], c.Leaf.Raw) ||
		!slices.Equal(c.Certificate[1], b.authority.Certificate().Raw) {
		t.Fatalf("chain of %d certificates, want [leaf, CA root]", len(c.Certificate))
	}
	if sc.Leaf() != c.Leaf {
		t.Error("Leaf() is not the certificate GetCertificate serves")
	}
	key, ok := c.PrivateKey.(*ecdsa.PrivateKey)
	if !ok || !key.PublicKey.Equal(c.Leaf.PublicKey) {
		t.Errorf("private key %T does not match the leaf", c.PrivateKey)
	}
	leaf := c.Leaf
	if !slices.Equal(leaf.DNSNames, []string{"localhost"}) || !slices.EqualFunc(leaf.IPAddresses, loopback, net.IP.Equal) {
		t.Errorf("names %v %v", leaf.DNSNames, leaf.IPAddresses)
	}
	if want := testEpoch.Add(serverLifetime); !leaf.NotAfter.Equal(want) {
		t.Errorf("NotAfter %v, want %v", leaf.NotAfter, want)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		DNSName: "localhost", Roots: b.authority.CertPool(), CurrentTime: testEpoch,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}); err != nil {
		t.Errorf("leaf does not verify: %v", err)
	}
	b.checkRecorded(t, leaf, "replica-a")
}

// A certificate for addresses only (no DNS name) is issued and recorded too.
func TestNewServerCertificateAddressesOnly(t *testing.T) {
	t.Parallel()
	b := setup(t)
	sc := b.newServerCertificate(t, "replica-ip", nil, loopback)
	if len(sc.Leaf().DNSNames) != 0 || !slices.EqualFunc(sc.Leaf().IPAddresses, loopback, net.IP.Equal) {
		t.Errorf("names %v %v, want the addresses only", sc.Leaf().DNSNames, sc.Leaf().IPAddresses)
	}
	b.checkRecorded(t, sc.Leaf(), "replica-ip")
}

func TestNewServerCertificateRefusedByPolicy(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, err := identity.NewServerCertificate(t.Context(), identity.ServerCertificateOptions{
		Authority: b.authority, Store: b.store, ReplicaID: "replica-a",
		Lifetime: serverLifetime,
	})
	if !errors.Is(err, identity.ErrPolicy) {
		t.Fatalf("no names: %v, want ErrPolicy", err)
	}
	var n int
	if err := b.store.Pool().QueryRow(t.Context(), "select count(*) from issued_certificates").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("%d certificates recorded for a refusal", n)
	}
}

func TestServerCertificateRenew(t *testing.T) {
	t.Parallel()
	b := setup(t)
	sc := b.newServerCertificate(t, "replica-a", []string{"localhost"}, loopback)
	old := sc.Leaf()

	b.clock.Advance(16 * time.Hour)
	if err := sc.Renew(t.Context()); err != nil {
		t.Fatalf("renew: %v", err)
	}
	renewed, err := sc.GetCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	if renewed.Leaf.SerialNumber.Cmp(old.SerialNumber) == 0 || slices.Equal(renewed.Leaf.Raw, old.Raw) {
		t.Fatal("renewal kept the old certificate")
	}
	if sc.Leaf() != renewed.Leaf {
		t.Error("Leaf() is not the renewed certificate")
	}
	if oldKey, _ := old.PublicKey.(*ecdsa.PublicKey); oldKey.Equal(renewed.Leaf.PublicKey) {
		t.Error("renewal reused the old key")
	}
	if want := b.clock.Now().Add(serverLifetime); !renewed.Leaf.NotAfter.Equal(want) {
		t.Errorf("renewed NotAfter %v, want %v", renewed.Leaf.NotAfter, want)
	}
	if !slices.Equal(renewed.Certificate[1], b.authority.Certificate().Raw) {
		t.Error("renewed chain does not end with the CA root")
	}
	b.checkRecorded(t, old, "replica-a")
	b.checkRecorded(t, renewed.Leaf, "replica-a")
}

func TestServerCertificateUntilRenewal(t *testing.T) {
	t.Parallel()
	b := setup(t)
	sc := b.newServerCertificate(t, "replica-a", []string{"localhost"}, nil)
	leaf := sc.Leaf()
	// The schedule is relative to the certificate's whole validity, backdating included.
	life := leaf.NotAfter.Sub(leaf.NotBefore)

	// Renewal comes with between a third and a third plus a twentieth of the life left:
	// the twentieth is random, so ask several times.
	for range 50 {
		wait := sc.UntilRenewal()
		left := leaf.NotAfter.Sub(b.clock.Now().Add(wait))
		if left < life/3 || left > life/3+life/20 {
			t.Fatalf("renewal after %v leaves %v of %v, want between %v and %v", wait, left, life, life/3, life/3+life/20)
		}
	}

	// Once the point is reached (or the certificate expired), renewal is due now.
	for _, at := range []time.Time{leaf.NotAfter.Add(-life / 3), leaf.NotAfter, leaf.NotAfter.Add(time.Hour)} {
		b.clock.Set(at)
		if wait := sc.UntilRenewal(); wait != 0 {
			t.Errorf("at %v: renewal in %v, want now", at, wait)
		}
	}
}

func TestServerCertificateRunStopsWhenCancelled(t *testing.T) {
	t.Parallel()
	b := setup(t)
	sc := b.newServerCertificate(t, "replica-a", []string{"localhost"}, nil)
	old := sc.Leaf()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	sc.Run(ctx) // returns, or the test times out
	if sc.Leaf() != old {
		t.Error("Run renewed with a cancelled context")
	}
}

func TestServerCertificateRunRenewsWhenDue(t *testing.T) {
	t.Parallel()
	b := setup(t)
	sc := b.newServerCertificate(t, "replica-run", []string{"localhost"}, nil)
	old := sc.Leaf()
	// Past the renewal point: Run renews at once, then waits for the next one.
	b.clock.Set(old.NotAfter.Add(-old.NotAfter.Sub(old.NotBefore) / 4))

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc.Run(ctx)
	}()
	eventually.True(t, "the renewal", func() bool { return sc.Leaf() != old })
	cancel()
	<-done

	renewed := sc.Leaf()
	if !renewed.NotAfter.Equal(b.clock.Now().Add(serverLifetime)) {
		t.Errorf("renewed NotAfter %v, want %v", renewed.NotAfter, b.clock.Now().Add(serverLifetime))
	}
	b.checkRecorded(t, renewed, "replica-run")
	// One renewal, not a loop: the new certificate is not due yet.
	var n int
	if err := b.store.Pool().QueryRow(t.Context(),
		"select count(*) from issued_certificates where issued_by_replica = $1", "replica-run").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Errorf("%d certificates issued, want the first and one renewal", n)
	}
}

// handshake runs a TLS handshake over loopback TCP between a server using sc and a
// client with cfg; it returns the client's view.
func handshake(t *testing.T, sc *identity.ServerCertificate, cfg *tls.Config) (tls.ConnectionState, error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	serverErr := make(chan error, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			serverErr <- err
			return
		}
		defer conn.Close()
		srv := tls.Server(conn, &tls.Config{GetCertificate: sc.GetCertificate, MinVersion: tls.VersionTLS12})
		serverErr <- srv.HandshakeContext(t.Context())
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	client := tls.Client(raw, cfg)
	err = client.HandshakeContext(t.Context())
	state := client.ConnectionState()
	_ = raw.Close() // unblocks the server if the client gave up
	if serr := <-serverErr; err == nil && serr != nil {
		t.Errorf("server side of a successful handshake: %v", serr)
	}
	return state, err
}

// otherRoot returns a pool with a self-signed root that did not sign anything of ours.
func otherRoot(t *testing.T) *x509.CertPool {
	t.Helper()
	return testpki.NewCA(t, "Someone Else's Root", testEpoch.Add(-time.Hour), testEpoch.Add(365*24*time.Hour)).Pool
}

func TestServerCertificateTLSHandshake(t *testing.T) {
	t.Parallel()
	b := setup(t)
	sc := b.newServerCertificate(t, "replica-a", []string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")})
	roots := b.authority.CertPool()

	cases := map[string]struct {
		serverName string
		roots      *x509.CertPool
		now        time.Time
		maxVersion uint16
		// refused reports whether err is the expected refusal; nil: the handshake succeeds.
		refused func(err error) bool
	}{
		"localhost":                 {serverName: "localhost", roots: roots, now: testEpoch},
		"loopback address":          {serverName: "127.0.0.1", roots: roots, now: testEpoch},
		"TLS 1.2":                   {serverName: "localhost", roots: roots, now: testEpoch, maxVersion: tls.VersionTLS12},
		"name not in certificate":   {serverName: "palyra.example", roots: roots, now: testEpoch, refused: isA[x509.HostnameError]},
		"client trusting another":   {serverName: "localhost", roots: otherRoot(t), now: testEpoch, refused: isA[x509.UnknownAuthorityError]},
		"client clock after expiry": {serverName: "localhost", roots: roots, now: testEpoch.Add(serverLifetime + time.Minute), refused: isA[x509.CertificateInvalidError]},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			state, err := handshake(t, sc, &tls.Config{
				ServerName: tc.serverName,
				RootCAs:    tc.roots,
				Time:       func() time.Time { return tc.now },
				MinVersion: tls.VersionTLS12,
				MaxVersion: tc.maxVersion,
			})
			if tc.refused != nil {
				if err == nil {
					t.Fatal("handshake succeeded")
				}
				if !tc.refused(err) {
					t.Errorf("handshake failed with %v (%T), not the expected refusal", err, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
			if tc.maxVersion != 0 && state.Version != tc.maxVersion {
				t.Errorf("negotiated version %x, want %x", state.Version, tc.maxVersion)
			}
			if len(state.PeerCertificates) != 2 || !state.PeerCertificates[0].Equal(sc.Leaf()) {
				t.Fatal("the server did not present [leaf, root] with the current leaf")
			}
			chain := state.VerifiedChains
			if len(chain) != 1 || !chain[0][len(chain[0])-1].Equal(b.authority.Certificate()) {
				t.Error("the verified chain does not end at the CA root")
			}
		})
	}
}

// isA reports whether err has an error of type T in its chain.
func isA[T error](err error) bool {
	var target T
	return errors.As(err, &target)
}

// After a renewal, new connections get the new certificate from the same callback.
func TestServerCertificateTLSAfterRenewal(t *testing.T) {
	t.Parallel()
	b := setup(t)
	sc := b.newServerCertificate(t, "replica-a", []string{"localhost"}, nil)
	old := sc.Leaf()
	b.clock.Advance(20 * time.Hour)
	if err := sc.Renew(t.Context()); err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{ServerName: "localhost", RootCAs: b.authority.CertPool(), Time: b.clock.Now, MinVersion: tls.VersionTLS12}
	state, err := handshake(t, sc, cfg)
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	if peer := state.PeerCertificates[0]; !peer.Equal(sc.Leaf()) || peer.Equal(old) {
		t.Error("the server still presents the old certificate")
	}
}
