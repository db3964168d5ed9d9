package access

import (
	"net"
	"sync"
	"time"
)

// FailureLimiter rate limits failed authentication per remote address: each address
// has a bucket of failureBurst failures, refilled at failureRefill a minute; an address
// with an empty bucket is refused before its credentials are even looked at. It is kept
// in memory by each replica.
type FailureLimiter struct {
	now func() time.Time

	mu      sync.Mutex // guards buckets
	buckets map[string]*failureBucket
}

const (
	failureBurst  = 20
	failureRefill = 20 // a minute
	// limiterSweepAt is the number of addresses above which full buckets are dropped.
	limiterSweepAt = 10000
)

type failureBucket struct {
	tokens float64
	at     time.Time
}

// NewFailureLimiter returns a limiter; now nil means time.Now.
func NewFailureLimiter(now func() time.Time) *FailureLimiter {
	if now == nil {
		now = time.Now
	}
	return &FailureLimiter{now: now, buckets: map[string]*failureBucket{}}
}

// refillLocked brings b up to date.
func (l *FailureLimiter) refillLocked(b *failureBucket, now time.Time) {
	b.tokens = min(failureBurst, b.tokens+now.Sub(b.at).Minutes()*failureRefill)
	b.at = now
}

// Blocked reports whether addr has used up its failures, and when it may try again.
func (l *FailureLimiter) Blocked(addr string) (time.Duration, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[hostOf(addr)]
	if !ok {
		return 0, false
	}
	now := l.now()
	l.refillLocked(b, now)
	if b.tokens >= 1 {
		return 0, false
	}
	return time.Duration((1 - b.tokens) / failureRefill * float64(time.Minute)), true
}

// Failed records a failed authentication from addr.
func (l *FailureLimiter) Failed(addr string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now, host := l.now(), hostOf(addr)
	b, ok := l.buckets[host]
	if !ok {
		if len(l.buckets) >= limiterSweepAt {
			l.sweepLocked(now)
		}
		b = &failureBucket{tokens: failureBurst, at: now}
		l.buckets[host] = b
	}
	l.refillLocked(b, now)
	b.tokens = max(b.tokens-1, 0)
}

// sweepLocked forgets the addresses whose buckets have refilled.
func (l *FailureLimiter) sweepLocked(now time.Time) {
	for host, b := range l.buckets {
		if l.refillLocked(b, now); b.tokens >= failureBurst {
			delete(l.buckets, host)
		}
	}
}

// hostOf strips the port of an address.
func hostOf(addr string) string {
	if host, _, err := net.SplitHostPort(addr); err == nil {
		return host
	}
	return addr
}
