package apiserver

import (
	"context"
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

	"github.com/palyra/palyra/internal/testpki"
	"github.com/palyra/palyra/server/internal/testclock"
)

// newTestCA makes the CA of a listener test; valid from 2000 to 2100, so that both the
// real clock (the client checks the server) and a test clock accept it.
func newTestCA(t *testing.T) *testpki.CA {
	t.Helper()
	return testpki.NewCA(t, "listener test CA",
		time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC))
}

// issue signs a certificate for localhost valid from notBefore to notAfter for usage.
func issue(t *testing.T, ca *testpki.CA, serial int64, notBefore, notAfter time.Time, usage x509.ExtKeyUsage) tls.Certificate {
	t.Helper()
	return ca.Issue(t, &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: notBefore, NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	})
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
	serverCert := issue(t, ca, 2, ca.Cert.NotBefore, ca.Cert.NotAfter, x509.ExtKeyUsageServerAuth)
	client := issue(t, ca, 3, epoch, epoch.Add(time.Hour), x509.ExtKeyUsageClientAuth)

	var mu sync.Mutex
	var refused []error
	srv, err := Listen(ServerOptions{
		Address:        "127.0.0.1:0",
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &serverCert, nil },
		ClientCAs:      ca.Pool,
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
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool, Certificates: []tls.Certificate{client}}}
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
