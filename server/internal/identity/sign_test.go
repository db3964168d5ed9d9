package identity_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"math/big"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/palyra/palyra/internal/testpki"
	"github.com/palyra/palyra/server/internal/identity"
)

func TestSignRefusals(t *testing.T) {
	t.Parallel()
	b := setup(t)
	caNotAfter := b.authority.Certificate().NotAfter
	servername := identity.ServerIdentity([]string{"localhost"}, nil)

	type testCase struct {
		// pub returns the public key to certify; nil means a fresh P-256 key.
		pub func(t *testing.T) any
		// now is the signing authority's clock; zero means the epoch the CA was made at.
		now  time.Time
		opts []identity.SignOption
	}
	cases := map[string]testCase{
		"RSA key": {
			pub: func(t *testing.T) any {
				k, err := rsa.GenerateKey(rand.Reader, 2048)
				if err != nil {
					t.Fatal(err)
				}
				return &k.PublicKey
			},
			opts: []identity.SignOption{servername, identity.Lifetime(time.Hour)},
		},
		"P-384 key": {
			pub: func(t *testing.T) any {
				k, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
				if err != nil {
					t.Fatal(err)
				}
				return &k.PublicKey
			},
			opts: []identity.SignOption{servername, identity.Lifetime(time.Hour)},
		},
		"P-224 key": {
			pub: func(t *testing.T) any {
				k, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
				if err != nil {
					t.Fatal(err)
				}
				return &k.PublicKey
			},
			opts: []identity.SignOption{servername, identity.Lifetime(time.Hour)},
		},
		"Ed25519 key": {
			pub: func(t *testing.T) any {
				pub, _, err := ed25519.GenerateKey(rand.Reader)
				if err != nil {
					t.Fatal(err)
				}
				return pub
			},
			opts: []identity.SignOption{servername, identity.Lifetime(time.Hour)},
		},
		"P-256 private key instead of public": {
			pub:  func(t *testing.T) any { return testpki.Key(t) },
			opts: []identity.SignOption{servername, identity.Lifetime(time.Hour)},
		},
		"P-256 point not on the curve": {
			pub: func(*testing.T) any {
				return &ecdsa.PublicKey{Curve: elliptic.P256(), X: big.NewInt(1), Y: big.NewInt(1)}
			},
			opts: []identity.SignOption{servername, identity.Lifetime(time.Hour)},
		},
		"no key": {
			pub:  func(*testing.T) any { return (*ecdsa.PublicKey)(nil) },
			opts: []identity.SignOption{servername, identity.Lifetime(time.Hour)},
		},
		"no lifetime": {
			opts: []identity.SignOption{servername},
		},
		"zero lifetime": {
			opts: []identity.SignOption{servername, identity.Lifetime(0)},
		},
		"negative lifetime": {
			opts: []identity.SignOption{servername, identity.Lifetime(-time.Hour)},
		},
		"lifetime beyond the CA": {
			opts: []identity.SignOption{servername, identity.Lifetime(caNotAfter.Sub(testEpoch) + time.Second)},
		},
		"huge lifetime": {
			opts: []identity.SignOption{servername, identity.Lifetime(100 * 365 * 24 * time.Hour)},
		},
		"clock near the end of the CA": {
			now:  caNotAfter.Add(-time.Hour),
			opts: []identity.SignOption{servername, identity.Lifetime(2 * time.Hour)},
		},
		"clock after the end of the CA": {
			now:  caNotAfter.Add(24 * time.Hour),
			opts: []identity.SignOption{servername, identity.Lifetime(time.Hour)},
		},
		"no extended key usage": {
			opts: []identity.SignOption{identity.Lifetime(time.Hour)},
		},
		"no options": {},
		"server identity without names": {
			opts: []identity.SignOption{identity.ServerIdentity(nil, nil), identity.Lifetime(time.Hour)},
		},
		"server identity with empty lists": {
			opts: []identity.SignOption{identity.ServerIdentity([]string{}, []net.IP{}), identity.Lifetime(time.Hour)},
		},
		"clock far behind the CA": {
			// NotBefore is clamped to the CA's, and an hour from a clock a day behind
			// ends before that: refused rather than issued upside down.
			now:  b.authority.Certificate().NotBefore.Add(-24 * time.Hour),
			opts: []identity.SignOption{servername, identity.Lifetime(time.Hour)},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			a := b.authority
			if !tc.now.IsZero() {
				a = b.loadAuthority(t, fixed(tc.now))
			}
			var pub any
			if tc.pub != nil {
				pub = tc.pub(t)
			} else {
				pub = &testpki.Key(t).PublicKey
			}
			issued, err := a.Sign(pub, tc.opts...)
			if err == nil {
				t.Fatalf("issued %s valid %v..%v", issued.Fingerprint, issued.Certificate.NotBefore, issued.Certificate.NotAfter)
			}
			if !errors.Is(err, identity.ErrPolicy) {
				t.Errorf("error %v does not match ErrPolicy", err)
			}
			if issued != nil {
				t.Error("a refusal returned a certificate")
			}
		})
	}
}

