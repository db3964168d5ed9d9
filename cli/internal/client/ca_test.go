package client_test

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/palyra/palyra/cli/internal/client"
	"github.com/palyra/palyra/internal/testpki"
)

// certificate issues a certificate for name, signed by parent (self-signed when nil).
func certificate(t *testing.T, name string, isCA bool, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key := testpki.Key(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  isCA,
		BasicConstraintsValid: true,
	}
	if isCA {
		tmpl.KeyUsage = x509.KeyUsageCertSign
	} else {
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.DNSNames = []string{"localhost"}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c, key
}

// TestAuthServerCA checks the choice of the CA that login shows a person: the last
// certificate of the chain, a CA, that signed the leaf for the URL's host.
func TestAuthServerCA(t *testing.T) {
	t.Parallel()
	ca, caKey := certificate(t, "Palyra Root CA", true, nil, nil)
	leaf, _ := certificate(t, "localhost", false, ca, caKey)
	other, otherKey := certificate(t, "Other CA", true, nil, nil)
	otherLeaf, _ := certificate(t, "localhost", false, other, otherKey)

	tests := map[string]struct {
		chain   []*x509.Certificate
		host    string
		wantErr string
	}{
		"leaf and CA, by name":           {chain: []*x509.Certificate{leaf, ca}, host: "localhost"},
		"leaf and CA, by IP":             {chain: []*x509.Certificate{leaf, ca}, host: "127.0.0.1"},
		"no CA sent":                     {chain: []*x509.Certificate{leaf}, host: "localhost", wantErr: "did not send its CA"},
		"last is not a CA":               {chain: []*x509.Certificate{leaf, leaf}, host: "localhost", wantErr: "is not a CA"},
		"leaf of another CA":             {chain: []*x509.Certificate{otherLeaf, ca}, host: "localhost", wantErr: "does not verify"},
		"host not in the certificate":    {chain: []*x509.Certificate{leaf, ca}, host: "evil.example", wantErr: "does not verify"},
		"a CA posing as the leaf itself": {chain: []*x509.Certificate{other, ca}, host: "localhost", wantErr: "does not verify"},
	}
	for name, tt := range tests {
		got, err := client.ServerCA(tt.chain, tt.host)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%s: ServerCA = %v; want an error with %q", name, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != ca {
			t.Errorf("%s: ServerCA = %v, %v; want the CA", name, got, err)
		}
	}
	if fp := client.Fingerprint(ca); !client.ValidFingerprint(fp) {
		t.Errorf("Fingerprint = %q, not a valid fingerprint", fp)
	}
}

// TestAuthReadCAFile checks that --ca-file at login takes exactly one CA certificate.
func TestAuthReadCAFile(t *testing.T) {
	t.Parallel()
	ca, caKey := certificate(t, "Palyra Root CA", true, nil, nil)
	leaf, _ := certificate(t, "localhost", false, ca, caKey)
	pemOf := func(cs ...*x509.Certificate) string {
		var b strings.Builder
		for _, c := range cs {
			b.Write(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
		}
		return b.String()
	}
	dir := t.TempDir()
	tests := map[string]struct {
		content string
		wantErr string
	}{
		"the CA":       {content: pemOf(ca)},
		"not PEM":      {content: "hello", wantErr: "no PEM certificate"},
		"a leaf":       {content: pemOf(leaf), wantErr: "not a CA"},
		"two":          {content: pemOf(ca, leaf), wantErr: "2 certificates"},
		"with a key":   {content: "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n" + pemOf(ca)},
		"missing file": {wantErr: "no such file"},
	}
	for name, tt := range tests {
		path := filepath.Join(dir, strings.ReplaceAll(name, " ", "-"))
		if tt.content != "" {
			if err := os.WriteFile(path, []byte(tt.content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		got, err := client.ReadCAFile(path)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%s: ReadCAFile = %v; want an error with %q", name, err, tt.wantErr)
			}
			continue
		}
		if err != nil || !got.Equal(ca) {
			t.Errorf("%s: ReadCAFile = %v, %v", name, got, err)
		}
	}
}

// TestProfileSameServer checks when a profile's token may be sent to a URL.
func TestProfileSameServer(t *testing.T) {
	t.Parallel()
	same := [][2]string{
		{"https://127.0.0.1:7443", "https://127.0.0.1:7443/"},
		{"https://Host.Example:7443", "https://host.example:7443"},
		{"https://host.example", "https://host.example:443"},
	}
	different := [][2]string{
		{"https://127.0.0.1:7443", "https://localhost:7443"},
		{"https://127.0.0.1:7443", "https://127.0.0.1:7444"},
		{"https://host.example", "http://host.example"},
		{"https://host.example/a", "https://host.example/b"},
		{"https://host.example", "://bad"},
	}
	for _, p := range same {
		if !client.SameServer(p[0], p[1]) {
			t.Errorf("SameServer(%q, %q) = false", p[0], p[1])
		}
	}
	for _, p := range different {
		if client.SameServer(p[0], p[1]) {
			t.Errorf("SameServer(%q, %q) = true", p[0], p[1])
		}
	}
}
