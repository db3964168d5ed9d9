package node

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
)

// GenerateKey generates a node key: ECDSA P-256, made on the node and never sent.
func GenerateKey() (*ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate the node's key: %w", err)
	}
	return key, nil
}

// MarshalKeyPEM encodes a key as PKCS#8 in a "PRIVATE KEY" PEM block.
func MarshalKeyPEM(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode the node's key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseKeyPEM decodes a node key written by MarshalKeyPEM; any other kind of key is
// refused. Its errors never quote the key.
func ParseKeyPEM(b []byte) (*ecdsa.PrivateKey, error) {
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, errors.New("no PKCS#8 PRIVATE KEY PEM block")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, errors.New("the PRIVATE KEY block is not a valid PKCS#8 key")
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok || key.Curve != elliptic.P256() {
		return nil, errors.New("the key is not ECDSA P-256")
	}
	return key, nil
}

// certifies reports whether cert certifies key's public key.
func certifies(cert *x509.Certificate, key *ecdsa.PrivateKey) bool {
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	return ok && pub.Equal(key.Public())
}

// KeyFingerprint returns the fingerprint of a public key as palyrad shows it to the
// approver: "sha256:" and the hex SHA-256 of its SubjectPublicKeyInfo.
func KeyFingerprint(pub any) (string, error) {
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("encode the public key: %w", err)
	}
	sum := sha256.Sum256(spki)
	return "sha256:" + hex.EncodeToString(sum[:]), nil
}

// NewCSR returns a PKCS#10 certificate signing request in DER form for key, with the
// device name as its common name and no other name: palyrad takes only the public key
// and the signature from it, and puts the device id in the certificate itself.
func NewCSR(key *ecdsa.PrivateKey, deviceName string) ([]byte, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: deviceName},
	}, key)
	if err != nil {
		return nil, fmt.Errorf("create the certificate signing request: %w", err)
	}
	return der, nil
}
