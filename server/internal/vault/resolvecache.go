package vault

import (
	"context"
	"sync"

	"github.com/palyra/palyra/server/internal/secretref"
)

// The resolution cache. Resolve needs three reads (the secret, its versions, the sealed
// version) for what rarely changes: each replica keeps, per reference it resolved, the
// sealed version it resolved to, so that a repeated resolution reads nothing and only
// opens the seal (unwraps the data key, decrypts the value; microseconds). No value and
// no data key is kept: what the cache holds is what the database holds.
//
// A change must bite at once, on every replica:
//
//  1. A trigger (sqlc/migrations/00014_vault_notify.sql) announces every change of a
//     secret or of its versions (put, delete, restore, destroy, a re-wrap by a master
//     key rotation, an edit by hand; not the stamp of a reveal) on Channel with the
//     secret's name; Run forgets the name's references on every replica.
//  2. The replica that changes a secret forgets its references as soon as its
//     transaction is over, before the call returns.
//  3. A Reset of the notification listener (it reconnected, notifications may be lost)
//     forgets everything.
//  4. A resolution whose reads began before an invalidation is not kept: it may have
//     seen the rows as they were before (the generation check in put).
//  5. Nothing is cached unless Run listens: without a listener, before it is ready,
//     while it is disconnected and after Run returns, every resolution reads the
//     database.
//
// A failed resolution (a secret missing or deleted, a version missing or destroyed, a
// value that does not open) is never cached.

// Channel is the notification channel of secret changes: a trigger sends the name of
// every secret that is created, deleted, restored, changed or gets, loses or changes a
// version.
const Channel = "palyra_secrets"

// maxCachedSecrets bounds the number of secrets whose references are cached.
const maxCachedSecrets = 1000

// resolved is what a reference resolved to: the version's row and its sealed value.
type resolved struct {
	row    rowID
	sealed sealed
}

// resolveCache is the resolution cache of one replica. It is safe for concurrent use.
type resolveCache struct {
	mu      sync.RWMutex // guards the following
	enabled bool         // Run listens for invalidations
	gen     uint64       // bumped by every invalidation
	byName  map[string]map[int64]resolved
}

// newResolveCache returns an empty, disabled cache.
func newResolveCache() *resolveCache {
	return &resolveCache{byName: map[string]map[int64]resolved{}}
}

// get returns what ref resolved to, when cached.
func (c *resolveCache) get(ref secretref.Ref) (resolved, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	r, ok := c.byName[ref.Name][ref.Version]
	return r, ok
}

// generation returns the generation to pass to put for a resolution that begins now.
func (c *resolveCache) generation() uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.gen
}

// put caches what ref resolved to, unless caching is disabled or an invalidation
// happened since generation gen was taken (the reads may predate it). A full cache
// first forgets the references of another secret.
func (c *resolveCache) put(ref secretref.Ref, r resolved, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.enabled || c.gen != gen {
		return
	}
	versions, ok := c.byName[ref.Name]
	if !ok {
		if len(c.byName) >= maxCachedSecrets {
			for name := range c.byName {
				delete(c.byName, name)
				break
			}
		}
		versions = map[int64]resolved{}
		c.byName[ref.Name] = versions
	}
	versions[ref.Version] = r
}

// forget drops the references to the secret name and voids the resolutions in progress.
func (c *resolveCache) forget(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	delete(c.byName, name)
}

// reset drops everything, voids the resolutions in progress, and turns caching on or
// off.
func (c *resolveCache) reset(enabled bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	c.enabled = enabled
	clear(c.byName)
}

// Run keeps the resolution cache coherent with the database until ctx is done: it waits
// for the notification listener, then forgets the references to every secret announced
// on Channel, and everything on a Reset. Resolutions are cached only while Run runs;
// without Options.Notify it returns at once. Run is meant to have its own goroutine.
func (v *Vault) Run(ctx context.Context) {
	if v.sub == nil {
		return
	}
	defer v.sub.Close()
	select {
	case <-ctx.Done():
		return
	case <-v.notify.Ready():
	}
	v.cache.reset(true)
	defer v.cache.reset(false)
	for {
		select {
		case <-ctx.Done():
			return
		case e := <-v.sub.Events():
			if e.Reset {
				v.log.Debug("secret resolution cache flushed: notifications may have been missed")
				v.cache.reset(true)
				continue
			}
			v.cache.forget(e.Payload)
		}
	}
}

// cached reports whether resolutions may be served from and kept in the cache now:
// invalidations can reach this replica.
func (v *Vault) cached() bool {
	return v.notify != nil && v.notify.Listening()
}
