// Package flags is palyrad's feature-flag registry: the flags later work turns features
// on with, their descriptions, stages and dependencies, and their state in PostgreSQL,
// shared by every replica.
//
// The set of flags is fixed when the daemon starts: Builtin lists palyrad's own, and New
// checks a set of definitions once (valid and unique keys, dependencies that exist and
// form no cycle, defaults that respect them). Only the state of a flag lives in the
// database, one row of feature_flags per flag that someone has set; a flag without a
// row has its definition's default. Rows of flags that are no longer defined are
// ignored.
//
// Dependencies are kept true by Set: a flag is turned on only while everything it
// depends on is on, and turned off only while nothing that depends on it is on. Set
// takes an advisory transaction lock (the LockFlags query) before it reads the states,
// so that the check holds when several replicas change flags at once.
//
// Enabled, the question the hot paths ask, answers from an in-memory copy of the states
// that is at most a second old (see Registry).
package flags

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/palyra/palyra/server/internal/errdefs"
)

// Stage is how far along the feature behind a flag is. It is shown to operators; it
// does not change how the flag behaves.
type Stage int

// The stages, from the least to the most mature.
const (
	// Experimental: incomplete or likely to change; off unless someone wants to try it.
	Experimental Stage = iota + 1
	// Beta: complete, still gathering experience.
	Beta
	// Stable: the feature is here to stay; the flag remains so it can be turned off.
	Stable
)

// String returns "experimental", "beta" or "stable", and "Stage(n)" for any other value.
func (s Stage) String() string {
	switch s {
	case Experimental:
		return "experimental"
	case Beta:
		return "beta"
	case Stable:
		return "stable"
	}
	return fmt.Sprintf("Stage(%d)", int(s))
}

// valid reports whether s is one of the declared stages.
func (s Stage) valid() bool { return s >= Experimental && s <= Stable }

// Definition describes a flag. The registry is generic: later features add definitions
// (to Builtin, or in the set given to New).
type Definition struct {
	// Key names the flag in the database, the API and the CLI: ^[a-z][a-z0-9_]*$, at
	// most 64 characters. It must never change once released: it is the row's key.
	Key string
	// Description says what turning the flag on does, for operators. Required.
	Description string
	// Stage is how mature the feature is.
	Stage Stage
	// DependsOn lists the keys of the flags that must be on for this one to be on.
	DependsOn []string
	// Default is the state of the flag until someone sets it.
	Default bool
}

// clone returns d with its own copy of DependsOn, so that the registry and its callers
// never share a slice.
func (d Definition) clone() Definition {
	d.DependsOn = slices.Clone(d.DependsOn)
	return d
}

// The built-in flags.
const (
	// CompatAPI turns on the OpenAI-compatible API. Off by default.
	CompatAPI = "compat_api"
	// CompatStreaming turns on streamed chat completions (server-sent events) on the
	// OpenAI-compatible API. It depends on CompatAPI. Off by default.
	CompatStreaming = "compat_streaming"
)

// Builtin returns the definitions of palyrad's own flags, a fresh slice on every call.
func Builtin() []Definition {
	return []Definition{
		{
			Key:         CompatAPI,
			Description: "Answer the OpenAI-compatible API, so that OpenAI clients can use palyrad.",
			Stage:       Beta,
		},
		{
			Key:         CompatStreaming,
			Description: "Stream chat completions of the OpenAI-compatible API as server-sent events (stream: true).",
			Stage:       Experimental,
			DependsOn:   []string{CompatAPI},
		},
	}
}

// Flag is a flag with its state.
type Flag struct {
	Definition
	// Enabled is the state stored in the database, or the default when the flag has
	// never been set. Registry.Enabled additionally requires every dependency to be on;
	// the two differ only when the stored states break a dependency, which Set never
	// lets happen but a change of definitions between releases can.
	Enabled bool
	// UpdatedAt is when the flag was last set; nil when it never was.
	UpdatedAt *time.Time
	// UpdatedBy names who last set it (as given to Set); empty when no one did.
	UpdatedBy string
}

// ErrUnknown reports a key that names no defined flag (NotFound). It comes wrapped with
// the key; match it with errors.Is.
var ErrUnknown = errdefs.New(errdefs.NotFound, "no such feature flag")

// DependencyError refuses a change that would break a dependency. Match it with
// errors.As.
type DependencyError struct {
	// Key is the flag that was to be changed.
	Key string
	// Enable is the state it was to be set to.
	Enable bool
	// Blockers are the flags in the way, sorted: when enabling, the flags Key depends
	// on that are off; when disabling, the flags that are on and depend on Key.
	Blockers []string
}

// Error says what was refused and why, e.g.
// "cannot enable compat_streaming: it depends on compat_api, which is off" or
// "cannot disable compat_api: compat_streaming is on and depends on it".
func (e *DependencyError) Error() string {
	list := joinKeys(e.Blockers)
	if e.Enable {
		if len(e.Blockers) == 1 {
			return fmt.Sprintf("cannot enable %s: it depends on %s, which is off", e.Key, list)
		}
		return fmt.Sprintf("cannot enable %s: it depends on %s, which are off", e.Key, list)
	}
	if len(e.Blockers) == 1 {
		return fmt.Sprintf("cannot disable %s: %s is on and depends on it", e.Key, list)
	}
	return fmt.Sprintf("cannot disable %s: %s are on and depend on it", e.Key, list)
}

// ErrorKind implements errdefs.Kinded: FailedPrecondition.
func (e *DependencyError) ErrorKind() errdefs.Kind { return errdefs.FailedPrecondition }

// joinKeys lists keys in prose: "a", "a and b", "a, b and c".
func joinKeys(keys []string) string {
	switch len(keys) {
	case 0:
		return "no flag"
	case 1:
		return keys[0]
	}
	return strings.Join(keys[:len(keys)-1], ", ") + " and " + keys[len(keys)-1]
}
