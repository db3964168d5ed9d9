package node

import "time"

// backoff is an exponential backoff with full jitter: the n-th wait is drawn uniformly
// from [0, min(max, initial·2ⁿ)]. It is used by one goroutine at a time.
type backoff struct {
	initial, max time.Duration
	// rand returns a number in [0, n); it is the Agent's random source.
	rand func(n int64) int64

	cur time.Duration // the current ceiling; 0 before the first wait
}

// next returns the next wait and doubles the ceiling.
func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.initial
	}
	ceiling := b.cur
	b.cur = min(2*b.cur, b.max)
	if ceiling <= 0 {
		return 0
	}
	return time.Duration(b.rand(int64(ceiling) + 1))
}

// reset starts over from the initial ceiling.
func (b *backoff) reset() { b.cur = 0 }
