package flags

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/palyra/palyra/gen/dbsqlc"
	"github.com/palyra/palyra/server/internal/store"
)

// cacheTTL is how long Enabled trusts its copy of the states. It bounds how late a
// replica sees a change made through another replica.
const cacheTTL = time.Second

// maxKeyLen is the longest key a definition may have.
const maxKeyLen = 64

// Registry is a checked set of flag definitions bound to the database that holds their
// states. It is safe for concurrent use.
//
// List, Get and Set read the database on every call. Enabled answers from an in-memory
// copy of the states that is at most a second old (cacheTTL): a flag changed through
// another replica may still read as before for up to a second here, while a change made
// through this Registry's Set is seen by the next Enabled call. The copy's age is
// measured with the process's monotonic clock, not the injected one, so that a frozen
// test clock cannot freeze the cache.
type Registry struct {
	store *store.Store
	now   func() time.Time // nil: the database's clock

	defs       map[string]Definition // by key; never modified after New
	keys       []string              // every key, sorted
	order      []string              // every key, each after all it depends on
	dependants map[string][]string   // key -> the keys that depend on it directly, sorted

	mu sync.Mutex // guards the following
	// effective is the cached answer of Enabled for every key; nil before the first load.
	effective map[string]bool
	// loadedAt is when the load that produced effective began (zero: must reload).
	loadedAt time.Time
	// gen counts the local Sets; a load that began under an older generation may predate
	// one of them and is not kept.
	gen uint64
	// loading is non-nil while one goroutine reads the states for the cache; it is closed
	// when that read is done, so that the others wait for it instead of all querying.
	loading chan struct{}
}

// Options are the registry's dependencies.
type Options struct {
	Store *store.Store
	// Definitions are the flags (Builtin for palyrad's).
	Definitions []Definition
	// Now stamps the changes made by Set; nil uses the database's clock.
	Now func() time.Time
}

// New checks the definitions and returns a registry of them. The definitions must
// have unique, valid keys (^[a-z][a-z0-9_]*$, at most 64 characters), a description and
// a declared stage; every dependency must be defined and listed once; dependencies must
// not form a cycle (a flag depending on itself included); and no flag that is on by
// default may depend on one that is off by default. New reports every problem it finds
// in one error.
func New(opts Options) (*Registry, error) {
	if opts.Store == nil {
		return nil, errors.New("flags: new registry: no store")
	}
	defs := opts.Definitions
	r := &Registry{
		store:      opts.Store,
		now:        opts.Now,
		defs:       make(map[string]Definition, len(defs)),
		dependants: make(map[string][]string),
	}
	var problems []string
	for _, d := range defs {
		if _, dup := r.defs[d.Key]; dup {
			problems = append(problems, fmt.Sprintf("flag %q is defined twice", d.Key))
			continue
		}
		if err := checkKey(d.Key); err != nil {
			problems = append(problems, err.Error())
		}
		if strings.TrimSpace(d.Description) == "" {
			problems = append(problems, fmt.Sprintf("flag %q has no description", d.Key))
		}
		if !d.Stage.valid() {
			problems = append(problems, fmt.Sprintf("flag %q has an unknown stage %v", d.Key, d.Stage))
		}
		r.defs[d.Key] = d.clone()
		r.keys = append(r.keys, d.Key)
	}
	slices.Sort(r.keys)
	for _, k := range r.keys {
		d := r.defs[k]
		seen := make(map[string]bool, len(d.DependsOn))
		for _, dep := range d.DependsOn {
			if seen[dep] {
				problems = append(problems, fmt.Sprintf("flag %q lists dependency %q twice", k, dep))
				continue
			}
			seen[dep] = true
			depDef, ok := r.defs[dep]
			if !ok {
				problems = append(problems, fmt.Sprintf("flag %q depends on %q, which is not defined", k, dep))
				continue
			}
			r.dependants[dep] = append(r.dependants[dep], k) // in key order: r.keys is sorted
			if d.Default && !depDef.Default {
				problems = append(problems, fmt.Sprintf(
					"flag %q is on by default but depends on %q, which is off by default", k, dep))
			}
		}
	}
	order, cycles := r.sortByDependency()
	problems = append(problems, cycles...)
	if len(problems) > 0 {
		return nil, fmt.Errorf("flags: invalid definitions: %s", strings.Join(problems, "; "))
	}
	r.order = order
	return r, nil
}

