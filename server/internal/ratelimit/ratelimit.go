// Package ratelimit is an in-memory token bucket per key (a remote address, say), kept
// by each replica: a burst of events, refilled at a steady rate. Keys whose buckets
// have refilled are forgotten once there are many.
package ratelimit

import (
	"math"
	"net"
	"strconv"
	"sync"
	"time"
)

// sweepAt is the number of keys above which full buckets are forgotten.
const sweepAt = 10000

// Keyed is a token bucket per key. It is safe for concurrent use.
type Keyed struct {
	burst     float64
	perMinute float64
	now       func() time.Time

	mu      sync.Mutex // guards buckets
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

// Options configure a Keyed limiter.
type Options struct {
	// Burst is how many events a key may have at once.
	Burst int
	// PerMinute is how many events a minute refill a key's bucket.
	PerMinute float64
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// NewKeyed returns buckets of opts.Burst events refilled at opts.PerMinute a minute.
func NewKeyed(opts Options) *Keyed {
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	return &Keyed{burst: float64(opts.Burst), perMinute: opts.PerMinute, now: now, buckets: map[string]*bucket{}}
}

// bucketLocked returns key's bucket, refilled up to now.
func (l *Keyed) bucketLocked(key string) *bucket {
	now := l.now()
	b, ok := l.buckets[key]
	if !ok {
		if len(l.buckets) >= sweepAt {
			l.sweepLocked(now)
		}
		b = &bucket{tokens: l.burst, at: now}
		l.buckets[key] = b
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.at).Minutes()*l.perMinute)
	b.at = now
	return b
}

// wait is how long until the bucket holds one event.
func (l *Keyed) wait(b *bucket) time.Duration {
	return time.Duration((1 - b.tokens) / l.perMinute * float64(time.Minute))
}

// Peek reports whether key may have an event now, without taking it, and else how long
// to wait.
func (l *Keyed) Peek(key string) (time.Duration, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.bucketLocked(key)
	if b.tokens >= 1 {
		return 0, true
	}
	return l.wait(b), false
}

// Take takes an event for key if one is available, and else says how long to wait.
func (l *Keyed) Take(key string) (time.Duration, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.bucketLocked(key)
	if b.tokens >= 1 {
		b.tokens--
		return 0, true
	}
	return l.wait(b), false
}

// Spend counts an event for key that already happened (a failure found after the
// fact), emptying the bucket at worst.
func (l *Keyed) Spend(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.bucketLocked(key)
	b.tokens = max(b.tokens-1, 0)
}

// sweepLocked forgets the keys whose buckets have refilled.
func (l *Keyed) sweepLocked(now time.Time) {
	for key, b := range l.buckets {
		if min(l.burst, b.tokens+now.Sub(b.at).Minutes()*l.perMinute) >= l.burst {
			delete(l.buckets, key)
		}
	}
}

// Host returns the host of a "host:port" address, the key for per-address limits.
func Host(addr string) string {
	if host, _, err := net.SplitHostPort(addr); err == nil {
		return host
	}
	return addr
}

// RetryAfter returns the value of a Retry-After header for a wait: whole seconds,
// rounded up, at least one.
func RetryAfter(wait time.Duration) string {
	return strconv.Itoa(max(1, int(math.Ceil(wait.Seconds()))))
}
