package eventually

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// recorder is a testing.TB that records a failure instead of failing the test; as
// testing's Fatalf it ends the goroutine that calls it.
type recorder struct {
	testing.TB
	failure string
}

func (r *recorder) Helper() {}

func (r *recorder) Fatalf(format string, args ...any) {
	r.failure = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// wait runs f, which may end its goroutine through r.Fatalf, and returns r's failure.
func (r *recorder) wait(f func(r *recorder)) string {
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(r)
	}()
	<-done
	return r.failure
}

func TestTrueReturnsOnceTheConditionHolds(t *testing.T) {
	t.Parallel()
	var n atomic.Int32
	go func() {
		for range 3 {
			n.Add(1)
		}
	}()
	r := &recorder{TB: t}
	if failure := r.wait(func(r *recorder) { True(r, "three", func() bool { return n.Load() == 3 }) }); failure != "" {
		t.Errorf("failed: %s", failure)
	}
}

func TestFailureSaysWhatItLastSaw(t *testing.T) {
	t.Parallel()
	polls := 0
	failure := (&recorder{TB: t}).wait(func(r *recorder) {
		Within(50*time.Millisecond).NoError(r, "the answer", func() error {
			polls++
			return fmt.Errorf("saw %d", polls)
		})
	})
	if want := fmt.Sprintf("last seen: saw %d", polls); !strings.HasPrefix(failure, "the answer: not after ") || !strings.HasSuffix(failure, want) {
		t.Errorf("failure %q, want it to name what it waited for and end in %q", failure, want)
	}
	failure = (&recorder{TB: t}).wait(func(r *recorder) { Within(0).True(r, "never", func() bool { return false }) })
	if !strings.HasPrefix(failure, "never: not after ") || strings.Contains(failure, "last seen") {
		t.Errorf("failure of True %q", failure)
	}
}

func TestPollsSlowDown(t *testing.T) {
	t.Parallel()
	var at []time.Time
	if failure := (&recorder{TB: t}).wait(func(r *recorder) {
		Within(time.Hour).NoError(r, "six polls", func() error {
			if at = append(at, time.Now()); len(at) == 6 {
				return nil
			}
			return errors.New("not yet")
		})
	}); failure != "" {
		t.Fatal(failure)
	}
	// The pauses double from firstPoll: each is at least the one it doubles.
	for i := 1; i < len(at); i++ {
		if gap, want := at[i].Sub(at[i-1]), firstPoll<<(i-1); gap < want {
			t.Errorf("pause %d was %v, want at least %v", i, gap, want)
		}
	}
}