// checkKey reports whether key matches ^[a-z][a-z0-9_]*$ and is at most maxKeyLen long.
func checkKey(key string) error {
	if key == "" {
		return errors.New("a flag has an empty key")
	}
	if len(key) > maxKeyLen {
		return fmt.Errorf("flag key %q is longer than %d characters", key, maxKeyLen)
	}
	for i, c := range []byte(key) {
		ok := c >= 'a' && c <= 'z' || i > 0 && (c >= '0' && c <= '9' || c == '_')
		if !ok {
			return fmt.Errorf("flag key %q is not of the form ^[a-z][a-z0-9_]*$", key)
		}
	}
	return nil
}

// sortByDependency orders the keys so that each comes after everything it depends on,
// and describes every dependency cycle it meets ("a -> b -> a"). Undefined dependencies
// are skipped: New reports them separately.
func (r *Registry) sortByDependency() (order, cycles []string) {
	const (
		unvisited = iota
		onPath
		done
	)
	state := make(map[string]int, len(r.keys))
	var path []string
	var visit func(k string)
	visit = func(k string) {
		state[k] = onPath
		path = append(path, k)
		for _, dep := range r.defs[k].DependsOn {
			if _, ok := r.defs[dep]; !ok {
				continue
			}
			switch state[dep] {
			case unvisited:
				visit(dep)
			case onPath:
				start := slices.Index(path, dep)
				cycle := append(slices.Clone(path[start:]), dep)
				cycles = append(cycles, "dependency cycle "+strings.Join(cycle, " -> "))
			}
		}
		path = path[:len(path)-1]
		state[k] = done
		order = append(order, k)
	}
	for _, k := range r.keys {
		if state[k] == unvisited {
			visit(k)
		}
	}
	return order, cycles
}

// List returns every defined flag with its state, sorted by key.
func (r *Registry) List(ctx context.Context) ([]Flag, error) {
	rows, err := r.store.Q().ListFlagStates(ctx)
	if err != nil {
		return nil, fmt.Errorf("flags: list: %w", err)
	}
	byKey := rowsByKey(rows)
	flags := make([]Flag, 0, len(r.keys))
	for _, k := range r.keys {
		flags = append(flags, r.flag(k, byKey[k]))
	}
	return flags, nil
}

// Get returns one flag with its state, or an error matching ErrUnknown when key is not
// defined.
func (r *Registry) Get(ctx context.Context, key string) (Flag, error) {
	if _, ok := r.defs[key]; !ok {
		return Flag{}, fmt.Errorf("flags: get %q: %w", key, ErrUnknown)
	}
	rows, err := r.store.Q().ListFlagStates(ctx)
	if err != nil {
		return Flag{}, fmt.Errorf("flags: get %s: %w", key, err)
	}
	return r.flag(key, rowsByKey(rows)[key]), nil
}

// Set turns a flag on or off on behalf of by (a principal's name, recorded as
// UpdatedBy), and returns the flag as stored. Setting a flag to the state it already
// has succeeds and records by and the time again.
//
// Set refuses with a *DependencyError to turn a flag on while a flag it depends on is
// off, or off while a flag that depends on it is on, and then changes nothing. The
// check and the write run in one transaction under an advisory lock that every Set of
// every replica takes, so that concurrent changes cannot together break a dependency.
// A key that is not defined gives an error matching ErrUnknown.
func (r *Registry) Set(ctx context.Context, key string, enabled bool, by string) (Flag, error) {
	if _, ok := r.defs[key]; !ok {
		return Flag{}, fmt.Errorf("flags: set %q: %w", key, ErrUnknown)
	}
	if by == "" {
		return Flag{}, fmt.Errorf("flags: set %s: no one named as the changer", key)
	}
	var row dbsqlc.FeatureFlag
	err := r.store.InTx(ctx, func(tx *store.Tx) error {
		q := tx.Q()
		if err := q.LockFlags(ctx); err != nil {
			return fmt.Errorf("lock: %w", err)
		}
		rows, err := q.ListFlagStates(ctx)
		if err != nil {
			return fmt.Errorf("read states: %w", err)
		}
		if blockers := r.blockers(r.stored(rows), key, enabled); len(blockers) > 0 {
			return &DependencyError{Key: key, Enable: enabled, Blockers: blockers}
		}
		params := dbsqlc.UpsertFlagParams{Key: key, Enabled: enabled, UpdatedBy: by}
		if r.now != nil {
			t := r.now()
			params.Now = &t
		}
		row, err = q.UpsertFlag(ctx, params)
		if err != nil {
			return fmt.Errorf("write: %w", err)
		}
		return nil
	})
	if err != nil {
		var depErr *DependencyError
		if errors.As(err, &depErr) {
			return Flag{}, depErr // already says which flag and why
		}
		return Flag{}, fmt.Errorf("flags: set %s: %w", key, err)
	}
	r.invalidate()
	return r.flag(key, &row), nil
}

