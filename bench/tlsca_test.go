package bench

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"
)

// throwawayCA is a P-256 CA made for one benchmark, with a server leaf for loopback
// (127.0.0.1 and localhost) and a client leaf: the TLS setup of the floor harness in
// PERF-BASELINES.md (cmd/certs), for the baselines, which have no palyrad to issue
// certificates.
type throwawayCA struct {
	roots  *x509.CertPool
	server tls.Certificate
	client tls.Certificate
}

// newThrowawayCA makes a CA and its two leaves, valid for a day.
func newThrowawayCA(tb testing.TB) *throwawayCA {
	tb.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "palyra bench throwaway CA"},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		tb.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		tb.Fatal(err)
	}
	leaf := func(serial int64, cn string, usage x509.ExtKeyUsage) tls.Certificate {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			tb.Fatal(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: cn},
			NotBefore:    now.Add(-time.Minute),
			NotAfter:     now.Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		}
		if usage == x509.ExtKeyUsageServerAuth {
			tmpl.DNSNames = []string{"localhost"}
			tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			tb.Fatal(err)
		}
		return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	}
	ca := &throwawayCA{roots: x509.NewCertPool()}
	ca.roots.AddCert(caCert)
	ca.server = leaf(2, "server", x509.ExtKeyUsageServerAuth)
	ca.client = leaf(3, "client", x509.ExtKeyUsageClientAuth)
	return ca
}

// serverConfig presents the server leaf and requires a client certificate from the CA.
func (ca *throwawayCA) serverConfig() *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{ca.server},
		ClientCAs:    ca.roots,
		ClientAuth:   tls.RequireAndVerifyClientCert,
	}
}

// clientConfig trusts the CA only and presents the client leaf.
func (ca *throwawayCA) clientConfig() *tls.Config {
	return &tls.Config{
		RootCAs:      ca.roots,
		Certificates: []tls.Certificate{ca.client},
	}
}
