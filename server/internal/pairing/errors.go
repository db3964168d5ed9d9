package pairing

import (
	"context"
	"time"

	"github.com/palyra/palyra/server/internal/access"
	"github.com/palyra/palyra/server/internal/errdefs"
)

// The package answers with errdefs errors whose messages are safe for any caller; the
// edge's errors.go turns them into Connect codes. Errors it does not classify (a database
// failure) pass as they are: the edge maps store sentinels and hides the rest.

// codeRefusal is the one answer to every failure of a presented pairing code. It must
// not depend on the cause.
const codeRefusal = "the pairing code is not valid: ask the administrator for a new one"

// errCodeRefused returns the answer to a failed pairing code: the same code and bytes
// whether the code is wrong, unknown, used, expired, burned, deleted or of the other
// method.
func errCodeRefused() error {
	return errdefs.New(errdefs.PermissionDenied, codeRefusal)
}

// statusRefusal is the one answer of GetPairingStatus and WatchPairing to an unknown
// request id and to a wrong pairing secret.
const statusRefusal = "no pairing request with this id and pairing secret"

// errStatusRefused returns the answer to an unknown request or a wrong secret.
func errStatusRefused() error {
	return errdefs.New(errdefs.NotFound, statusRefusal)
}

// errRateLimited refuses a call over a per-address limit on what (e.g. "pairing
// attempts"), with a Retry-After header in whole seconds.
func errRateLimited(what string, wait time.Duration) error {
	return errdefs.Exhausted(wait, "too many %s from this address: retry in %s", what, max(wait, time.Second).Round(time.Second))
}

// errNoRequest answers a control-plane call about an unknown request.
func errNoRequest(id string) error {
	return errdefs.New(errdefs.NotFound, "no pairing request %s", id)
}

// errNoCode answers a control-plane call about an unknown code.
func errNoCode(id string) error {
	return errdefs.New(errdefs.NotFound, "no pairing code %s", id)
}

// errNotPending refuses a decision on a request that is not pending: decisions are
// final.
func errNotPending(id, state string) error {
	return errdefs.New(errdefs.FailedPrecondition, "pairing request %s is %s, not pending_approval: decisions are final", id, state)
}

// errInvalid is an InvalidArgument with a message naming the problem.
func errInvalid(format string, args ...any) error {
	return errdefs.New(errdefs.Invalid, format, args...)
}

// errFailedPrecondition is a FailedPrecondition with a message naming the problem.
func errFailedPrecondition(format string, args ...any) error {
	return errdefs.New(errdefs.FailedPrecondition, format, args...)
}

// principalID names the authenticated caller for created_by and decided_by.
func principalID(ctx context.Context) (string, error) {
	p, err := access.Caller(ctx)
	if err != nil {
		return "", err
	}
	return p.ID(), nil
}
