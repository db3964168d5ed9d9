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
// A client that keeps a connection to a server (the node agent's Attach) tells one
// failure apart (After): a dial that the server's host refused (Refused: nothing
// listens on the port, the server is stopped or restarting) costs the server nothing,
// the kernel answers it, so the next attempt follows within the short ceiling Refused,
// drawn with full jitter, and the waits do not grow; the clients that found the server
// down come back within Refused of its return, spread over it, instead of sleeping
// through it on ceilings that grew while it was down. Every other failure (a
// handshake that the server shed or that timed out, a reset, an Unavailable or
// ResourceExhausted answer, a session that ended) may mean that the server is
// overloaded, and waits by the exponential ceiling, so that an overload is not
// hammered. AttachBackoff is the node agent's policy.
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
	"runtime"
	"strconv"
	"syscall"
	"time"

	"connectrpc.com/connect"
)

// Backoff is an exponential backoff with full jitter (package documentation). Set its
// fields, then call Next after each failure. It is used by one goroutine at a time.
type Backoff struct {
	// Initial is the ceiling of the first wait; Max caps the ceiling.
	Initial, Max time.Duration
	// Refused is the ceiling of the wait after a refused dial (After); 0 means that
	// such a failure waits as any other.
	Refused time.Duration
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
	return b.draw(ceiling)
}

// After returns the wait before the next attempt after one that failed with err: a
// draw below Refused when the dial was refused (Refused), which leaves the ceiling as
// it was, else Next.
func (b *Backoff) After(err error) time.Duration {
	if b.Refused > 0 && Refused(err) {
		return b.draw(b.Refused)
	}
	return b.Next()
}

// draw returns a wait drawn uniformly from [0, ceiling].
func (b *Backoff) draw(ceiling time.Duration) time.Duration {
	if ceiling <= 0 {
		return 0
	}
	draw := b.Rand
	if draw == nil {
		draw = rand.Int64N
	}
	return time.Duration(draw(int64(ceiling) + 1))
}

// AttachBackoff returns the node agent's backoff between attach attempts (package
// documentation), drawing from rand (nil: math/rand/v2): 500 ms doubling to 30 s
// after a failure that may be an overload, started over by a session that held 5 s,
// and at most 2 s after a refused dial. bench/ reconnects its nodes with it.
func AttachBackoff(rand func(n int64) int64) *Backoff {
	return &Backoff{Initial: 500 * time.Millisecond, Max: 30 * time.Second, Refused: 2 * time.Second,
		Stable: 5 * time.Second, Rand: rand}
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

// wsaeconnrefused is Windows' errno of a refused connection (WSAECONNREFUSED).
const wsaeconnrefused = 10061

// Refused reports whether err is a dial that the server's host refused: nothing
// listens on the port. It says nothing of the server's load: no server process saw
// the attempt.
func Refused(err error) bool {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return false
	}
	return errno == syscall.ECONNREFUSED || runtime.GOOS == "windows" && errno == wsaeconnrefused
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
