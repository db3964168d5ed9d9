package retry

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
)

// top draws the top of every range and records the ranges asked for.
type top struct{ asked []int64 }

func (r *top) draw(n int64) int64 { r.asked = append(r.asked, n); return n - 1 }

// TestBackoffGrowsToItsCap checks the ceilings: doubling from Initial, capped at Max,
// each wait drawn from [0, ceiling].
func TestBackoffGrowsToItsCap(t *testing.T) {
	t.Parallel()
	r := &top{}
	b := &Backoff{Initial: 500 * time.Millisecond, Max: 30 * time.Second, Rand: r.draw}
	var got []time.Duration
	for range 9 {
		got = append(got, b.Next())
	}
	s := time.Second
	want := []time.Duration{500 * time.Millisecond, s, 2 * s, 4 * s, 8 * s, 16 * s, 30 * s, 30 * s, 30 * s}
	if !slices.Equal(got, want) {
		t.Errorf("waits at the top of the jitter %v, want %v", got, want)
	}
	for i, n := range r.asked {
		if n != int64(want[i])+1 {
			t.Errorf("draw %d asked for [0, %d), want [0, %d]: full jitter includes the ceiling", i, n, want[i])
		}
	}
}

// TestBackoffFullJitter checks that the wait is the random draw itself: anywhere from
// zero to the ceiling.
func TestBackoffFullJitter(t *testing.T) {
	t.Parallel()
	draws := []int64{0, 123, int64(2 * time.Second)}
	b := &Backoff{Initial: time.Second, Max: 4 * time.Second, Rand: func(n int64) int64 {
		d := draws[0]
		draws = draws[1:]
		if d >= n {
			t.Fatalf("draw %d out of [0, %d)", d, n)
		}
		return d
	}}
	for _, want := range []time.Duration{0, 123, 2 * time.Second} {
		if got := b.Next(); got != want {
			t.Errorf("wait %v, want the draw %v", got, want)
		}
	}
}

// TestBackoffStartsOver checks Reset, and Held with and without Stable.
func TestBackoffStartsOver(t *testing.T) {
	t.Parallel()
	r := &top{}
	b := &Backoff{Initial: 10 * time.Millisecond, Max: 50 * time.Millisecond, Stable: 5 * time.Second, Rand: r.draw}
	next := func() time.Duration { return b.Next() / time.Millisecond }
	var got []time.Duration
	got = append(got, next(), next(), next()) // 10 20 40
	b.Held(4 * time.Second)                   // not stable: the waits grow on
	got = append(got, next())                 // 50
	b.Held(5 * time.Second)                   // stable: start over
	got = append(got, next(), next())         // 10 20
	b.Reset()
	got = append(got, next()) // 10
	if want := []time.Duration{10, 20, 40, 50, 10, 20, 10}; !slices.Equal(got, want) {
		t.Errorf("waits %v ms, want %v", got, want)
	}

	// Without Stable, only Reset starts over.
	b = &Backoff{Initial: 10 * time.Millisecond, Max: 50 * time.Millisecond, Rand: r.draw}
	b.Next()
	b.Held(time.Hour)
	if got := b.Next(); got != 20*time.Millisecond {
		t.Errorf("after Held without Stable: %v, want 20ms", got)
	}
}

// TestBackoffZero checks that a zero Initial waits not at all and draws nothing.
func TestBackoffZero(t *testing.T) {
	t.Parallel()
	b := &Backoff{Rand: func(int64) int64 { t.Fatal("drew for a zero ceiling"); return 0 }}
	if d := b.Next(); d != 0 {
		t.Errorf("wait %v, want 0", d)
	}
	// The default source stays within the ceiling.
	b = &Backoff{Initial: time.Millisecond, Max: time.Millisecond}
	for range 100 {
		if d := b.Next(); d < 0 || d > time.Millisecond {
			t.Fatalf("wait %v outside [0, 1ms]", d)
		}
	}
}

