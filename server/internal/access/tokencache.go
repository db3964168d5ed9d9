package access

import (
	"context"
	"sync"
	"time"
)

// The verified-token cache. Authenticating a bearer token needs the token's row (its
// secret hash, revocation, expiry, role, scopes, user). Each replica keeps the rows it
// has read for authentication in memory for cacheTTL, so that a busy token costs no
// round trip; the secret and the expiry are still checked on every call. The cache
// serves authentication only: what the handlers show (Get, List) is read from the
// database.
//
// Revocation must still bite at once, on every replica:
//
//  1. The replica that revokes or rotates a token forgets it as soon as its transaction
//     is over.
//  2. A trigger announces every change of a token that matters to authentication on
//     TokensChannel; Tokens.Run forgets the token on every replica.
//  3. A Reset of the notification listener (it reconnected, notifications may be lost)
//     forgets everything.
//  4. A read of the database that began before an invalidation is not kept: it may
//     have seen the row as it was before (the generation check in put).
//  5. Nothing is cached unless Run listens: before the listener is ready and after Run
//     returns, every authentication reads the database.
//
// While the listener is disconnected (notify.Listener.Listening is false), the cache is
// neither read nor filled: every authentication reads the database, and the Reset of
// the reconnection empties it. What remains is the time the listener takes to notice a
// broken connection (TCP keepalive), as for the revocation of device certificates.

const (
	// cacheTTL is how long a token read for authentication is kept.
	cacheTTL = 30 * time.Second
	// cacheSize bounds the number of cached tokens.
	cacheSize = 10_000
)

// verifiedCache is the verified-token cache of one replica. It is safe for concurrent
// use.
type verifiedCache struct {
	mu      sync.RWMutex // guards the following
	enabled bool         // Run listens for invalidations
	gen     uint64       // bumped by every invalidation
	entries map[string]cacheEntry
}

// cacheEntry is a cached token.
type cacheEntry struct {
	tok   *Token
	until time.Time // when the entry lapses
}

// newVerifiedCache returns an empty, disabled cache.
func newVerifiedCache() *verifiedCache {
	return &verifiedCache{entries: map[string]cacheEntry{}}
}

// get returns the token id when it is cached and fresh at now.
func (c *verifiedCache) get(id string, now time.Time) (*Token, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	e, ok := c.entries[id]
	if !ok || !now.Before(e.until) {
		return nil, false
	}
	return e.tok, true
}

// generation returns the generation to pass to put for a read that begins now.
func (c *verifiedCache) generation() uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.gen
}

// put caches tok, read from the database at now, unless caching is disabled or an
// invalidation happened since generation gen was taken (the read may predate it). A
// full cache first drops the lapsed entries, then, if still full, any one.
func (c *verifiedCache) put(tok *Token, gen uint64, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.enabled || c.gen != gen {
		return
	}
	if _, ok := c.entries[tok.ID]; !ok && len(c.entries) >= cacheSize {
		c.evictLocked(now)
	}
	c.entries[tok.ID] = cacheEntry{tok: tok, until: now.Add(cacheTTL)}
}

// evictLocked drops the entries that lapsed at now and, when none did, one other entry.
func (c *verifiedCache) evictLocked(now time.Time) {
	before := len(c.entries)
	for id, e := range c.entries {
		if !now.Before(e.until) {
			delete(c.entries, id)
		}
	}
	if len(c.entries) < before {
		return
	}
	for id := range c.entries {
		delete(c.entries, id)
		return
	}
}

// forget drops the token id and voids the reads in progress.
func (c *verifiedCache) forget(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	delete(c.entries, id)
}

// reset drops every token, voids the reads in progress, and turns caching on or off.
func (c *verifiedCache) reset(enabled bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	c.enabled = enabled
	clear(c.entries)
}

// Run keeps the verified-token cache coherent with the database until ctx is done: it
// waits for the notification listener, then forgets every token announced on
// TokensChannel and everything on a Reset. Tokens are cached only while Run runs. Run
// is meant to have its own goroutine.
func (ts *Tokens) Run(ctx context.Context) {
	defer ts.sub.Close()
	select {
	case <-ctx.Done():
		return
	case <-ts.ready:
	}
	ts.cache.reset(true)
	defer ts.cache.reset(false)
	for {
		select {
		case <-ctx.Done():
			return
		case e := <-ts.sub.Events():
			if e.Reset {
				ts.log.Debug("verified-token cache flushed: notifications may have been missed")
				ts.cache.reset(true)
				continue
			}
			ts.cache.forget(e.Payload)
		}
	}
}

// verified returns token id for authentication: from the cache while fresh, else from
// the database, and then cached.
func (ts *Tokens) verified(ctx context.Context, id string) (*Token, error) {
	if !ts.listening() {
		return ts.Get(ctx, id)
	}
	now := ts.now()
	if tok, ok := ts.cache.get(id, now); ok {
		return tok, nil
	}
	gen := ts.cache.generation()
	tok, err := ts.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	ts.cache.put(tok, gen, now)
	return tok, nil
}
