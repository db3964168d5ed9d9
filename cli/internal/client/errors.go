package client

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"syscall"

	"connectrpc.com/connect"
)

// explainInterceptor replaces the errors of every call with Explain's message.
type explainInterceptor struct{ url string }

func (i explainInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		res, err := next(ctx, req)
		return res, Explain(err, i.url)
	}
}

func (i explainInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i explainInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
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

// Explain turns the error of a call to url into a message that says what to do. It is
// the one place where the CLI interprets transport and Connect errors.
func Explain(err error, url string) error {
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
		msg = "not authenticated: " + msg
	case code == connect.CodePermissionDenied:
		msg = "permission denied: " + msg
	case code == connect.CodeInvalidArgument:
		msg = "invalid request: " + msg
	case code == connect.CodeUnavailable:
		msg = fmt.Sprintf("%s is unavailable: %s", url, msg)
	case code == connect.CodeUnimplemented:
		msg = fmt.Sprintf("%s does not offer this call; is it an older palyrad? (%s)", url, msg)
	}
	return &Error{Code: code, Message: msg, cause: err}
}
