package node

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/palyra/palyra/internal/testpki"
)

// testCA makes a self-signed CA.
func testCA(t *testing.T) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	ca := testpki.NewCA(t, "Test Palyra CA", time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
	return ca.Cert, ca.Key
}

// issue signs a device certificate for pub as palyrad does: the device id in a
// palyra://device/<id> URI SAN (uris replace it when given), clientAuth.
func issue(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey, pub any, deviceID string, uris ...string) *x509.Certificate {
	t.Helper()
	if len(uris) == 0 {
		uris = []string{"palyra://device/" + deviceID}
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: deviceID},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	for _, s := range uris {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, pub, caKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func pemOf(c *x509.Certificate) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
}

// TestCheckIssued checks what a node accepts as its certificate.
func TestCheckIssued(t *testing.T) {
	t.Parallel()
	const id = "01JD5ZJ8Q0W1X2Y3Z4A5B6C7V1"
	ca, caKey := testCA(t)
	other, otherKey := testCA(t)
	key, _ := GenerateKey()
	stranger, _ := GenerateKey()

	good := issue(t, ca, caKey, &key.PublicKey, id)
	serverOnly := func() *x509.Certificate {
		tmpl := *good
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		der, err := x509.CreateCertificate(rand.Reader, &tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := x509.ParseCertificate(der)
		return c
	}()
	tests := map[string]struct {
		cert, caPEM, want string
		wantErr           string
	}{
		"good":                  {cert: pemOf(good), caPEM: pemOf(ca)},
		"good without the CA":   {cert: pemOf(good)},
		"good, id from palyrad": {cert: pemOf(good), want: id},
		"another device":        {cert: pemOf(good), want: "01JD5ZJ8Q0W1X2Y3Z4A5B6C7V2", wantErr: "names device"},
		"another key":           {cert: pemOf(issue(t, ca, caKey, &stranger.PublicKey, id)), wantErr: "does not certify this node's key"},
		"another CA":            {cert: pemOf(issue(t, other, otherKey, &key.PublicKey, id)), wantErr: "does not verify"},
		"another CA sent":       {cert: pemOf(good), caPEM: pemOf(other), wantErr: "not the pinned"},
		"no device":             {cert: pemOf(issue(t, ca, caKey, &key.PublicKey, id, "https://example.com")), wantErr: "names 0 devices"},
		"two devices":           {cert: pemOf(issue(t, ca, caKey, &key.PublicKey, id, "palyra://device/"+id, "palyra://device/01JD5ZJ8Q0W1X2Y3Z4A5B6C7V2")), wantErr: "names 2 devices"},
		"malformed device id":   {cert: pemOf(issue(t, ca, caKey, &key.PublicKey, id, "palyra://device/build-01")), wantErr: "malformed"},
		"not for clients":       {cert: pemOf(serverOnly), wantErr: "does not verify"},
		"not PEM":               {cert: "certificate", wantErr: "no PEM certificate"},
	}
	for name, tt := range tests {
		got, err := CheckIssued(tt.cert, tt.caPEM, key, ca, tt.want)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%s: CheckIssued = %v; want an error with %q", name, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got.DeviceID != id || !got.Certificate.Equal(good) {
			t.Errorf("%s: CheckIssued = %+v, %v", name, got, err)
		}
	}
}
