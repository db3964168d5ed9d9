// Package retry is the one backoff and the one "is this transient" of palyra and
// palyrad: every loop that tries again after a failure waits with a Backoff, and every
// client that decides whether a failed call may be made again asks Transient (and, for a
// rate limit, Throttled).
//
// A Backoff is exponential with full jitter: the n-th wait after a reset is drawn
// uniformly from [0, min(Max, Initial·2ⁿ)], so that clients that failed together (a
// replica that stopped, a database that restarted) do not come back together. Waits
// start over after a success (Reset), or after an attempt that held for Stable before it
// failed (Held): a node whose session held for a while returns at once, while a server
// that accepts and drops at once still sees the waits grow.
//
// Transient classifies Connect errors by what a repeat of the same call, as it was (the
// same idempotency key), can expect:
//
//   - Unavailable, Aborted: palyrad cannot serve the call now (its database is down, a
//     concurrent change ended it), or the connection failed. Transient.
//   - Canceled: the caller's context being alive (callers look at it first), palyrad or
//     the connection ended the call, as a stopping replica does. Transient.
//   - Unknown, Internal: transient when the connection failed (an HTTP/2 stream reset);
//     final when palyrad answered, for the same call would fail the same way.
//   - DeadlineExceeded: final; the time the caller allowed is up (palyrad learns its
//     deadline from the caller).
//   - ResourceExhausted: a rate limit; not transient for a one-shot command, which
//     shows the Retry-After, but a loop that waits anyway (a node waiting for its
//     pairing decision) waits at least that long (Throttled).
//   - Anything else is palyrad's final answer, and an error that is not a call's (a
//     failed write of the output) is not transient either.
//
// CreateDispatch and ExecuteCapability carry idempotency keys, so a transient failure
// is safely repeated; the watches and polls only read. The node agent's attach and
// renewal loops try again after every failure, transient or not: a node has no one to
// hand an error to, so it logs it and keeps trying. palyrad's own loops (the
// notification listener, the server certificate's renewal) do the same; the database's
// absence reaches them as store.ErrUnavailable.
package retry

import (
	"context"
	"errors"
	"math/rand/v2"
	"strconv"
	"time"

	"connectrpc.com/connect"
)

// Backoff is an exponential backoff with full jitter (package documentation). Set its
// fields, then call Next after each failure. It is used by one goroutine at a time.
type Backoff struct {
	// Initial is the ceiling of the first wait; Max caps the ceiling.
	Initial, Max time.Duration
	// Stable is how long an attempt must have held for Held to start the waits over;
	// 0 means that only Reset does.
	Stable time.Duration
	// Rand returns a uniformly random number in [0, n) (n > 0); nil means
	// math/rand/v2.Int64N. Tests inject it.
	Rand func(n int64) int64

	ceiling time.Duration // of the next wait; 0 before the first
}

// Next returns the wait before the next attempt, and doubles the ceiling up to Max.
func (b *Backoff) Next() time.Duration {
	if b.ceiling == 0 {
		b.ceiling = b.Initial
	}
	ceiling := b.ceiling
	b.ceiling = min(2*b.ceiling, b.Max)
	if ceiling <= 0 {
		return 0
	}
	draw := b.Rand
	if draw == nil {
		draw = rand.Int64N
	}
	return time.Duration(draw(int64(ceiling) + 1))
}

// Reset starts the waits over from Initial: the attempt succeeded.
func (b *Backoff) Reset() { b.ceiling = 0 }

// Held notes that an attempt held for d before it failed: Stable or longer starts the
// waits over.
func (b *Backoff) Held(d time.Duration) {
	if b.Stable > 0 && d >= b.Stable {
		b.Reset()
	}
}

// Sleep waits for d, or until ctx ends, when it returns ctx's error.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Transient reports whether a failed call may succeed when made again as it was: the
// connection failed before palyrad answered, or palyrad answered that it cannot serve
// the call now (package documentation). The caller looks at its own context first: a
// call it cancelled is not transient.
func Transient(err error) bool {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return false
	}
	switch ce.Code() {
	case connect.CodeUnavailable, connect.CodeAborted, connect.CodeCanceled:
		return true
	case connect.CodeUnknown, connect.CodeInternal:
		// An answer, or the connection's failure (an HTTP/2 stream reset, say).
		return !connect.IsWireError(ce)
	}
	return false
}

// Throttled reports whether err is palyrad's refusal for a rate limit
// (ResourceExhausted), and returns the wait its Retry-After header asks for (whole
// seconds; 0 when it names none).
func Throttled(err error) (time.Duration, bool) {
	var ce *connect.Error
	if !errors.As(err, &ce) || ce.Code() != connect.CodeResourceExhausted {
		return 0, false
	}
	s, perr := strconv.Atoi(ce.Meta().Get("Retry-After"))
	if perr != nil || s <= 0 {
		return 0, true
	}
	return time.Duration(s) * time.Second, true
}