// TestSleep checks that Sleep returns once the time has passed, and at once with the
// context's error when it has ended.
func TestSleep(t *testing.T) {
	t.Parallel()
	if err := Sleep(t.Context(), 0); err != nil {
		t.Errorf("Sleep(0) = %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := Sleep(ctx, time.Hour); !errors.Is(err, context.Canceled) {
		t.Errorf("Sleep with an ended context = %v", err)
	}
}

// TestTransient: a failure of the connection, or palyrad's Unavailable, Aborted or
// Canceled, is transient; every other answer of palyrad is final, InvalidArgument,
// Internal and rate limits included, and so is an error that is not a call's.
func TestTransient(t *testing.T) {
	t.Parallel()
	answer := func(c connect.Code) error { return connect.NewWireError(c, errors.New("palyrad says no")) }
	local := func(c connect.Code) error { return connect.NewError(c, errors.New("connection reset")) }
	for name, tc := range map[string]struct {
		err  error
		want bool
	}{
		"answered unavailable":         {answer(connect.CodeUnavailable), true},
		"answered aborted":             {answer(connect.CodeAborted), true},
		"answered canceled":            {answer(connect.CodeCanceled), true},
		"answered invalid argument":    {answer(connect.CodeInvalidArgument), false},
		"answered internal":            {answer(connect.CodeInternal), false},
		"answered unknown":             {answer(connect.CodeUnknown), false},
		"answered failed precondition": {answer(connect.CodeFailedPrecondition), false},
		"answered not found":           {answer(connect.CodeNotFound), false},
		"answered permission denied":   {answer(connect.CodePermissionDenied), false},
		"answered rate limited":        {answer(connect.CodeResourceExhausted), false},
		"answered deadline":            {answer(connect.CodeDeadlineExceeded), false},
		"connection unavailable":       {local(connect.CodeUnavailable), true},
		"stream reset (internal)":      {local(connect.CodeInternal), true},
		"stream cancelled":             {local(connect.CodeCanceled), true},
		"connection unknown":           {local(connect.CodeUnknown), true},
		"local invalid argument":       {local(connect.CodeInvalidArgument), false},
		"deadline":                     {local(connect.CodeDeadlineExceeded), false},
		"wrapped":                      {errors.Join(errors.New("create"), answer(connect.CodeUnavailable)), true},
		"not a call's":                 {errors.New("write the output: broken pipe"), false},
		"nil":                          {nil, false},
	} {
		if got := Transient(tc.err); got != tc.want {
			t.Errorf("%s: Transient(%v) = %v, want %v", name, tc.err, got, tc.want)
		}
	}
}

// TestThrottled checks that a rate limit is recognised with its Retry-After, and
// nothing else is.
func TestThrottled(t *testing.T) {
	t.Parallel()
	limited := func(retryAfter string) error {
		err := connect.NewWireError(connect.CodeResourceExhausted, errors.New("too many calls"))
		if retryAfter != "" {
			err.Meta().Set("Retry-After", retryAfter)
		}
		return err
	}
	for name, tc := range map[string]struct {
		err  error
		wait time.Duration
		ok   bool
	}{
		"with Retry-After":    {limited("3"), 3 * time.Second, true},
		"without Retry-After": {limited(""), 0, true},
		"malformed":           {limited("soon"), 0, true},
		"unavailable":         {connect.NewWireError(connect.CodeUnavailable, errors.New("down")), 0, false},
		"not a call's":        {errors.New("broken pipe"), 0, false},
	} {
		if wait, ok := Throttled(tc.err); wait != tc.wait || ok != tc.ok {
			t.Errorf("%s: Throttled = %v, %v; want %v, %v", name, wait, ok, tc.wait, tc.ok)
		}
	}
}

// refusedDial returns the error of a real dial to a loopback port that nothing
// listens on.
func refusedDial(t *testing.T) error {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c, err := net.Dial("tcp", addr)
	if err == nil {
		c.Close()
		t.Skipf("something listens on %s again", addr)
	}
	return err
}

// TestRefused: a dial refused because nothing listens is told apart, however wrapped
// (the node agent sees it inside a Connect error); a reset, an answer or a timeout is
// not.
func TestRefused(t *testing.T) {
	t.Parallel()
	refused := refusedDial(t)
	for name, tc := range map[string]struct {
		err  error
		want bool
	}{
		"refused dial":          {refused, true},
		"in a Connect error":    {connect.NewError(connect.CodeUnavailable, fmt.Errorf("post: %w", refused)), true},
		"reset":                 {connect.NewError(connect.CodeUnavailable, &net.OpError{Op: "read", Err: syscall.ECONNRESET}), false},
		"answered unavailable":  {connect.NewWireError(connect.CodeUnavailable, errors.New("replica starting")), false},
		"answered rate limited": {connect.NewWireError(connect.CodeResourceExhausted, errors.New("slow down")), false},
		"timeout":               {context.DeadlineExceeded, false},
		"nil":                   {nil, false},
	} {
		if got := Refused(tc.err); got != tc.want {
			t.Errorf("%s: Refused(%v) = %v, want %v", name, tc.err, got, tc.want)
		}
	}
}

// TestAfter checks that a refused dial waits within Refused without growing the
// ceiling, that every other failure grows it, and that without Refused a refusal is
// a failure like the others.
func TestAfter(t *testing.T) {
	t.Parallel()
	refused := refusedDial(t)
	reset := connect.NewError(connect.CodeUnavailable, &net.OpError{Op: "read", Err: syscall.ECONNRESET})
	r := &top{}
	b := &Backoff{Initial: 10 * time.Millisecond, Max: time.Second, Refused: 25 * time.Millisecond, Rand: r.draw}
	var got []time.Duration
	for _, err := range []error{reset, refused, refused, refused, reset, refused, reset} {
		got = append(got, b.After(err)/time.Millisecond)
	}
	if want := []time.Duration{10, 25, 25, 25, 20, 25, 40}; !slices.Equal(got, want) {
		t.Errorf("waits %v ms, want %v", got, want)
	}

	b = &Backoff{Initial: 10 * time.Millisecond, Max: time.Second, Rand: r.draw}
	got = nil
	for range 3 {
		got = append(got, b.After(refused)/time.Millisecond)
	}
	if want := []time.Duration{10, 20, 40}; !slices.Equal(got, want) {
		t.Errorf("without Refused: waits %v ms, want %v", got, want)
	}
}

// TestAttachBackoff checks the node agent's policy: full jitter from 500 ms doubling
// to 30 s, and at most 2 s after a refused dial.
func TestAttachBackoff(t *testing.T) {
	t.Parallel()
	r := &top{}
	b := AttachBackoff(r.draw)
	if got := b.After(refusedDial(t)); got != 2*time.Second {
		t.Errorf("after a refused dial: %v at the top of the jitter, want 2s", got)
	}
	var got []time.Duration
	for range 8 {
		got = append(got, b.After(errors.New("TLS handshake timeout")))
	}
	s := time.Second
	if want := []time.Duration{s / 2, s, 2 * s, 4 * s, 8 * s, 16 * s, 30 * s, 30 * s}; !slices.Equal(got, want) {
		t.Errorf("after other failures: %v, want %v", got, want)
	}
}
