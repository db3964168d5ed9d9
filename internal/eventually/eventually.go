// Package eventually waits, in tests, for what another goroutine or process makes
// happen: it polls a condition, ever less often, until it holds, and fails the test with
// what it last saw once a generous deadline has passed. Tests wait for events so and
// never assert how soon they came (bench/ measures that), so that they pass on a busy
// machine.
package eventually

import (
	"errors"
	"testing"
	"time"
)

// Deadline is how long True and NoError wait: long enough for a machine whose CPUs are
// all busy, so that only a condition that does not come fails.
const Deadline = 2 * time.Minute

// The polls start this often and slow down to maxPoll: a quick event is seen at once,
// and a long wait stays within an API token's rate limit (120 calls a minute by default).
const (
	firstPoll = 10 * time.Millisecond
	maxPoll   = time.Second
)

// errFalse is what a condition of True that does not hold reports.
var errFalse = errors.New("false")

// Waiter waits up to its deadline.
type Waiter struct{ deadline time.Duration }

// Within returns a waiter with another deadline than Deadline: longer, for work that is
// slow by design (thousands of nodes in a benchmark).
func Within(d time.Duration) Waiter { return Waiter{deadline: d} }

// True polls cond until it returns true; it fails tb once Deadline has passed.
func True(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	Within(Deadline).True(tb, what, cond)
}

// NoError polls check until it returns nil; it fails tb once Deadline has passed, with
// check's last error, which says what check saw.
func NoError(tb testing.TB, what string, check func() error) {
	tb.Helper()
	Within(Deadline).NoError(tb, what, check)
}

// True polls cond until it returns true; it fails tb once the deadline has passed.
func (w Waiter) True(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	w.NoError(tb, what, func() error {
		if cond() {
			return nil
		}
		return errFalse
	})
}

// NoError polls check until it returns nil; it fails tb once the deadline has passed,
// with check's last error.
func (w Waiter) NoError(tb testing.TB, what string, check func() error) {
	tb.Helper()
	start := time.Now()
	for poll := firstPoll; ; poll = min(2*poll, maxPoll) {
		err := check()
		if err == nil {
			return
		}
		if waited := time.Since(start); waited > w.deadline {
			if errors.Is(err, errFalse) {
				tb.Fatalf("%s: not after %v", what, waited.Round(time.Millisecond))
			}
			tb.Fatalf("%s: not after %v; last seen: %v", what, waited.Round(time.Millisecond), err)
		}
		time.Sleep(poll)
	}
}
