package client

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"time"
)

// Fingerprint returns the fingerprint that pins a certificate: "sha256:" and the hex
// SHA-256 of its DER encoding, as palyrad logs its CA's.
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// ValidFingerprint reports whether fp looks like a Fingerprint.
func ValidFingerprint(fp string) bool { return fingerprintPattern.MatchString(fp) }

// ReadCAFile reads the CA certificate in a PEM file (<data-dir>/ca.pem): the file must
// hold exactly one certificate, and it must be a CA.
func ReadCAFile(path string) (*x509.Certificate, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read the CA file: %w", err)
	}
	var certs []*x509.Certificate
	for rest := raw; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		certs = append(certs, c)
	}
	switch {
	case len(certs) == 0:
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	case len(certs) > 1:
		return nil, fmt.Errorf("%s holds %d certificates; give the file with palyrad's CA certificate alone (<data-dir>/ca.pem)", path, len(certs))
	case !certs[0].IsCA:
		return nil, fmt.Errorf("%s holds a certificate that is not a CA (%s); give palyrad's <data-dir>/ca.pem", path, certs[0].Subject)
	}
	return certs[0], nil
}

// ServerCA picks the CA out of the chain a server presented and checks it: the CA is the
// last certificate of the chain (palyrad sends its CA there), it must be a CA, and the
// first certificate must verify against it for host. It is what `palyra auth login`
// shows a person to decide whether to trust the server; it proves only that the chain
// is consistent, not that it is the right server, which the person decides.
func ServerCA(chain []*x509.Certificate, host string) (*x509.Certificate, error) {
	if len(chain) < 2 {
		return nil, errors.New("the server did not send its CA certificate in the TLS handshake; " +
			"pass --ca-file with its CA certificate (<data-dir>/ca.pem on its machine)")
	}
	ca := chain[len(chain)-1]
	if !ca.IsCA {
		return nil, fmt.Errorf("the last certificate the server sent (%s) is not a CA; pass --ca-file with its CA certificate", ca.Subject)
	}
	intermediates := x509.NewCertPool()
	for _, c := range chain[1 : len(chain)-1] {
		intermediates.AddCert(c)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	if _, err := chain[0].Verify(x509.VerifyOptions{DNSName: host, Roots: roots, Intermediates: intermediates}); err != nil {
		return nil, fmt.Errorf("the server's certificate does not verify against the CA it sent (%s): %w", ca.Subject, err)
	}
	return ca, nil
}

// FetchServerCA connects to the server at rawURL without verifying its certificate,
// only to read the chain it presents, and returns the CA that ServerCA finds in it.
// Nothing is sent over that connection: the handshake ends it.
func FetchServerCA(ctx context.Context, rawURL string) (*x509.Certificate, error) {
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("the server URL must look like https://host:7443, got %q", rawURL)
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "443")
	}
	var chain []*x509.Certificate
	d := tls.Dialer{
		NetDialer: &net.Dialer{Timeout: 10 * time.Second},
		Config: &tls.Config{
			MinVersion: tls.VersionTLS12,
			ServerName: u.Hostname(),
			NextProtos: []string{"h2"},
			// The chain is not trusted here: ServerCA checks it and a person decides.
			InsecureSkipVerify: true,
			VerifyConnection: func(cs tls.ConnectionState) error {
				chain = cs.PeerCertificates
				return nil
			},
		},
	}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, Explain(err, u.String())
	}
	conn.Close()
	return ServerCA(chain, u.Hostname())
}

// SameServer reports whether two base URLs name the same server: the same scheme, host
// (case-insensitive) and port (443 when not given) and path. A profile's token and CA
// pin are used only for the server the profile was made for.
func SameServer(a, b string) bool {
	ua, errA := url.Parse(a)
	ub, errB := url.Parse(b)
	if errA != nil || errB != nil {
		return false
	}
	port := func(u *url.URL) string {
		if p := u.Port(); p != "" {
			return p
		}
		return "443"
	}
	path := func(u *url.URL) string { return strings.TrimRight(u.Path, "/") }
	return strings.EqualFold(ua.Scheme, ub.Scheme) && strings.EqualFold(ua.Hostname(), ub.Hostname()) &&
		port(ua) == port(ub) && path(ua) == path(ub)
}
