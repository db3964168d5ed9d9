package controlplane

import (
	"context"
	"errors"
	"log/slog"

	"connectrpc.com/connect"

	"github.com/palyra/palyra/server/internal/access"
	"github.com/palyra/palyra/server/internal/audit"
	"github.com/palyra/palyra/server/internal/flags"
	"github.com/palyra/palyra/server/internal/identity"
	"github.com/palyra/palyra/server/internal/pagetoken"
	"github.com/palyra/palyra/server/internal/store"
)

// connectError is the one translation of the daemon's errors into Connect errors. Errors
// that already are Connect errors pass unchanged; sentinels of the store and the domain
// packages become their codes with a message safe to show any caller; anything else is
// an internal error, logged in full and answered without detail.
func connectError(log *slog.Logger, procedure string, err error) error {
	if err == nil {
		return nil
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		return err
	}
	// Typed errors whose own message is written for callers.
	var (
		dep     *flags.DependencyError
		exceeds *access.ExceedsError
		bound   *access.BoundError
		scope   *access.ScopeError
	)
	switch {
	case errors.As(err, &dep):
		return connect.NewError(connect.CodeFailedPrecondition, dep)
	case errors.As(err, &exceeds):
		return connect.NewError(connect.CodePermissionDenied, exceeds)
	case errors.As(err, &bound):
		return connect.NewError(connect.CodePermissionDenied, bound)
	case errors.As(err, &scope):
		return connect.NewError(connect.CodeInvalidArgument, scope)
	}
	for _, m := range errorCodes {
		if errors.Is(err, m.sentinel) {
			return connect.NewError(m.code, errors.New(m.message))
		}
	}
	log.Error("internal error", "procedure", procedure, "err", err)
	return connect.NewError(connect.CodeInternal, errors.New("internal error; the daemon's log has the details"))
}

// errorCodes maps sentinels to codes, most specific first.
var errorCodes = []struct {
	sentinel error
	code     connect.Code
	message  string
}{
	{context.Canceled, connect.CodeCanceled, "the call was canceled"},
	{context.DeadlineExceeded, connect.CodeDeadlineExceeded, "the call's deadline passed"},
	{identity.ErrPolicy, connect.CodeInvalidArgument, "the certificate request breaks the issuance policy"},
	{access.ErrUnauthenticated, connect.CodeUnauthenticated, access.ErrUnauthenticated.Error()},
	{access.ErrNotActive, connect.CodeFailedPrecondition, "the token is not active (revoked or expired)"},
	{pagetoken.ErrMalformed, connect.CodeInvalidArgument, "malformed page token"},
	{access.ErrNotSession, connect.CodeFailedPrecondition, "this call needs a different kind of credentials"},
	{flags.ErrUnknown, connect.CodeNotFound, "no such feature flag"},
	{audit.ErrInvalid, connect.CodeInvalidArgument, "invalid audit query"},
	{store.ErrNotFound, connect.CodeNotFound, "not found"},
	{store.ErrConflict, connect.CodeAlreadyExists, "already exists"},
	{store.ErrReferenced, connect.CodeFailedPrecondition, "a referenced object is missing or still in use"},
	{store.ErrInvalid, connect.CodeInvalidArgument, "the request violates a constraint"},
	{store.ErrUnavailable, connect.CodeUnavailable, "the database is unavailable; retry later"},
}

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
