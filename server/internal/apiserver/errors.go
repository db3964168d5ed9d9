package apiserver

import (
	"context"
	"errors"
	"log/slog"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"

	"github.com/palyra/palyra/server/internal/errdefs"
	"github.com/palyra/palyra/server/internal/ratelimit"
	"github.com/palyra/palyra/server/internal/store"
)

// connectError is the one translation of the daemon's errors into Connect errors. Errors
// that already are Connect errors (protovalidate's, the interceptors') pass unchanged; a
// domain error (errdefs.Kinded) becomes its kind's code with its own message, its fields
// as one BadRequest detail, its reason and metadata as one ErrorInfo detail and its
// retry delay as Retry-After; sentinels of the store
// become their codes with a message safe to show any caller; anything else is an
// internal error, logged in full and answered without detail.
func connectError(log *slog.Logger, procedure string, err error) error {
	if err == nil {
		return nil
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		return err
	}
	var k errdefs.Kinded
	if errors.As(err, &k) && k.ErrorKind() != errdefs.Internal {
		return fromKinded(k)
	}
	for _, m := range errorCodes {
		if errors.Is(err, m.sentinel) {
			return connect.NewError(m.code, errors.New(m.message))
		}
	}
	attrs := []any{"procedure", procedure, "err", err}
	var e *errdefs.Error
	if errors.As(err, &e) && e.Cause != nil {
		attrs = append(attrs, "cause", e.Cause) // an Internal errdefs.Error's text omits it
	}
	log.Error("internal error", attrs...)
	return connect.NewError(connect.CodeInternal, errors.New("internal error; the daemon's log has the details"))
}

// ErrorDomain is the domain of the ErrorInfo details of palyrad's errors.
const ErrorDomain = "palyra"

// kindCodes maps each kind of domain error to its Connect code.
var kindCodes = [...]connect.Code{
	errdefs.Invalid:            connect.CodeInvalidArgument,
	errdefs.NotFound:           connect.CodeNotFound,
	errdefs.Conflict:           connect.CodeAlreadyExists,
	errdefs.FailedPrecondition: connect.CodeFailedPrecondition,
	errdefs.PermissionDenied:   connect.CodePermissionDenied,
	errdefs.Unauthenticated:    connect.CodeUnauthenticated,
	errdefs.ResourceExhausted:  connect.CodeResourceExhausted,
	errdefs.Aborted:            connect.CodeAborted,
	errdefs.DeadlineExceeded:   connect.CodeDeadlineExceeded,
	errdefs.Unavailable:        connect.CodeUnavailable,
	errdefs.DataLoss:           connect.CodeDataLoss,
}

// fromKinded builds the Connect error of a domain error.
func fromKinded(k errdefs.Kinded) *connect.Error {
	code := connect.CodeInternal
	if int(k.ErrorKind()) < len(kindCodes) && kindCodes[k.ErrorKind()] != 0 {
		code = kindCodes[k.ErrorKind()]
	}
	ce := connect.NewError(code, errors.New(k.Error()))
	var e *errdefs.Error
	if !errors.As(k, &e) {
		return ce
	}
	if vs := e.FieldViolations(); len(vs) > 0 {
		bad := &errdetails.BadRequest{FieldViolations: make([]*errdetails.BadRequest_FieldViolation, len(vs))}
		for i, v := range vs {
			bad.FieldViolations[i] = &errdetails.BadRequest_FieldViolation{Field: v.Field, Description: v.Description}
		}
		if d, err := connect.NewErrorDetail(bad); err == nil {
			ce.AddDetail(d)
		}
	}
	if e.Reason != "" {
		if d, err := connect.NewErrorDetail(&errdetails.ErrorInfo{Reason: e.Reason, Domain: ErrorDomain, Metadata: e.Metadata}); err == nil {
			ce.AddDetail(d)
		}
	}
	if e.RetryAfter > 0 {
		ce.Meta().Set("Retry-After", ratelimit.RetryAfter(e.RetryAfter))
	}
	return ce
}

// errorCodes maps the sentinels of the store and of the context to codes, most specific
// first; domain packages report errdefs errors instead.
var errorCodes = []struct {
	sentinel error
	code     connect.Code
	message  string
}{
	{context.Canceled, connect.CodeCanceled, "the call was canceled"},
	{context.DeadlineExceeded, connect.CodeDeadlineExceeded, "the call's deadline passed"},
	{store.ErrNotFound, connect.CodeNotFound, "not found"},
	{store.ErrConflict, connect.CodeAlreadyExists, "already exists"},
	{store.ErrReferenced, connect.CodeFailedPrecondition, "a referenced object is missing or still in use"},
	{store.ErrInvalid, connect.CodeInvalidArgument, "the request violates a constraint"},
	{store.ErrUnavailable, connect.CodeUnavailable, "the database is unavailable; retry later"},
}

// ErrorTranslator returns connectError bound to log, for the access interceptor, which
// runs outside ErrorInterceptor: its refusals reach the caller, and its audit records,
// with the codes this file gives them.
func ErrorTranslator(log *slog.Logger) func(procedure string, err error) error {
	return func(procedure string, err error) error { return connectError(log, procedure, err) }
}

// ErrorInterceptor returns the interceptor that applies the translation to every RPC,
// unary and streaming. Tests that mount one service's handler use it too.
func ErrorInterceptor(log *slog.Logger) connect.Interceptor { return errorInterceptor{log: log} }

// errorInterceptor applies connectError to every RPC, unary and streaming.
type errorInterceptor struct{ log *slog.Logger }

func (i errorInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		res, err := next(ctx, req)
		return res, connectError(i.log, req.Spec().Procedure, err)
	}
}

func (i errorInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i errorInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		return connectError(i.log, conn.Spec().Procedure, next(ctx, conn))
	}
}
