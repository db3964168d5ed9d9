package access

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"strings"

	"github.com/oklog/ulid/v2"
)

// Secrets. An API token reads `plr_<id>_<secret>`: the id is a ULID (public: it names the
// token in lists and the audit log), the secret 192 random bits in lower-case base32.
// A console session cookie reads `<id>.<secret>`. Only SHA-256 hashes of secrets are
// stored, bound to their kind and id; secrets have far more entropy than any password,
// so a fast hash is the right one.

// tokenPrefix starts every API token, so that leaked tokens are easy to recognise.
const tokenPrefix = "plr_"

// secretBytes is the entropy of a secret: 192 bits.
const secretBytes = 24

var secretEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// newSecret returns an id and a random secret.
func newSecret() (id, secret string) {
	b := make([]byte, secretBytes)
	_, _ = rand.Read(b) // never fails since Go 1.24
	return ulid.Make().String(), strings.ToLower(secretEncoding.EncodeToString(b))
}

// formatToken returns the token string a client sends.
func formatToken(id, secret string) string { return tokenPrefix + id + "_" + secret }

// parseToken splits a token string; ok is false when it is malformed.
func parseToken(s string) (id, secret string, ok bool) {
	rest, found := strings.CutPrefix(s, tokenPrefix)
	if !found {
		return "", "", false
	}
	id, secret, found = strings.Cut(rest, "_")
	if !found || len(id) != 26 || len(secret) == 0 || len(secret) > 128 {
		return "", "", false
	}
	// Ids are stored in ULID's canonical upper case; one spelling per token.
	if _, err := ulid.ParseStrict(id); err != nil || strings.ToUpper(id) != id {
		return "", "", false
	}
	return id, secret, true
}

// The kinds of hashed secrets.
const (
	kindToken   = "token"
	kindSession = "session"
	kindCSRF    = "csrf"
	kindHandoff = "handoff"
)

// hashSecret hashes a secret, bound to its kind and the id it belongs to.
func hashSecret(kind, id, secret string) []byte {
	h := sha256.New()
	h.Write([]byte("palyra/v1/" + kind + "\x00" + id + "\x00" + secret))
	return h.Sum(nil)
}