// Enabled reports whether a flag is on: its state is on and so is, recursively, every
// flag it depends on. It answers from a copy of the states at most a second old (see
// Registry) and reads the database only to renew that copy. A key that is not defined
// gives an error matching ErrUnknown.
func (r *Registry) Enabled(ctx context.Context, key string) (bool, error) {
	if _, ok := r.defs[key]; !ok {
		return false, fmt.Errorf("flags: enabled %q: %w", key, ErrUnknown)
	}
	for {
		r.mu.Lock()
		if r.freshLocked() {
			on := r.effective[key]
			r.mu.Unlock()
			return on, nil
		}
		if r.loading == nil {
			done := make(chan struct{})
			r.loading = done
			gen := r.gen
			r.mu.Unlock()
			effective, err := r.load(ctx, gen, done)
			if err != nil {
				return false, fmt.Errorf("flags: enabled %s: %w", key, err)
			}
			return effective[key], nil
		}
		wait := r.loading
		r.mu.Unlock()
		select {
		case <-wait:
			// Loop: the copy is fresh now, or the load failed and this caller tries.
		case <-ctx.Done():
			return false, fmt.Errorf("flags: enabled %s: %w", key, context.Cause(ctx))
		}
	}
}

// freshLocked reports whether the cached states may be used.
func (r *Registry) freshLocked() bool {
	return r.effective != nil && !r.loadedAt.IsZero() && time.Since(r.loadedAt) < cacheTTL
}

// load reads the states for the cache, keeps them unless a local Set happened since gen,
// and closes done. It runs on the goroutine of the Enabled call that started it; only
// one runs at a time.
func (r *Registry) load(ctx context.Context, gen uint64, done chan struct{}) (map[string]bool, error) {
	start := time.Now()
	rows, err := r.store.Q().ListFlagStates(ctx)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.loading = nil
	close(done)
	if err != nil {
		return nil, fmt.Errorf("read states: %w", err)
	}
	effective := r.effectiveStates(r.stored(rows))
	if gen == r.gen {
		r.effective = effective
		r.loadedAt = start
	}
	return effective, nil
}

// invalidate makes the next Enabled call read the database, after a local Set.
func (r *Registry) invalidate() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.gen++
	r.loadedAt = time.Time{}
}

// stored returns the state of every defined flag: its row's, or its default.
func (r *Registry) stored(rows []dbsqlc.FeatureFlag) map[string]bool {
	states := make(map[string]bool, len(r.keys))
	for _, k := range r.keys {
		states[k] = r.defs[k].Default
	}
	for _, row := range rows {
		if _, ok := r.defs[row.Key]; ok {
			states[row.Key] = row.Enabled
		}
	}
	return states
}

// effectiveStates returns, for every flag, whether it and everything it depends on is on.
func (r *Registry) effectiveStates(stored map[string]bool) map[string]bool {
	effective := make(map[string]bool, len(r.order))
	for _, k := range r.order { // dependencies first
		on := stored[k]
		for _, dep := range r.defs[k].DependsOn {
			on = on && effective[dep]
		}
		effective[k] = on
	}
	return effective
}

// blockers returns, sorted, the flags that forbid setting key to enable given the
// stored states: the dependencies that are off, or the dependants that are on.
func (r *Registry) blockers(stored map[string]bool, key string, enable bool) []string {
	var out []string
	if enable {
		for _, dep := range r.defs[key].DependsOn {
			if !stored[dep] {
				out = append(out, dep)
			}
		}
	} else {
		for _, dep := range r.dependants[key] {
			if stored[dep] {
				out = append(out, dep)
			}
		}
	}
	slices.Sort(out)
	return out
}

// flag returns the flag key with the state of row, or its default when row is nil.
func (r *Registry) flag(key string, row *dbsqlc.FeatureFlag) Flag {
	def := r.defs[key]
	f := Flag{Definition: def.clone(), Enabled: def.Default}
	if row != nil {
		at := row.UpdatedAt.UTC()
		f.Enabled, f.UpdatedAt, f.UpdatedBy = row.Enabled, &at, row.UpdatedBy
	}
	return f
}

// rowsByKey indexes the rows of ListFlagStates.
func rowsByKey(rows []dbsqlc.FeatureFlag) map[string]*dbsqlc.FeatureFlag {
	byKey := make(map[string]*dbsqlc.FeatureFlag, len(rows))
	for i := range rows {
		byKey[rows[i].Key] = &rows[i]
	}
	return byKey
}
