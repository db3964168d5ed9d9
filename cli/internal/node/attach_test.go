package node

import (
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/palyra/palyra/internal/eventually"
	"github.com/palyra/palyra/internal/retry"
)

// manualClock is a clock that moves only when the test says.
type manualClock struct {
	mu  sync.Mutex // guards now
	now time.Time
}

func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *manualClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// TestReattachResumesTheTLSSession checks that the agent re-attaches with a resumed TLS
// session, sparing both sides the certificates' signatures.
func TestReattachResumesTheTLSSession(t *testing.T) {
	t.Parallel()
	b := newBench(t, time.Time{}, time.Time{})
	b.start(b.options())
	s := b.session()
	if s.resumed {
		t.Fatal("the first session resumed a TLS session it cannot have")
	}
	s.end <- connect.NewError(connect.CodeUnavailable, errors.New("replica stopping"))
	if s = b.session(); !s.resumed || !s.peer.Equal(b.cert) {
		t.Errorf("the re-attach resumed: %v, with the paired certificate: %v; want both", s.resumed, s.peer.Equal(b.cert))
	}
}

// TestBackoffResetsAfterStableAttach is the slow return after replica failures: a node
// whose replica was killed again and again kept the backoff it had grown while the
// replica was down (up to 30 s), because only a session of a minute reset it. A session
// that was welcomed and held for a few seconds now resets it; one that is dropped at
// once does not, so that a replica that welcomes and drops at once is not hammered.
func TestBackoffResetsAfterStableAttach(t *testing.T) {
	t.Parallel()
	b := newBench(t, time.Time{}, time.Time{})
	b.set(func(f *fakeDaemon) { f.refuse = 3 })
	clock := &manualClock{now: time.Now()}
	var mu sync.Mutex
	var ceilings []time.Duration
	o := b.options()
	o.Now = clock.Now
	o.Rand = func(n int64) int64 {
		if n != 1<<30 { // not the renewal's jitter
			mu.Lock()
			ceilings = append(ceilings, time.Duration(n-1))
			mu.Unlock()
		}
		return n / 2
	}
	r := b.start(o)
	attached := func() {
		t.Helper()
		eventually.True(t, "the agent records the session", func() bool {
			r.agent.statusMu.Lock()
			defer r.agent.statusMu.Unlock()
			return r.agent.status.Attached
		})
	}
	lost := connect.NewError(connect.CodeUnavailable, errors.New("replica stopping"))

	// Three refused attempts (the replica is down) grow the backoff.
	s := b.session()
	attached()
	// Welcomed, then dropped at once: not stable, the backoff grows on.
	s.end <- lost
	s = b.session()
	attached()
	// Welcomed and held for 10 s, then dropped: the backoff starts over.
	clock.Advance(10 * time.Second)
	s.end <- lost
	b.session()

	mu.Lock()
	defer mu.Unlock()
	ms := time.Millisecond
	want := []time.Duration{10 * ms, 20 * ms, 40 * ms, 50 * ms, 10 * ms}
	if !slices.Equal(ceilings, want) {
		t.Errorf("backoff ceilings %v, want %v", ceilings, want)
	}
}

// TestRefusedDialsRetrySoonOverloadBacksOff is the re-attach after a restart: a node
// whose dials palyrad refused while it was down (nothing listening) kept doubling its
// backoff, and slept through palyrad's return on ceilings of 8–16 s. A refused dial
// costs palyrad nothing, so the agent now retries it within the short ceiling
// (retry.Backoff.Refused), which does not grow: here the overload ceiling can reach an
// hour, and the node is back only because the refusals never grew it. A palyrad that
// accepts and resets every connection (its handshake admission shedding under
// overload) may be overloaded: the waits double, so that it is not hammered; and the
// node keeps its TLS session through the failed handshakes, so that it comes back
// with a cheap resumption.
func TestRefusedDialsRetrySoonOverloadBacksOff(t *testing.T) {
	t.Parallel()
	b := newBench(t, time.Time{}, time.Time{})
	var mu sync.Mutex
	var ceilings []time.Duration
	o := b.options()
	o.tune.attach = retry.Backoff{Initial: 10 * time.Millisecond, Max: time.Hour, Refused: 20 * time.Millisecond, Stable: time.Hour}
	o.Rand = func(n int64) int64 {
		if n != 1<<30 { // not the renewal's jitter
			mu.Lock()
			ceilings = append(ceilings, time.Duration(n-1))
			mu.Unlock()
		}
		return n - 1 // the top of the range: the longest wait the policy allows
	}
	b.start(o)
	b.session()
	drawn := func() []time.Duration {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(ceilings)
	}
	// waitDraws waits until the agent drew n waits since it had drawn from.
	waitDraws := func(from, n int) []time.Duration {
		t.Helper()
		eventually.True(t, "the agent's attempts", func() bool { return len(drawn()) >= from+n })
		return drawn()[from:]
	}

	// palyrad stops: the session ends, then every dial is refused.
	from := len(drawn())
	b.down(false)
	refused := waitDraws(from, 8)
	b.up()
	b.session()
	ms := time.Millisecond
	// The session's end may be an overload: the first wait's ceiling is Initial.
	if want := append([]time.Duration{10 * ms}, slices.Repeat([]time.Duration{20 * ms}, len(refused)-1)...); !slices.Equal(refused, want) {
		t.Errorf("ceilings after the session ended and while dials were refused: %v, want %v", refused, want)
	}

	// palyrad sheds every connection: the ceilings double from where they were.
	from = len(drawn())
	b.down(true)
	shed := waitDraws(from, 5)
	b.up()
	// Each shed handshake offered the session, which crypto/tls then dropped; the agent
	// kept it, and resumes it.
	if s := b.session(); !s.resumed {
		t.Error("the attach after the shed handshakes did not resume the TLS session")
	}
	if want := []time.Duration{20 * ms, 40 * ms, 80 * ms, 160 * ms, 320 * ms}; !slices.Equal(shed[:5], want) {
		t.Errorf("ceilings while palyrad shed every connection: %v, want %v first", shed, want)
	}
}
