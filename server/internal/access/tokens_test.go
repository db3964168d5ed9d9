package access

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/oklog/ulid/v2"

	"github.com/palyra/palyra/internal/eventually"
	"github.com/palyra/palyra/server/internal/audit"
	"github.com/palyra/palyra/server/internal/notify"
	"github.com/palyra/palyra/server/internal/store"
	"github.com/palyra/palyra/server/internal/store/storetest"
	"github.com/palyra/palyra/server/internal/testclock"
)

// tokensBundle is one database and the replicas on it.
type tokensBundle struct {
	url   string
	admin *store.Store // for the test's own SQL
	owner *Principal
}

// replica is one palyrad's Tokens, with its own pool and notification listener.
type replica struct {
	tokens *Tokens
	// listenerApp is the application_name of the replica's LISTEN connection.
	listenerApp string
}

// setupTokens creates a migrated database with an owner.
func setupTokens(t testing.TB) *tokensBundle {
	t.Helper()
	url := storetest.URL(t)
	admin, err := store.Open(t.Context(), store.Options{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(admin.Close)
	_, secret, err := CreateLocalToken(t.Context(), admin, audit.New(audit.Options{Store: admin}), CreateParams{Label: "owner", Role: Owner, RateLimit: MaxRateLimit})
	if err != nil {
		t.Fatal(err)
	}
	b := &tokensBundle{url: url, admin: admin}
	// Any replica authenticates the owner; a throwaway one will do.
	p, reason, err := b.replica(t, nil).tokens.Authenticate(t.Context(), secret)
	if err != nil {
		t.Fatalf("owner token: %v (%s)", err, reason)
	}
	b.owner = p
	return b
}

// replica starts a replica on the bundle's database, with now as its clock (nil: the
// real one), and waits until it caches tokens. Everything stops when the test ends.
func (b *tokensBundle) replica(t testing.TB, now func() time.Time) *replica {
	t.Helper()
	s, err := store.Open(t.Context(), store.Options{URL: b.url})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	cfg, err := pgx.ParseConfig(b.url)
	if err != nil {
		t.Fatal(err)
	}
	app := "listener-" + ulid.Make().String()
	cfg.RuntimeParams["application_name"] = app
	listener := notify.New(notify.Options{Config: cfg, Channels: []string{TokensChannel}})
	ts, err := NewTokens(TokensOptions{Store: s, Notify: listener, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	var wg sync.WaitGroup
	wg.Go(func() { listener.Run(ctx) })
	wg.Go(func() { ts.Run(ctx) })
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	eventually.True(t, "the replica to cache tokens", func() bool {
		ts.cache.mu.RLock()
		defer ts.cache.mu.RUnlock()
		return ts.cache.enabled
	})
	return &replica{tokens: ts, listenerApp: app}
}

// create creates a token for the owner through r.
func (b *tokensBundle) create(t testing.TB, r *replica, p CreateParams) (*Token, string) {
	t.Helper()
	if p.Label == "" {
		p.Label = "test"
	}
	if p.Role == "" {
		p.Role = Operator
	}
	tok, secret, err := r.tokens.Create(t.Context(), b.owner, p)
	if err != nil {
		t.Fatal(err)
	}
	return tok, secret
}

// exec runs SQL on the bundle's database.
func (b *tokensBundle) exec(t *testing.T, sql string, args ...any) {
	t.Helper()
	if _, err := b.admin.Pool().Exec(t.Context(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// cached reports whether r holds token id in its verified-token cache.
func (r *replica) cached(id string) bool {
	_, ok := r.tokens.cache.get(id, r.tokens.now())
	return ok
}

// authenticates reports whether r accepts secret.
func (r *replica) authenticates(t *testing.T, secret string) bool {
	t.Helper()
	_, _, err := r.tokens.Authenticate(t.Context(), secret)
	if err != nil && !errors.Is(err, ErrUnauthenticated) {
		t.Fatal(err)
	}
	return err == nil
}

func TestInvalidationReachesEveryReplica(t *testing.T) {
	t.Parallel()
	cases := map[string]func(t *testing.T, b *tokensBundle, r *replica, id string){
		"revoke": func(t *testing.T, b *tokensBundle, r *replica, id string) {
			if _, err := r.tokens.Revoke(t.Context(), b.owner, id, "test"); err != nil {
				t.Fatal(err)
			}
		},
		"rotate": func(t *testing.T, b *tokensBundle, r *replica, id string) {
			if _, _, err := r.tokens.Rotate(t.Context(), b.owner, id, nil); err != nil {
				t.Fatal(err)
			}
		},
	}
	for name, change := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setupTokens(t)
			// The second replica's clock stands still: its cache never lapses, so only the
			// invalidation (by NOTIFY) can make it refuse the token. How soon is
			// BenchmarkTokenRevocation's to measure (BENCHMARKS.md).
			first, second := b.replica(t, nil), b.replica(t, testclock.New(time.Now()).Now)
			tok, secret := b.create(t, first, CreateParams{})
			for _, r := range []*replica{first, second} {
				if !r.authenticates(t, secret) || !r.cached(tok.ID) {
					t.Fatal("a fresh token is not accepted and cached")
				}
			}
			change(t, b, first, tok.ID)
			if first.authenticates(t, secret) {
				t.Errorf("the replica that did the %s still accepts the token", name)
			}
			began := time.Now()
			eventually.True(t, "the other replica to refuse the token", func() bool { return !second.authenticates(t, secret) })
			t.Logf("the other replica refuses the token after %s", time.Since(began))
			// Handlers read the database, not the cache.
			got, err := second.tokens.Get(t.Context(), tok.ID)
			if err != nil || got.State(time.Now()) != Revoked {
				t.Errorf("Get after %s: %v, %v", name, got, err)
			}
		})
	}
}

// cachedButRevoked returns a replica and the secret of a token it has cached, and that
// was then revoked with its notification lost: the cache still accepts it.
func cachedButRevoked(t *testing.T) (*tokensBundle, *replica, string) {
	t.Helper()
	b := setupTokens(t)
	r := b.replica(t, nil)
	tok, secret := b.create(t, r, CreateParams{})
	if !r.authenticates(t, secret) {
		t.Fatal("a fresh token is refused")
	}
	b.exec(t, "alter table api_tokens disable trigger api_tokens_notify")
	b.exec(t, "update api_tokens set revoked_at = now() where id = $1", tok.ID)
	if !r.authenticates(t, secret) {
		t.Fatal("the token is not cached")
	}
	return b, r, secret
}

func TestResetFlushesTheCache(t *testing.T) {
	t.Parallel()
	b, r, secret := cachedButRevoked(t)
	// The listener loses its connection; when it is back, its Reset flushes the cache.
	b.exec(t, "select pg_terminate_backend(pid) from pg_stat_activity where application_name = $1", r.listenerApp)
	eventually.True(t, "the replica to refuse the token", func() bool { return !r.authenticates(t, secret) })
}

// TestNoCacheWhileTheListenerIsDown: while invalidations cannot arrive, authentication
// reads the database.
func TestNoCacheWhileTheListenerIsDown(t *testing.T) {
	t.Parallel()
	_, r, secret := cachedButRevoked(t)
	r.tokens.listening = func() bool { return false } // as between a lost connection and its Reset
	if r.authenticates(t, secret) {
		t.Error("a revoked token is accepted from the cache while the listener is down")
	}
}

func TestCachedTokens(t *testing.T) {
	t.Parallel()
	b := setupTokens(t)
	clock := testclock.New(time.Now())
	r := b.replica(t, clock.Now)

	t.Run("an expired token is refused even when cached", func(t *testing.T) {
		expires := clock.Now().Add(10 * time.Second)
		tok, secret := b.create(t, r, CreateParams{ExpiresAt: &expires})
		if !r.authenticates(t, secret) {
			t.Fatal("a fresh token is refused")
		}
		clock.Advance(10 * time.Second)
		if !r.cached(tok.ID) {
			t.Fatal("the token is not cached any more")
		}
		if _, reason, err := r.tokens.Authenticate(t.Context(), secret); err == nil || reason != "token expired" {
			t.Errorf("Authenticate of a cached expired token: %v (%s)", err, reason)
		}
	})

	t.Run("the secret is checked against the cached token", func(t *testing.T) {
		tok, secret := b.create(t, r, CreateParams{})
		if !r.authenticates(t, secret) || !r.cached(tok.ID) {
			t.Fatal("a fresh token is not accepted and cached")
		}
		if _, reason, err := r.tokens.Authenticate(t.Context(), formatToken(tok.ID, "wrongwrongwrong")); err == nil || reason != "wrong secret" {
			t.Errorf("Authenticate with a wrong secret: %v (%s)", err, reason)
		}
	})

	t.Run("a cached token lapses after the TTL", func(t *testing.T) {
		tok, secret := b.create(t, r, CreateParams{})
		if !r.authenticates(t, secret) {
			t.Fatal("a fresh token is refused")
		}
		// A change nobody announces is seen once the entry lapses.
		b.exec(t, "alter table api_tokens disable trigger api_tokens_notify")
		b.exec(t, "update api_tokens set revoked_at = now() where id = $1", tok.ID)
		b.exec(t, "alter table api_tokens enable trigger api_tokens_notify")
		clock.Advance(cacheTTL - time.Millisecond)
		if !r.authenticates(t, secret) {
			t.Fatal("the token is not cached for the TTL")
		}
		clock.Advance(time.Millisecond)
		if r.authenticates(t, secret) {
			t.Error("the revoked token is accepted after the TTL")
		}
	})
}

// take is the outcome of one Tokens.Take.
func take(t *testing.T, r *replica, id string) (ok bool, retryAfter time.Duration) {
	t.Helper()
	err := r.tokens.Take(t.Context(), id)
	var limited *RateLimitedError
	switch {
	case err == nil:
		return true, 0
	case errors.As(err, &limited):
		return false, limited.RetryAfter
	}
	t.Fatal(err)
	return false, 0
}

func TestRateLimitAtLowRates(t *testing.T) {
	t.Parallel()
	b := setupTokens(t)
	cases := map[string]struct {
		rate  int
		retry time.Duration
	}{
		"60 a minute":  {rate: 60, retry: time.Second},
		"6 a minute":   {rate: 6, retry: 10 * time.Second},
		"600 a minute": {rate: 600, retry: 100 * time.Millisecond},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			clock := testclock.New(time.Now())
			replicas := []*replica{b.replica(t, clock.Now), b.replica(t, clock.Now)}
			tok, _ := b.create(t, replicas[0], CreateParams{RateLimit: tc.rate})
			// Two replicas admit exactly the burst together, one call a row update.
			for i := range tc.rate {
				if ok, _ := take(t, replicas[i%2], tok.ID); !ok {
					t.Fatalf("call %d of a burst of %d refused", i+1, tc.rate)
				}
			}
			for _, r := range replicas {
				if ok, retry := take(t, r, tok.ID); ok || retry != tc.retry {
					t.Errorf("call after the burst: admitted %v, retry after %s; want refused, retry after %s", ok, retry, tc.retry)
				}
			}
			clock.Advance(tc.retry)
			if ok, _ := take(t, replicas[1], tok.ID); !ok {
				t.Errorf("the call after waiting is refused")
			}
			if ok, _ := take(t, replicas[0], tok.ID); ok {
				t.Errorf("two calls admitted after waiting for one")
			}
		})
	}
}

func TestLeasedRateLimitHoldsAcrossReplicas(t *testing.T) {
	t.Parallel()
	const rate = 60000 // a burst of 60000, 1000 calls a second
	b := setupTokens(t)
	clock := testclock.New(time.Now())
	first, second := b.replica(t, clock.Now), b.replica(t, clock.Now)
	tok, _ := b.create(t, first, CreateParams{RateLimit: rate})

	// hammer makes calls through both replicas from 16 goroutines each until every
	// goroutine is refused, and returns how many were admitted.
	hammer := func() int64 {
		var admitted atomic.Int64
		var wg sync.WaitGroup
		for _, r := range []*replica{first, second} {
			for range 16 {
				wg.Go(func() {
					for {
						err := r.tokens.Take(t.Context(), tok.ID)
						if err != nil {
							var limited *RateLimitedError
							if !errors.As(err, &limited) {
								t.Error(err)
							}
							return
						}
						admitted.Add(1)
					}
				})
			}
		}
		wg.Wait()
		return admitted.Add(0)
	}

	// The clock stands still: together the replicas admit the burst, no more, and they
	// hand out every call they leased.
	if got := hammer(); got != rate {
		t.Fatalf("%d calls admitted at once, want the burst of %d", got, rate)
	}
	_, retry := take(t, first, tok.ID)
	if retry != time.Millisecond {
		t.Errorf("retry after %s, want 1ms", retry)
	}
	clock.Advance(100 * time.Millisecond)
	if got := hammer(); got != 100 {
		t.Errorf("%d calls admitted 100 ms later, want 100", got)
	}

	// Leased calls lapse unused after a second: a replica that leased a full lease and
	// used one call of it does not hand out the rest later.
	clock.Advance(time.Second)
	if ok, _ := take(t, first, tok.ID); !ok {
		t.Fatal("a call after a second's pause is refused")
	}
	clock.Advance(leaseTTL)
	if got, want := hammer(), int64(2*rate/60-maxLeaseSize); got != want {
		t.Errorf("%d calls admitted after a lease lapsed, want %d: two seconds' allowance less the lease", got, want)
	}
}

func TestLeaseSize(t *testing.T) {
	t.Parallel()
	for rate, want := range map[int32]int32{1: 1, 120: 1, 600: 1, 1199: 1, 1200: 2, 6000: 10, 38400: 64, 100000: 64} {
		if got := leaseSize(rate); got != want {
			t.Errorf("leaseSize(%d) = %d, want %d", rate, got, want)
		}
	}
}

// BenchmarkAuthenticateAndTake is what the interceptor does for every call with a bearer
// token, from 2×GOMAXPROCS goroutines with one token at the highest rate limit. The
// clock moves one emission interval (600 µs) a call, so that the calls stay within the
// limit as they would in a deployment: with the verified-token cache and the leases,
// most make no round trip.
func BenchmarkAuthenticateAndTake(b *testing.B) {
	const rate = 100000
	var calls atomic.Int64
	start := time.Now()
	now := func() time.Time { return start.Add(time.Duration(calls.Load()) * time.Minute / rate) }
	tb := setupTokens(b)
	r := tb.replica(b, now)
	tok, secret := tb.create(b, r, CreateParams{RateLimit: rate})
	var refused atomic.Int64
	b.SetParallelism(2)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			calls.Add(1)
			if _, _, err := r.tokens.Authenticate(b.Context(), secret); err != nil {
				b.Error(err)
				return
			}
			if err := r.tokens.Take(b.Context(), tok.ID); err != nil {
				refused.Add(1)
			}
		}
	})
	b.ReportMetric(float64(refused.Load())/float64(b.N), "refused/op")
}
