package client

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"

	"connectrpc.com/connect"

	"github.com/palyra/palyra/internal/retry"
)

// explainInterceptor replaces the errors of every call with Explain's message.
type explainInterceptor struct {
	url   string
	token tokenHint
}

var _ connect.Interceptor = explainInterceptor{}

// WrapUnary implements connect.Interceptor.
func (i explainInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		res, err := next(ctx, req)
		return res, explain(err, i.url, i.token)
	}
}

// WrapStreamingClient implements connect.Interceptor.
func (i explainInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		return explainedConn{StreamingClientConn: next(ctx, spec), i: i}
	}
}

// WrapStreamingHandler implements connect.Interceptor.
func (i explainInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// explainedConn explains the errors of a stream's sends and receives. io.EOF, which
// ends a stream normally (or tells a sender to receive the real error), passes as is.
type explainedConn struct {
	connect.StreamingClientConn
	i explainInterceptor
}

// Send sends msg, explaining a failure.
func (c explainedConn) Send(msg any) error { return c.explain(c.StreamingClientConn.Send(msg)) }

// Receive receives into msg, explaining a failure.
func (c explainedConn) Receive(msg any) error { return c.explain(c.StreamingClientConn.Receive(msg)) }

func (c explainedConn) explain(err error) error {
	if err == nil || errors.Is(err, io.EOF) {
		return err
	}
	return explain(err, c.i.url, c.i.token)
}

// Error is a failed call, explained. It keeps the Connect code for exit codes and
// scripts, and the original error in the chain.
type Error struct {
	// Code is the Connect code of the failure.
	Code connect.Code
	// Message says what went wrong and what to do.
	Message string
	cause   error
}

// Error implements error.
func (e *Error) Error() string { return e.Message }

// Unwrap returns the original error.
func (e *Error) Unwrap() error { return e.cause }

// tokenHint is what Explain knows about the token a call sent, to say what to do when
// the server refuses it. It never holds the token.
type tokenHint struct {
	present bool   // a token was sent
	source  string // where it came from, e.g. "PALYRA_TOKEN"
	advice  string // what to do when it is refused
}

// name names the token in a message: "the API token from PALYRA_TOKEN".
func (h tokenHint) name() string {
	if h.source == "" {
		return "the API token"
	}
	return "the API token from " + h.source
}

// unauthenticated explains a refused authentication. The server gives the same answer
// for an unknown, revoked or expired token, so the explanation names all three.
func (h tokenHint) unauthenticated() string {
	if !h.present {
		return "not authenticated: no API token was given. Log in with `palyra auth login --url URL --token-file FILE`, " +
			"or set PALYRA_TOKEN"
	}
	advice := h.advice
	if advice == "" {
		advice = "check the token, or log in again with `palyra auth login`"
	}
	return fmt.Sprintf("not authenticated: the server refused %s (it is unknown, revoked or expired); %s", h.name(), advice)
}

// Explain turns the error of a call to url into a message that says what to do. It is
// the one place where the CLI interprets transport and Connect errors.
func Explain(err error, url string) error {
	return explain(err, url, tokenHint{present: true})
}

// explain is Explain with what is known of the token the call sent.
func explain(err error, url string, token tokenHint) error {
	if err == nil {
		return nil
	}
	var already *Error
	if errors.As(err, &already) {
		return err
	}
	code := connect.CodeOf(err)
	msg := err.Error()
	var ce *connect.Error
	if errors.As(err, &ce) {
		msg = ce.Message()
	}
	var (
		unknownCA x509.UnknownAuthorityError
		hostErr   x509.HostnameError
		expired   x509.CertificateInvalidError
		pin       *PinMismatchError
		dnsErr    *net.DNSError
	)
	switch {
	case errors.As(err, &pin):
		msg = fmt.Sprintf("%s: %v. Check the fingerprint: palyrad logs its CA fingerprint when it starts, and `palyra status` shows it", url, pin)
	case errors.As(err, &unknownCA):
		msg = fmt.Sprintf("%s: the server's certificate is not signed by a CA you trust. Pass --ca-file with the daemon's "+
			"CA certificate (<data-dir>/ca.pem on its machine) or --ca-fingerprint sha256:... as palyrad logged it at start", url)
	case errors.As(err, &hostErr):
		msg = fmt.Sprintf("%s: %v. Use a name the certificate has, or start palyrad with --tls-san %s", url, hostErr, hostErr.Host)
	case errors.As(err, &expired):
		msg = fmt.Sprintf("%s: the server's certificate is not valid: %v", url, expired)
	case errors.Is(err, syscall.ECONNREFUSED):
		msg = fmt.Sprintf("cannot connect to %s: connection refused. Is palyrad running and listening there (--listen)?", url)
	case errors.As(err, &dnsErr):
		msg = fmt.Sprintf("cannot connect to %s: the host name %q does not resolve", url, dnsErr.Name)
	case code == connect.CodeDeadlineExceeded:
		msg = fmt.Sprintf("%s did not answer in time: %s", url, msg)
	case code == connect.CodeUnauthenticated:
		msg = token.unauthenticated()
	case code == connect.CodePermissionDenied:
		msg = "permission denied: " + msg
	case code == connect.CodeResourceExhausted:
		msg = "rate limited: " + msg
		if wait, _ := retry.Throttled(err); wait > 0 {
			msg += fmt.Sprintf(". Retry after %d s", wait/time.Second)
		}
	case code == connect.CodeNotFound:
		msg = "not found: " + msg
	case code == connect.CodeInvalidArgument:
		msg = "invalid request: " + msg
	case code == connect.CodeUnavailable:
		msg = fmt.Sprintf("%s is unavailable: %s", url, msg)
	case code == connect.CodeUnimplemented:
		msg = fmt.Sprintf("%s does not offer this call; is it an older palyrad? (%s)", url, msg)
	}
	return &Error{Code: code, Message: msg, cause: err}
}
