package access

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/palyra/palyra/gen/dbsqlc"
)

// Leased rate limiting. A token's rate limit holds across replicas because its state is
// one row in the database (TakeTokenCalls). Writing that row on every call makes it a
// hot row, so each replica leases calls: one update of the row admits up to leaseSize
// calls at once, which the replica then hands out from memory until they run out or
// leaseTTL passes. Leased calls that go unused lapse unused; the database counted
// them, so the limit is never exceeded across replicas, only sometimes not reached.
// A lease is a tenth of a second's allowance, so that tokens of up to 600 calls a
// minute lease one call at a time and are limited exactly as without leases.
//
// A refusal is remembered as well: the row's theoretical arrival time never moves back,
// so no call can fit before the refusal's retry time, and the calls refused meanwhile
// need no round trip either.

const (
	// leaseTTL is how long leased calls may be handed out.
	leaseTTL = time.Second
	// maxLeaseSize bounds the calls one lease admits.
	maxLeaseSize = 64
	// maxLeases bounds the number of tokens with a lease on one replica.
	maxLeases = 10_000
)

// leaseSize is how many calls a lease asks for at a rate limit of ratePerMinute: a tenth
// of a second's allowance, at least 1 and at most maxLeaseSize.
func leaseSize(ratePerMinute int32) int32 {
	return min(max(ratePerMinute/600, 1), maxLeaseSize)
}

// lease is one replica's share of one token's allowance.
type lease struct {
	// lock is a mutex that waiting for can be cancelled. Its holder owns the fields
	// below, and holds it across a refill's database call: one refill at a time per
	// token, and the callers that waited take from the refilled lease.
	lock chan struct{}

	remaining    int32     // calls left to hand out
	expires      time.Time // when the remaining calls lapse
	refusedUntil time.Time // no call fits before then
	size         int32     // calls the next refill asks for
}

// leases are the leases of one replica, by token id. It is safe for concurrent use;
// its lock is never held across a database call.
type leases struct {
	mu sync.Mutex // guards m
	m  map[string]*lease
}

// newLeases returns an empty lease table.
func newLeases() *leases {
	return &leases{m: map[string]*lease{}}
}

// get returns the lease of token id, creating it when there is none. A full table
// first drops the leases that have lapsed at now (and are not in use), then, if still
// full, any one: the callers that hold it finish with it, and at worst the next refill
// of that token asks the database once more than needed.
func (ls *leases) get(id string, now time.Time) *lease {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if l, ok := ls.m[id]; ok {
		return l
	}
	if len(ls.m) >= maxLeases {
		ls.evictLocked(now)
	}
	l := &lease{lock: make(chan struct{}, 1), size: 1}
	ls.m[id] = l
	return l
}

// evictLocked drops the leases that have lapsed at now and are not in use and, when
// none has, one other lease.
func (ls *leases) evictLocked(now time.Time) {
	before := len(ls.m)
	for id, l := range ls.m {
		select {
		case l.lock <- struct{}{}:
			if !now.Before(l.expires) && !now.Before(l.refusedUntil) {
				delete(ls.m, id)
			}
			<-l.lock
		default: // in use
		}
	}
	if len(ls.m) < before {
		return
	}
	for id := range ls.m {
		delete(ls.m, id)
		return
	}
}

// Take admits one call of the token under its rate limit, which holds across replicas
// (the state is one row in the database), and records the token's use. Calls are
// leased from the row in batches of up to a tenth of a second's allowance (see
// leaseSize), so the token's last use, as recorded, is the time of its latest lease or
// refusal from the database: up to a second before its actual last call. The write does
// not wait for the disk (store.Lossy): a crash of PostgreSQL forgets at most the last
// moments' calls. Over the limit, Take returns a *RateLimitedError.
func (ts *Tokens) Take(ctx context.Context, tokenID string) error {
	l := ts.leases.get(tokenID, ts.now())
	select {
	case l.lock <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("access: rate limit: %w", ctx.Err())
	}
	defer func() { <-l.lock }()
	now := ts.now()
	if l.remaining > 0 && now.Before(l.expires) {
		l.remaining--
		return nil
	}
	if now.Before(l.refusedUntil) {
		return &RateLimitedError{RetryAfter: ceilMillisecond(l.refusedUntil.Sub(now))}
	}
	row, err := ts.db.Lossy().TakeTokenCalls(ctx, dbsqlc.TakeTokenCallsParams{ID: tokenID, Now: &now, N: l.size})
	if err != nil {
		return fmt.Errorf("access: rate limit: %w", err)
	}
	l.size = leaseSize(row.RateLimitPerMinute)
	if row.Granted == 0 {
		wait := ceilMillisecond(time.Duration(row.RetryAfterSeconds * float64(time.Second)))
		l.remaining, l.refusedUntil = 0, now.Add(wait)
		return &RateLimitedError{RetryAfter: wait}
	}
	l.remaining, l.expires = row.Granted-1, now.Add(leaseTTL)
	return nil
}

// ceilMillisecond rounds d up to a whole millisecond.
func ceilMillisecond(d time.Duration) time.Duration {
	return time.Duration(math.Ceil(float64(d)/float64(time.Millisecond))) * time.Millisecond
}
