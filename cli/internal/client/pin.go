package client

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
)

// PinMismatchError reports a server that did not present the pinned CA.
type PinMismatchError struct {
	// Want is the pinned fingerprint.
	Want string
	// Got are the fingerprints of the CA certificates the server presented.
	Got []string
}

// Error implements error.
func (e *PinMismatchError) Error() string {
	return fmt.Sprintf("the server presented no CA certificate with fingerprint %s (it presented %v)", e.Want, e.Got)
}

// verifyPinned accepts the connection when the chain the server sent contains a CA
// certificate with the pinned fingerprint and the leaf verifies against it for the
// server's name.
func verifyPinned(cs tls.ConnectionState, want, serverName string) error {
	if len(cs.PeerCertificates) == 0 {
		return fmt.Errorf("the server presented no certificate")
	}
	var root *x509.Certificate
	var seen []string
	intermediates := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		sum := sha256.Sum256(c.Raw)
		fp := "sha256:" + hex.EncodeToString(sum[:])
		if fp == want && c.IsCA {
			root = c
			continue
		}
		if c.IsCA {
			seen = append(seen, fp)
			intermediates.AddCert(c)
		}
	}
	if root == nil {
		return &PinMismatchError{Want: want, Got: seen}
	}
	roots := x509.NewCertPool()
	roots.AddCert(root)
	_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
		DNSName:       serverName,
		Roots:         roots,
		Intermediates: intermediates,
	})
	return err
}
