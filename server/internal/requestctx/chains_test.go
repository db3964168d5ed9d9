package requestctx

import (
	"crypto/x509"
	"errors"
	"math/big"
	"testing"
	"time"

	"github.com/palyra/palyra/internal/testpki"
)

// leaf issues a client certificate of ca with serial, valid from nb to na.
func leaf(t *testing.T, ca *testpki.CA, serial int64, nb, na time.Time) *x509.Certificate {
	t.Helper()
	c := ca.Issue(t, &x509.Certificate{SerialNumber: big.NewInt(serial), NotBefore: nb, NotAfter: na,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	cert, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// TestChainCacheRemembersOnlyWithinValidity checks that a verified chain is remembered
// and served with the leaf presented, that it is refused from the cache outside its
// certificates' validity (the CA's included), that a chain of another CA is refused
// and not remembered, and that the cache keeps to its bound.
func TestChainCacheRemembersOnlyWithinValidity(t *testing.T) {
	t.Parallel()
	epoch := time.Date(2040, 3, 1, 0, 0, 0, 0, time.UTC)
	ca := testpki.NewCA(t, "palyra CA", epoch.Add(-time.Hour), epoch.Add(2*time.Hour))
	cert := leaf(t, ca, 2, epoch.Add(-time.Minute), epoch.Add(3*time.Hour)) // outlives its CA
	c := NewChainCache(ca.Pool, 2)

	for i := range 2 {
		// The same certificate, parsed anew, as a later connection presents it.
		again, err := x509.ParseCertificate(cert.Raw)
		if err != nil {
			t.Fatal(err)
		}
		chains, err := c.Verify([]*x509.Certificate{again}, epoch)
		if err != nil {
			t.Fatalf("verify %d: %v", i, err)
		}
		if len(chains) != 1 || len(chains[0]) != 2 || chains[0][0] != again || !chains[0][1].Equal(ca.Cert) {
			t.Fatalf("verify %d: chains %v, want the leaf presented and the CA", i, chains)
		}
	}
	if len(c.chains) != 1 {
		t.Errorf("%d chains remembered, want 1", len(c.chains))
	}

	for name, at := range map[string]time.Time{
		"before the leaf":   epoch.Add(-2 * time.Minute),
		"after the CA":      epoch.Add(2*time.Hour + time.Second),
		"long after either": epoch.Add(24 * time.Hour),
	} {
		var invalid x509.CertificateInvalidError
		if _, err := c.Verify([]*x509.Certificate{cert}, at); !errors.As(err, &invalid) {
			t.Errorf("%s: %v, want the certificate invalid", name, err)
		}
	}

	other := testpki.NewCA(t, "another CA", epoch.Add(-time.Hour), epoch.Add(time.Hour))
	stranger := leaf(t, other, 2, epoch.Add(-time.Minute), epoch.Add(time.Hour))
	for range 2 {
		if _, err := c.Verify([]*x509.Certificate{stranger}, epoch); err == nil {
			t.Fatal("a certificate of another CA verified")
		}
	}
	if len(c.chains) != 1 {
		t.Errorf("%d chains remembered after a refusal, want 1", len(c.chains))
	}

	for serial := range int64(3) {
		if _, err := c.Verify([]*x509.Certificate{leaf(t, ca, 10+serial, epoch.Add(-time.Minute), epoch.Add(time.Hour))}, epoch); err != nil {
			t.Fatal(err)
		}
	}
	if len(c.chains) != 2 {
		t.Errorf("%d chains remembered, want the bound, 2", len(c.chains))
	}
}
