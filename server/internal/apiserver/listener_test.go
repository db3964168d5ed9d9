package apiserver

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/palyra/palyra/server/internal/testclock"
)

// testCA signs the certificates of a listener test; valid from 2000 to 2100, so that
// both the real clock (the client checks the server) and a test clock accept it.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "listener test CA"},
		NotBefore: time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC), NotAfter: time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// issue signs a certificate valid from notBefore to notAfter for usage.
func (ca *testCA) issue(t *testing.T, serial int64, notBefore, notAfter time.Time, usage x509.ExtKeyUsage) tls.Certificate {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: notBefore, NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestClientCertificatesExpireByTheListenersClock checks that the listener judges a
// client certificate's validity by its Now, not by the machine's clock: a certificate
// is accepted within its validity and refused, with the refusal reported, before and
// after it, all without waiting.
func TestClientCertificatesExpireByTheListenersClock(t *testing.T) {
	t.Parallel()
	epoch := time.Date(2040, 3, 1, 12, 0, 0, 0, time.UTC) // far from the machine's clock
	clock := testclock.New(epoch)
	ca := newTestCA(t)
	serverCert := ca.issue(t, 2, ca.cert.NotBefore, ca.cert.NotAfter, x509.ExtKeyUsageServerAuth)
	client := ca.issue(t, 3, epoch, epoch.Add(time.Hour), x509.ExtKeyUsageClientAuth)

	var mu sync.Mutex
	var refused []error
	srv, err := Listen(ServerOptions{
		Address:        "127.0.0.1:0",
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &serverCert, nil },
		ClientCAs:      ca.pool,
		HandshakeRefused: func(_ string, cert *x509.Certificate, err error) {
			mu.Lock()
			defer mu.Unlock()
			if cert != nil {
				t.Errorf("a refusal names the certificate of a chain that did not verify: %v", err)
			}
			refused = append(refused, err)
		},
		MaxConnections: 16,
		Metrics:        NewMetrics("test", "test"),
		Now:            clock.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() {
		served <- srv.Serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, r.TLS.PeerCertificates[0].SerialNumber.String())
		}))
	}()
	t.Cleanup(func() {
		if err := srv.Shutdown(context.Background()); err != nil {
			t.Error(err)
		}
		if err := <-served; err != nil {
			t.Error(err)
		}
	})

	get := func() (string, error) {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.pool, Certificates: []tls.Certificate{client}}}
		defer tr.CloseIdleConnections()
		res, err := (&http.Client{Transport: tr}).Get("https://" + srv.Addr().String() + "/")
		if err != nil {
			return "", err
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		return string(b), err
	}
	for _, tc := range []struct {
		name  string
		now   time.Time
		valid bool
	}{
		{"within its validity", epoch.Add(30 * time.Minute), true},
		{"after it", epoch.Add(time.Hour + time.Second), false},
		{"before it", epoch.Add(-time.Second), false},
		{"at its last second", epoch.Add(time.Hour), true},
	} {
		clock.Set(tc.now)
		mu.Lock()
		refused = nil
		mu.Unlock()
		body, err := get()
		mu.Lock()
		got := refused
		mu.Unlock()
		if tc.valid {
			if err != nil || body != "3" || len(got) != 0 {
				t.Errorf("%s: %q, %v, refusals %v; want the certificate accepted", tc.name, body, err, got)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), "bad certificate") {
			t.Errorf("%s: %q, %v; want the handshake refused with bad certificate", tc.name, body, err)
		}
		var invalid x509.CertificateInvalidError
		if len(got) != 1 || !errors.As(got[0], &invalid) || invalid.Reason != x509.Expired {
			t.Errorf("%s: refusals reported %v, want one, for an expired certificate", tc.name, got)
		}
	}
}
