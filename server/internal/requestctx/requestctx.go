// Package requestctx carries what the HTTP layer knows about a request to the RPC
// layer: its id, the client certificate chain verified against the internal CA, and
// its body. Connect exposes none of them, so a middleware puts them in the request's
// context.
//
// A request id is what the caller sent in X-Request-Id when it is well-formed: 1 to 64
// characters among A-Z, a-z, 0-9 and . _ : - (so that it is safe in logs and in the
// audit log). Otherwise the replica makes one up, a ULID, and says so (RequestIDGenerated):
// the audit log records who chose the id, and which replica recorded the event.
package requestctx

import (
	"context"
	"crypto/x509"
	"errors"
	"io"
	"net/http"
	"regexp"
	"time"

	"github.com/oklog/ulid/v2"
)

// Header is the request id header, read from requests and set on every response.
const Header = "X-Request-Id"

// validID is what a caller-supplied request id may look like.
var validID = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,64}$`)

type key struct{}

// info is what the middleware records.
type info struct {
	requestID string
	generated bool // the replica made requestID up
	chain     []*x509.Certificate
	body      io.ReadCloser
}

// Middleware records the request id (the caller's X-Request-Id when well-formed, else a
// new ULID, echoed in the response) and the client certificate chain, verified through
// chains (nil: none is recorded). The listener asks for client certificates without
// having crypto/tls verify them (tls.RequestClientCert), so the requests' chains are not
// verified ones; chains should be the cache the listener verified them with, which then
// serves them without a signature check.
func Middleware(next http.Handler, chains *ChainCache) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		in := &info{requestID: r.Header.Get(Header), body: r.Body}
		if !validID.MatchString(in.requestID) {
			in.requestID, in.generated = ulid.Make().String(), true
		}
		w.Header().Set(Header, in.requestID)
		switch {
		case r.TLS == nil:
		case len(r.TLS.VerifiedChains) > 0:
			in.chain = r.TLS.VerifiedChains[0]
		case len(r.TLS.PeerCertificates) > 0 && chains != nil:
			if verified, err := chains.Verify(r.TLS.PeerCertificates, time.Now()); err == nil {
				in.chain = verified[0]
			}
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), key{}, in)))
	})
}

// VerifyClientChain verifies a client's certificates (the leaf first, then the
// intermediates it sent) against roots, for client authentication, exactly as
// crypto/tls does for tls.VerifyClientCertIfGiven.
func VerifyClientChain(roots *x509.CertPool, certs []*x509.Certificate, now time.Time) ([][]*x509.Certificate, error) {
	if len(certs) == 0 {
		return nil, errors.New("no certificate")
	}
	opts := x509.VerifyOptions{
		Roots:         roots,
		CurrentTime:   now,
		Intermediates: x509.NewCertPool(),
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	for _, c := range certs[1:] {
		opts.Intermediates.AddCert(c)
	}
	return certs[0].Verify(opts)
}

// RequestID returns the id of the request ctx belongs to, or "".
func RequestID(ctx context.Context) string {
	if in, ok := ctx.Value(key{}).(*info); ok {
		return in.requestID
	}
	return ""
}

// RequestIDGenerated reports whether the replica made the request id up, the caller
// having sent none that is well-formed.
func RequestIDGenerated(ctx context.Context) bool {
	in, ok := ctx.Value(key{}).(*info)
	return ok && in.generated
}

// ClientCertificate returns the client certificate verified against the internal CA, or
// nil when the client presented none.
func ClientCertificate(ctx context.Context) *x509.Certificate {
	if in, ok := ctx.Value(key{}).(*info); ok && len(in.chain) > 0 {
		return in.chain[0]
	}
	return nil
}

// Body returns the body of the request ctx belongs to (as the middleware saw it), or
// nil. A handler that reads a client stream in its own goroutine closes it from another
// to end a read in progress: under HTTP/2 the read returns at once.
func Body(ctx context.Context) io.ReadCloser {
	if in, ok := ctx.Value(key{}).(*info); ok {
		return in.body
	}
	return nil
}
