package access

import (
	"fmt"
	"strings"
	"time"

	"github.com/palyra/palyra/server/internal/errdefs"
)

// ErrUnauthenticated is the one answer to every failed authentication: missing,
// malformed, unknown, revoked and expired credentials all look the same to the caller,
// so that the answer reveals nothing about which tokens exist.
var ErrUnauthenticated = errdefs.New(errdefs.Unauthenticated, "missing or invalid credentials: send an API token as `Authorization: Bearer plr_...`, or a console session cookie")

// ErrNotActive refuses to rotate a token that is revoked or expired, or to revoke one
// twice.
var ErrNotActive = errdefs.New(errdefs.FailedPrecondition, "the token is not active (revoked or expired)")

// ErrNotSession refuses a session call made without a session (or, for CreateSession,
// made with one instead of a bearer token).
var ErrNotSession = errdefs.New(errdefs.FailedPrecondition, "this call needs a different kind of credentials")

// ExceedsError refuses to create or manage a token that would hold permissions the
// caller does not.
type ExceedsError struct {
	// Missing are the permissions the caller lacks, sorted.
	Missing []Permission
}

// Error implements error.
func (e *ExceedsError) Error() string {
	names := make([]string, len(e.Missing))
	for i, p := range e.Missing {
		names[i] = string(p)
	}
	return fmt.Sprintf("the token holds permissions you do not: %s", strings.Join(names, ", "))
}

// ErrorKind implements errdefs.Kinded: PermissionDenied.
func (e *ExceedsError) ErrorKind() errdefs.Kind { return errdefs.PermissionDenied }

// BoundError refuses to create or rotate a token that would outlive the caller's own
// token or allow more calls a minute. Reason names the bound.
type BoundError struct{ Reason string }

// Error implements error.
func (e *BoundError) Error() string { return e.Reason }

// ErrorKind implements errdefs.Kinded: PermissionDenied.
func (e *BoundError) ErrorKind() errdefs.Kind { return errdefs.PermissionDenied }

// ScopeError refuses a scope that is not a permission of the token's role: it would
// narrow the token to nothing.
type ScopeError struct {
	// Index is the scope's position in the request.
	Index int
	Scope Permission
	Role  Role
}

// Error implements error.
func (e *ScopeError) Error() string {
	return fmt.Sprintf("%q is not a permission of role %s (ListRoles shows its permissions)", e.Scope, e.Role)
}

// ErrorKind implements errdefs.Kinded: Invalid.
func (e *ScopeError) ErrorKind() errdefs.Kind { return errdefs.Invalid }

// RateLimitedError refuses a call over its token's rate limit.
type RateLimitedError struct {
	// RetryAfter is when the next call would be admitted.
	RetryAfter time.Duration
}

// Error implements error.
func (e *RateLimitedError) Error() string {
	return fmt.Sprintf("rate limit exceeded: retry in %s", e.RetryAfter.Round(time.Millisecond))
}
