package bench

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/palyra/palyra/internal/testpki"
)

// throwawayCA is a P-256 CA made for one benchmark, with a server leaf for loopback
// (127.0.0.1 and localhost) and a client leaf: the TLS setup of the floor harness in
// PERF-BASELINES.md (cmd/certs), for the baselines, which have no palyrad to issue
// certificates.
type throwawayCA struct {
	cert   *x509.Certificate // the CA's own
	roots  *x509.CertPool
	server tls.Certificate
	client tls.Certificate
}

// newThrowawayCA makes a CA and its two leaves, valid for a day.
func newThrowawayCA(tb testing.TB) *throwawayCA {
	tb.Helper()
	now := time.Now()
	ca := testpki.SelfSigned(tb, &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "palyra bench throwaway CA"},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	})
	leaf := func(serial int64, cn string, usage x509.ExtKeyUsage) tls.Certificate {
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
		return ca.Issue(tb, tmpl)
	}
	return &throwawayCA{
		cert:   ca.Cert,
		roots:  ca.Pool,
		server: leaf(2, "server", x509.ExtKeyUsageServerAuth),
		client: leaf(3, "client", x509.ExtKeyUsageClientAuth),
	}
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

// writeServerPEM writes the server leaf, its key and the CA's certificate as PEM files
// into dir, for a server in a process of its own, and returns their paths.
func (ca *throwawayCA) writeServerPEM(tb testing.TB, dir string) (certFile, keyFile, caFile string) {
	tb.Helper()
	key, err := x509.MarshalPKCS8PrivateKey(ca.server.PrivateKey)
	if err != nil {
		tb.Fatal(err)
	}
	write := func(name, typ string, der ...[]byte) string {
		var out []byte
		for _, d := range der {
			out = append(out, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: d})...)
		}
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, out, 0o600); err != nil {
			tb.Fatal(err)
		}
		return path
	}
	return write("server.pem", "CERTIFICATE", ca.server.Certificate...),
		write("server.key", "PRIVATE KEY", key),
		write("ca.pem", "CERTIFICATE", ca.cert.Raw)
}