func TestSignServerCertificate(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ca := b.authority.Certificate()
	roots := b.authority.CertPool()

	cases := map[string]struct {
		now      time.Time // the signing authority's clock
		dnsNames []string
		ips      []net.IP
		lifetime time.Duration
	}{
		"names and addresses, an hour after the CA": {
			now:      testEpoch.Add(time.Hour),
			dnsNames: []string{"localhost", "palyra.internal"},
			ips:      []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")},
			lifetime: 24 * time.Hour,
		},
		"address only": {
			now:      testEpoch.Add(time.Hour),
			ips:      []net.IP{net.ParseIP("192.0.2.7")},
			lifetime: time.Hour,
		},
		// Signing as the CA is created: backdating would reach before the CA's validity
		// and is cut there.
		"at the CA's creation": {
			now:      testEpoch,
			dnsNames: []string{"localhost"},
			lifetime: time.Hour,
		},
		"clock behind the CA": {
			now:      testEpoch.Add(-time.Minute),
			dnsNames: []string{"localhost"},
			lifetime: time.Hour,
		},
		"up to the CA's end": {
			now:      ca.NotAfter.Add(-time.Hour),
			dnsNames: []string{"localhost"},
			lifetime: time.Hour,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			a := b.loadAuthority(t, fixed(tc.now))
			key := testpki.Key(t)
			issued, err := a.Sign(&key.PublicKey, identity.ServerIdentity(tc.dnsNames, tc.ips), identity.Lifetime(tc.lifetime))
			if err != nil {
				t.Fatalf("sign: %v", err)
			}
			c := issued.Certificate

			if !key.PublicKey.Equal(c.PublicKey) {
				t.Error("the certificate is for another key")
			}
			if err := c.CheckSignatureFrom(ca); err != nil {
				t.Errorf("not signed by the CA: %v", err)
			}
			if !slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) || len(c.UnknownExtKeyUsage) != 0 {
				t.Errorf("extended key usage %v %v, want serverAuth only", c.ExtKeyUsage, c.UnknownExtKeyUsage)
			}
			if c.IsCA || !c.BasicConstraintsValid || c.KeyUsage&(x509.KeyUsageCertSign|x509.KeyUsageCRLSign) != 0 {
				t.Errorf("the certificate has CA rights (IsCA %v, key usage %b)", c.IsCA, c.KeyUsage)
			}
			if c.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
				t.Errorf("key usage %b lacks digital signature, which ECDHE key exchange needs", c.KeyUsage)
			}
			if !slices.Equal(c.DNSNames, tc.dnsNames) {
				t.Errorf("DNS names %v, want %v", c.DNSNames, tc.dnsNames)
			}
			if !slices.EqualFunc(c.IPAddresses, tc.ips, net.IP.Equal) {
				t.Errorf("IP addresses %v, want %v", c.IPAddresses, tc.ips)
			}
			if len(c.URIs) != 0 || len(c.EmailAddresses) != 0 {
				t.Errorf("unexpected names %v %v", c.URIs, c.EmailAddresses)
			}
			wantCN := ""
			if len(tc.dnsNames) > 0 {
				wantCN = tc.dnsNames[0]
			} else {
				wantCN = tc.ips[0].String()
			}
			if c.Subject.CommonName != wantCN {
				t.Errorf("common name %q, want %q", c.Subject.CommonName, wantCN)
			}

			// Validity: backdated from now, but never before the CA; lifetime from now.
			if !c.NotBefore.Before(tc.now) {
				t.Errorf("NotBefore %v is not backdated from %v", c.NotBefore, tc.now)
			}
			if c.NotBefore.Before(ca.NotBefore) {
				t.Errorf("NotBefore %v is before the CA's %v", c.NotBefore, ca.NotBefore)
			}
			if tc.now.Sub(c.NotBefore) > time.Hour {
				t.Errorf("NotBefore %v is backdated more than an hour from %v", c.NotBefore, tc.now)
			}
			if want := tc.now.Add(tc.lifetime); !c.NotAfter.Equal(want) {
				t.Errorf("NotAfter %v, want %v", c.NotAfter, want)
			}
			if c.NotAfter.After(ca.NotAfter) {
				t.Errorf("NotAfter %v outlives the CA (%v)", c.NotAfter, ca.NotAfter)
			}

			// Serial: positive, at most 16 bytes (RFC 5280), reported in hex.
			if c.SerialNumber.Sign() <= 0 || len(c.SerialNumber.Bytes()) > 16 {
				t.Errorf("serial %x is not positive and at most 16 bytes", c.SerialNumber)
			}
			if s, ok := new(big.Int).SetString(issued.Serial, 16); !ok || s.Cmp(c.SerialNumber) != 0 {
				t.Errorf("Serial %q, certificate serial %x", issued.Serial, c.SerialNumber)
			}
			if issued.Fingerprint != identity.Fingerprint(c.Raw) {
				t.Errorf("Fingerprint %s, want %s", issued.Fingerprint, identity.Fingerprint(c.Raw))
			}

			// It verifies for each of its names as a server certificate, and for nothing
			// else.
			names := append([]string(nil), tc.dnsNames...)
			for _, ip := range tc.ips {
				names = append(names, ip.String())
			}
			for _, n := range names {
				chains, err := c.Verify(x509.VerifyOptions{
					DNSName: n, Roots: roots, CurrentTime: tc.now,
					KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
				})
				if err != nil {
					t.Errorf("does not verify for %s: %v", n, err)
					continue
				}
				if len(chains) != 1 || len(chains[0]) != 2 || !chains[0][1].Equal(ca) {
					t.Errorf("chain for %s is not [leaf, root]", n)
				}
			}
			refusals := map[string]x509.VerifyOptions{
				"another name":     {DNSName: "palyra.example", Roots: roots, CurrentTime: tc.now},
				"client auth":      {DNSName: names[0], Roots: roots, CurrentTime: tc.now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}},
				"after NotAfter":   {DNSName: names[0], Roots: roots, CurrentTime: c.NotAfter.Add(time.Second)},
				"before NotBefore": {DNSName: names[0], Roots: roots, CurrentTime: c.NotBefore.Add(-time.Second)},
				"other roots":      {DNSName: names[0], Roots: x509.NewCertPool(), CurrentTime: tc.now},
			}
			for what, opts := range refusals {
				if _, err := c.Verify(opts); err == nil {
					t.Errorf("verifies with %s", what)
				}
			}
		})
	}
}

// Serials are random: many issuances, no repeat, each within the RFC 5280 bounds.
func TestSignSerials(t *testing.T) {
	t.Parallel()
	b := setup(t)
	key := testpki.Key(t)
	seen := map[string]bool{}
	for range 64 {
		issued, err := b.authority.Sign(&key.PublicKey, identity.ServerIdentity([]string{"localhost"}, nil), identity.Lifetime(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		sn := issued.Certificate.SerialNumber
		if sn.Sign() <= 0 || len(sn.Bytes()) > 16 {
			t.Errorf("serial %x is not positive and at most 16 bytes", sn)
		}
		if seen[issued.Serial] {
			t.Errorf("serial %s issued twice", issued.Serial)
		}
		seen[issued.Serial] = true
	}
}
