// Package errdefs defines the kinds of failure the domain reports and the typed error
// that carries one. Domain packages decide the kind and write a message safe for any
// caller; each edge translates kinds into its own codes (Connect codes, the error
// envelopes of the OpenAI-compatible API) in one place, so no domain package builds a
// transport's error.
package errdefs

import (
	"errors"
	"fmt"
	"time"
)

// Kind is what went wrong, in the terms a caller acts on.
type Kind uint8

// The kinds. Each maps to one Connect code at the edge.
const (
	// Internal is a failure the caller cannot act on: logged in full, answered without
	// detail.
	Internal Kind = iota
	// Invalid: the request is malformed or breaks a rule whatever the state.
	Invalid
	// NotFound: the request names something that does not exist.
	NotFound
	// Conflict: the request would create something that already exists.
	Conflict
	// FailedPrecondition: the request is well formed but the state refuses it.
	FailedPrecondition
	// PermissionDenied: the caller is known but may not do this.
	PermissionDenied
	// Unauthenticated: the caller's credentials are missing or not valid.
	Unauthenticated
	// ResourceExhausted: a limit refused the call; RetryAfter says when to retry.
	ResourceExhausted
	// Aborted: the call was ended by a concurrent change (a session replaced).
	Aborted
	// DeadlineExceeded: the call's or the operation's deadline passed.
	DeadlineExceeded
	// Unavailable: a transient failure; the same call may succeed later.
	Unavailable
	// DataLoss: stored data is corrupt or was tampered with (a ciphertext that does not
	// decrypt); retrying does not help.
	DataLoss
)

var kindNames = [...]string{
	Internal:           "internal",
	Invalid:            "invalid",
	NotFound:           "not_found",
	Conflict:           "conflict",
	FailedPrecondition: "failed_precondition",
	PermissionDenied:   "permission_denied",
	Unauthenticated:    "unauthenticated",
	ResourceExhausted:  "resource_exhausted",
	Aborted:            "aborted",
	DeadlineExceeded:   "deadline_exceeded",
	Unavailable:        "unavailable",
	DataLoss:           "data_loss",
}

// String returns the kind's name, e.g. "not_found".
func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", k)
}

// Kinded is an error that knows its kind. *Error is one; a domain package's own typed
// error (with fields callers inspect) implements it to be translated like one, its
// Error() being the message shown.
type Kinded interface {
	error
	ErrorKind() Kind
}

// Error is a domain failure: a kind and a message safe for any caller, optionally the
// request fields at fault, a retry delay and a cause that is never shown.
type Error struct {
	// Kind is what went wrong.
	Kind Kind
	// Field is the request field at fault (e.g. "scopes[2]"), or "".
	Field string
	// Message says what went wrong and, where it helps, what to do.
	Message string
	// Violations lists every field at fault when there are several (InvalidFields);
	// Field and Message are then the first's.
	Violations []Violation
	// RetryAfter is how long to wait before retrying (ResourceExhausted), or 0.
	RetryAfter time.Duration
	// Reason, when set, is a machine-readable cause in upper snake case (e.g.
	// "STALE_REVISION"), sent with Metadata as the error's ErrorInfo detail.
	Reason string
	// Metadata are machine-readable facts about the failure, e.g. the current revision.
	Metadata map[string]string
	// Cause is the underlying error, kept for errors.Is/As and logs; never shown.
	Cause error
}

// New returns an error of kind k with a formatted message.
func New(k Kind, format string, args ...any) *Error {
	return &Error{Kind: k, Message: fmt.Sprintf(format, args...)}
}

// Error returns the message, prefixed by the field when there is one.
func (e *Error) Error() string {
	if e.Field != "" {
		return e.Field + ": " + e.Message
	}
	return e.Message
}

// ErrorKind implements Kinded.
func (e *Error) ErrorKind() Kind { return e.Kind }

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Cause }

// InvalidField returns an Invalid error about one request field.
func InvalidField(field, format string, args ...any) *Error {
	return &Error{Kind: Invalid, Field: field, Message: fmt.Sprintf(format, args...)}
}

// Violation is one request field at fault and what is wrong with it.
type Violation struct {
	Field, Description string
}

// InvalidFields returns an Invalid error about the fields of vs (at least one); its
// message is the first's.
func InvalidFields(vs ...Violation) *Error {
	return &Error{Kind: Invalid, Field: vs[0].Field, Message: vs[0].Description, Violations: vs}
}

// FieldViolations returns the fields at fault: Violations, or else Field with Message,
// or else none.
func (e *Error) FieldViolations() []Violation {
	switch {
	case len(e.Violations) > 0:
		return e.Violations
	case e.Field != "":
		return []Violation{{Field: e.Field, Description: e.Message}}
	}
	return nil
}

// Exhausted returns a ResourceExhausted error that asks to retry after wait.
func Exhausted(wait time.Duration, format string, args ...any) *Error {
	return &Error{Kind: ResourceExhausted, RetryAfter: wait, Message: fmt.Sprintf(format, args...)}
}

// Wrap returns an error of kind k with a formatted message and cause as its cause.
func Wrap(cause error, k Kind, format string, args ...any) *Error {
	return &Error{Kind: k, Message: fmt.Sprintf(format, args...), Cause: cause}
}

// KindOf returns the kind of the first Kinded error in err's chain, or Internal.
func KindOf(err error) Kind {
	var k Kinded
	if errors.As(err, &k) {
		return k.ErrorKind()
	}
	return Internal
}
