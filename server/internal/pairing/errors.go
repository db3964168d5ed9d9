package pairing

import (
	"context"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"

	"github.com/palyra/palyra/server/internal/access"
	"github.com/palyra/palyra/server/internal/ratelimit"
)

// The handlers are the edge: they answer with Connect errors whose messages are safe for
// any caller. Errors they do not translate (a database failure) pass as they are to the
// control plane's errors.go, which maps store sentinels and hides the rest.

// codeRefusal is the one answer to every failure of a presented pairing code. It must
// not depend on the cause.
const codeRefusal = "the pairing code is not valid: ask the administrator for a new one"

// errCodeRefused returns the answer to a failed pairing code: the same code and bytes
// whether the code is wrong, unknown, used, expired, burned, deleted or of the other
// method.
func errCodeRefused() error {
	return connect.NewError(connect.CodePermissionDenied, errors.New(codeRefusal))
}

// statusRefusal is the one answer of GetPairingStatus and WatchPairing to an unknown
// request id and to a wrong pairing secret.
const statusRefusal = "no pairing request with this id and pairing secret"

// errStatusRefused returns the answer to an unknown request or a wrong secret.
func errStatusRefused() error {
	return connect.NewError(connect.CodeNotFound, errors.New(statusRefusal))
}

// errRateLimited refuses a call over a per-address limit on what (e.g. "pairing
// attempts"), with a Retry-After header in whole seconds.
func errRateLimited(what string, wait time.Duration) error {
	err := connect.NewError(connect.CodeResourceExhausted,
		fmt.Errorf("too many %s from this address: retry in %s", what, max(wait, time.Second).Round(time.Second)))
	err.Meta().Set("Retry-After", ratelimit.RetryAfter(wait))
	return err
}

// errNoRequest answers a control-plane call about an unknown request.
func errNoRequest(id string) error {
	return connect.NewError(connect.CodeNotFound, fmt.Errorf("no pairing request %s", id))
}

// errNoCode answers a control-plane call about an unknown code.
func errNoCode(id string) error {
	return connect.NewError(connect.CodeNotFound, fmt.Errorf("no pairing code %s", id))
}

// errNotPending refuses a decision on a request that is not pending: decisions are
// final.
func errNotPending(id, state string) error {
	return connect.NewError(connect.CodeFailedPrecondition,
		fmt.Errorf("pairing request %s is %s, not pending_approval: decisions are final", id, state))
}

// errInvalid is an InvalidArgument with a message naming the problem.
func errInvalid(format string, args ...any) error {
	return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf(format, args...))
}

// errFailedPrecondition is a FailedPrecondition with a message naming the problem.
func errFailedPrecondition(format string, args ...any) error {
	return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf(format, args...))
}

// principalID names the authenticated caller for created_by and decided_by.
func principalID(ctx context.Context) (string, error) {
	p, err := access.Caller(ctx)
	if err != nil {
		return "", err
	}
	return p.ID(), nil
}
