package access

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// ErrUnauthenticated is the one answer to every failed authentication: missing,
// malformed, unknown, revoked and expired credentials all look the same to the caller,
// so that the answer reveals nothing about which tokens exist.
var ErrUnauthenticated = errors.New("missing or invalid credentials: send an API token as `Authorization: Bearer plr_...`, or a console session cookie")

// ErrNotActive refuses to rotate a token that is revoked or expired, or to revoke one
// twice.
var ErrNotActive = errors.New("the token is not active")

// ErrNotSession refuses a session call made without a session (or, for CreateSession,
// made with one instead of a bearer token).
var ErrNotSession = errors.New("wrong kind of credentials for this call")

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

// RateLimitedError refuses a call over its token's rate limit.
type RateLimitedError struct {
	// RetryAfter is when the next call would be admitted.
	RetryAfter time.Duration
}

// Error implements error.
func (e *RateLimitedError) Error() string {
	return fmt.Sprintf("rate limit exceeded: retry in %s", e.RetryAfter.Round(time.Millisecond))
}
