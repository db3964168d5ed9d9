// Package identity is palyrad's internal certificate authority: the root key and
// certificate kept in PostgreSQL (the key sealed under the key-encryption key), the
// issuance policy every certificate goes through (typed sign options and one signer),
// and the daemon's own TLS server certificate, renewed while it runs.
//
// The private key of the CA never leaves this package unsealed; the private keys of
// nodes never reach it at all (nodes send certificate signing requests).
package identity

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
)

// Fingerprint returns the SHA-256 of a certificate's DER encoding as "sha256:<hex>", the
// form clients pin and the database records.
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// randomBytes returns n bytes from crypto/rand, whose Read never fails since Go 1.24.
func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}
