// Package requestctx carries what the HTTP layer knows about a request to the RPC
// layer: its id, and the client certificate chain the TLS handshake verified. Connect
// exposes neither, so a middleware puts them in the request's context.
package requestctx

import (
	"context"
	"crypto/x509"
	"net/http"
	"regexp"

	"github.com/oklog/ulid/v2"
)

// Header is the request id header, read from requests and set on every response.
const Header = "X-Request-Id"

// validID is what a caller-supplied request id may look like; anything else is
// replaced, so that ids are safe to log.
var validID = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

type key struct{}

// info is what the middleware records.
type info struct {
	requestID string
	chain     []*x509.Certificate
}

// Middleware records the request id (the caller's X-Request-Id when well-formed, else a
// new ULID, echoed in the response) and the verified client certificate chain.
func Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		in := &info{requestID: r.Header.Get(Header)}
		if !validID.MatchString(in.requestID) {
			in.requestID = ulid.Make().String()
		}
		w.Header().Set(Header, in.requestID)
		if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
			in.chain = r.TLS.VerifiedChains[0]
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), key{}, in)))
	})
}

// RequestID returns the id of the request ctx belongs to, or "".
func RequestID(ctx context.Context) string {
	if in, ok := ctx.Value(key{}).(*info); ok {
		return in.requestID
	}
	return ""
}

// ClientCertificate returns the client certificate the TLS handshake verified against
// the internal CA, or nil when the client presented none.
func ClientCertificate(ctx context.Context) *x509.Certificate {
	if in, ok := ctx.Value(key{}).(*info); ok && len(in.chain) > 0 {
		return in.chain[0]
	}
	return nil
}
