package flags_test

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/palyra/palyra/internal/eventually"
	"github.com/palyra/palyra/server/internal/flags"
	"github.com/palyra/palyra/server/internal/store"
	"github.com/palyra/palyra/server/internal/store/storetest"
	"github.com/palyra/palyra/server/internal/testclock"
)

// testEpoch is the start of every test clock: a whole second, so that PostgreSQL's
// microseconds keep it exact, and far from the real date, so that a forgotten
// injection shows.
var testEpoch = time.Date(2031, 3, 14, 15, 9, 26, 0, time.UTC)

// testBundle is what every test starts from: a migrated database of its own, opened
// through its URL so that more replicas can open it too, a clock, and a registry of the
// built-in flags.
type testBundle struct {
	url   string
	store *store.Store
	clock *testclock.Clock
	reg   *flags.Registry
}

func setup(t *testing.T) *testBundle {
	t.Helper()
	b := &testBundle{url: storetest.URL(t), clock: testclock.New(testEpoch)}
	b.store = openStore(t, b.url)
	b.reg = newRegistry(t, b.store, flags.Builtin(), b.clock.Now)
	return b
}

// replica opens a second store on the bundle's database and a registry on it, as
// another palyrad replica would have.
func (b *testBundle) replica(t *testing.T, defs []flags.Definition) *flags.Registry {
	t.Helper()
	return newRegistry(t, openStore(t, b.url), defs, b.clock.Now)
}

func openStore(t *testing.T, url string) *store.Store {
	t.Helper()
	s, err := store.Open(t.Context(), store.Options{URL: url})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

func newRegistry(t *testing.T, s *store.Store, defs []flags.Definition, now func() time.Time) *flags.Registry {
	t.Helper()
	r, err := flags.New(flags.Options{Store: s, Definitions: defs, Now: now})
	if err != nil {
		t.Fatalf("new registry: %v", err)
	}
	return r
}

// mustSet sets a flag and fails the test if that is refused.
func mustSet(t *testing.T, r *flags.Registry, key string, enabled bool, by string) flags.Flag {
	t.Helper()
	f, err := r.Set(t.Context(), key, enabled, by)
	if err != nil {
		t.Fatalf("set %s to %v: %v", key, enabled, err)
	}
	return f
}

// states lists the stored state of every flag, "key=on" or "key=off", in key order.
func states(t *testing.T, r *flags.Registry) []string {
	t.Helper()
	list, err := r.List(t.Context())
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	out := make([]string, len(list))
	for i, f := range list {
		out[i] = fmt.Sprintf("%s=%s", f.Key, onOff(f.Enabled))
	}
	return out
}

func onOff(on bool) string {
	if on {
		return "on"
	}
	return "off"
}

func TestStageString(t *testing.T) {
	t.Parallel()
	for stage, want := range map[flags.Stage]string{
		flags.Experimental: "experimental",
		flags.Beta:         "beta",
		flags.Stable:       "stable",
		flags.Stage(0):     "Stage(0)",
		flags.Stage(9):     "Stage(9)",
	} {
		if got := stage.String(); got != want {
			t.Errorf("Stage(%d).String() = %q, want %q", int(stage), got, want)
		}
	}
}

func TestDefaults(t *testing.T) {
	t.Parallel()
	b := setup(t)
	list, err := b.reg.List(t.Context())
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	want := []flags.Flag{
		{Definition: flags.Definition{
			Key:         flags.CompatAPI,
			Description: flags.Builtin()[0].Description,
			Stage:       flags.Beta,
		}},
		{Definition: flags.Definition{
			Key:         flags.CompatStreaming,
			Description: flags.Builtin()[1].Description,
			Stage:       flags.Experimental,
			DependsOn:   []string{flags.CompatAPI},
		}},
	}
	if !reflect.DeepEqual(list, want) {
		t.Fatalf("fresh database lists\n%+v\nwant\n%+v", list, want)
	}
	for _, f := range list {
		if f.Description == "" {
			t.Errorf("%s has no description", f.Key)
		}
		on, err := b.reg.Enabled(t.Context(), f.Key)
		if err != nil || on {
			t.Errorf("Enabled(%s) = %v, %v; want false, nil", f.Key, on, err)
		}
	}
}

func TestSetAndRead(t *testing.T) {
	t.Parallel()
	b := setup(t)
	// Each step runs after the previous ones, on the same database.
	steps := []struct {
		name    string
		advance time.Duration
		key     string
		enabled bool
		by      string
	}{
		{name: "enable", key: flags.CompatAPI, enabled: true, by: "user:alice"},
		{name: "enable again records who and when", advance: time.Minute, key: flags.CompatAPI, enabled: true, by: "user:bob"},
		{name: "enable dependant", advance: time.Second, key: flags.CompatStreaming, enabled: true, by: "token:ci"},
		{name: "disable dependant", advance: time.Hour, key: flags.CompatStreaming, enabled: false, by: "user:alice"},
		{name: "disable", advance: 24 * time.Hour, key: flags.CompatAPI, enabled: false, by: "user:carol"},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			b.clock.Advance(st.advance)
			at := b.clock.Now()
			got := mustSet(t, b.reg, st.key, st.enabled, st.by)
			check := func(how string, f flags.Flag) {
				t.Helper()
				if f.Key != st.key || f.Enabled != st.enabled || f.UpdatedBy != st.by ||
					f.UpdatedAt == nil || !f.UpdatedAt.Equal(at) {
					t.Errorf("%s: %s enabled=%v by=%q at=%v; want %s enabled=%v by=%q at=%v",
						how, f.Key, f.Enabled, f.UpdatedBy, f.UpdatedAt, st.key, st.enabled, st.by, at)
				}
			}
			check("Set", got)
			f, err := b.reg.Get(t.Context(), st.key)
			if err != nil {
				t.Fatalf("get: %v", err)
			}
			check("Get", f)
			list, err := b.reg.List(t.Context())
			if err != nil {
				t.Fatalf("list: %v", err)
			}
			for _, f := range list {
				if f.Key == st.key {
					check("List", f)
				}
			}
			on, err := b.reg.Enabled(t.Context(), st.key)
			if err != nil || on != st.enabled {
				t.Errorf("Enabled = %v, %v; want %v, nil", on, err, st.enabled)
			}
		})
	}
}

func TestSetWithoutClockUsesDatabaseTime(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r := newRegistry(t, b.store, flags.Builtin(), nil)
	before := time.Now()
	f := mustSet(t, r, flags.CompatAPI, true, "user:alice")
	if f.UpdatedAt == nil || f.UpdatedAt.Before(before.Add(-time.Minute)) || f.UpdatedAt.After(time.Now().Add(time.Minute)) {
		t.Fatalf("UpdatedAt = %v, want about %v", f.UpdatedAt, before)
	}
}

func TestSetRequiresChanger(t *testing.T) {
	t.Parallel()
	b := setup(t)
	if _, err := b.reg.Set(t.Context(), flags.CompatAPI, true, ""); err == nil {
		t.Fatal("Set with no changer succeeded")
	}
	if got, want := states(t, b.reg), []string{"compat_api=off", "compat_streaming=off"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("states = %v, want %v", got, want)
	}
}

// step is one change in a sequence of dependency tests, with its expected outcome.
type step struct {
	name    string
	key     string
	enable  bool
	refused *flags.DependencyError // nil: the change succeeds
	after   []string               // the stored states afterwards
}

// runSteps applies the steps in order, each as a subtest, checking the error and the
// states stored afterwards (a refused change must leave the database as it was).
func runSteps(t *testing.T, r *flags.Registry, steps []step) {
	t.Helper()
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			before, err := r.List(t.Context())
			if err != nil {
				t.Fatalf("list: %v", err)
			}
			_, err = r.Set(t.Context(), st.key, st.enable, "user:alice")
			switch {
			case st.refused == nil && err != nil:
				t.Fatalf("set %s to %v: %v", st.key, st.enable, err)
			case st.refused != nil:
				var depErr *flags.DependencyError
				if !errors.As(err, &depErr) {
					t.Fatalf("set %s to %v: error %v, want a *DependencyError", st.key, st.enable, err)
				}
				if !reflect.DeepEqual(depErr, st.refused) {
					t.Fatalf("set %s to %v: %+v, want %+v", st.key, st.enable, depErr, st.refused)
				}
				after, err := r.List(t.Context())
				if err != nil {
					t.Fatalf("list: %v", err)
				}
				if !reflect.DeepEqual(after, before) {
					t.Fatalf("a refused change changed the database:\nbefore %+v\nafter  %+v", before, after)
				}
			}
			if got := states(t, r); !reflect.DeepEqual(got, st.after) {
				t.Fatalf("states = %v, want %v", got, st.after)
			}
		})
	}
}

func TestDependenciesBuiltin(t *testing.T) {
	t.Parallel()
	b := setup(t)
	runSteps(t, b.reg, []step{
		{
			name: "enabling streaming while the API is off is refused", key: flags.CompatStreaming, enable: true,
			refused: &flags.DependencyError{Key: flags.CompatStreaming, Enable: true, Blockers: []string{flags.CompatAPI}},
			after:   []string{"compat_api=off", "compat_streaming=off"},
		},
		{
			name: "enable the API", key: flags.CompatAPI, enable: true,
			after: []string{"compat_api=on", "compat_streaming=off"},
		},
		{
			name: "then streaming may be enabled", key: flags.CompatStreaming, enable: true,
			after: []string{"compat_api=on", "compat_streaming=on"},
		},
		{
			name: "disabling the API while streaming is on is refused", key: flags.CompatAPI, enable: false,
			refused: &flags.DependencyError{Key: flags.CompatAPI, Enable: false, Blockers: []string{flags.CompatStreaming}},
			after:   []string{"compat_api=on", "compat_streaming=on"},
		},
		{
			name: "enabling what is on succeeds", key: flags.CompatStreaming, enable: true,
			after: []string{"compat_api=on", "compat_streaming=on"},
		},
		{
			name: "disable streaming", key: flags.CompatStreaming, enable: false,
			after: []string{"compat_api=on", "compat_streaming=off"},
		},
		{
			name: "then the API may be disabled", key: flags.CompatAPI, enable: false,
			after: []string{"compat_api=off", "compat_streaming=off"},
		},
		{
			name: "disabling what is off succeeds", key: flags.CompatAPI, enable: false,
			after: []string{"compat_api=off", "compat_streaming=off"},
		},
	})
}

// chainDefs is a custom set: a chain a -> b -> c (b depends on a, c on b) and a fan-in,
// x depending on both a and b.
func chainDefs() []flags.Definition {
	return []flags.Definition{
		{Key: "a", Description: "the root", Stage: flags.Stable},
		{Key: "b", Description: "needs a", Stage: flags.Beta, DependsOn: []string{"a"}},
		{Key: "c", Description: "needs b", Stage: flags.Experimental, DependsOn: []string{"b"}},
		{Key: "x", Description: "needs b and a", Stage: flags.Experimental, DependsOn: []string{"b", "a"}},
	}
}

func TestDependenciesChainAndFanIn(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r := newRegistry(t, b.store, chainDefs(), b.clock.Now)
	off := []string{"a=off", "b=off", "c=off", "x=off"}
	runSteps(t, r, []step{
		{
			name: "fan-in with both dependencies off", key: "x", enable: true,
			refused: &flags.DependencyError{Key: "x", Enable: true, Blockers: []string{"a", "b"}},
			after:   off,
		},
		{
			name: "end of the chain", key: "c", enable: true,
			refused: &flags.DependencyError{Key: "c", Enable: true, Blockers: []string{"b"}},
			after:   off,
		},
		{name: "enable a", key: "a", enable: true, after: []string{"a=on", "b=off", "c=off", "x=off"}},
		{
			name: "fan-in with one dependency off", key: "x", enable: true,
			refused: &flags.DependencyError{Key: "x", Enable: true, Blockers: []string{"b"}},
			after:   []string{"a=on", "b=off", "c=off", "x=off"},
		},
		{name: "enable b", key: "b", enable: true, after: []string{"a=on", "b=on", "c=off", "x=off"}},
		{name: "enable c", key: "c", enable: true, after: []string{"a=on", "b=on", "c=on", "x=off"}},
		{name: "enable x", key: "x", enable: true, after: []string{"a=on", "b=on", "c=on", "x=on"}},
		{
			name: "disable the root", key: "a", enable: false,
			refused: &flags.DependencyError{Key: "a", Enable: false, Blockers: []string{"b", "x"}},
			after:   []string{"a=on", "b=on", "c=on", "x=on"},
		},
		{
			name: "disable the middle", key: "b", enable: false,
			refused: &flags.DependencyError{Key: "b", Enable: false, Blockers: []string{"c", "x"}},
			after:   []string{"a=on", "b=on", "c=on", "x=on"},
		},
		{name: "disable x", key: "x", enable: false, after: []string{"a=on", "b=on", "c=on", "x=off"}},
		{
			name: "disable the middle with c still on", key: "b", enable: false,
			refused: &flags.DependencyError{Key: "b", Enable: false, Blockers: []string{"c"}},
			after:   []string{"a=on", "b=on", "c=on", "x=off"},
		},
		{name: "disable c", key: "c", enable: false, after: []string{"a=on", "b=on", "c=off", "x=off"}},
		{name: "disable b", key: "b", enable: false, after: []string{"a=on", "b=off", "c=off", "x=off"}},
		{name: "disable a", key: "a", enable: false, after: off},
	})
}

func TestDependencyErrorMessage(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		err  flags.DependencyError
		want string
	}{
		"enable, one blocker": {
			err:  flags.DependencyError{Key: "compat_streaming", Enable: true, Blockers: []string{"compat_api"}},
			want: "cannot enable compat_streaming: it depends on compat_api, which is off",
		},
		"enable, two blockers": {
			err:  flags.DependencyError{Key: "x", Enable: true, Blockers: []string{"a", "b"}},
			want: "cannot enable x: it depends on a and b, which are off",
		},
		"enable, three blockers": {
			err:  flags.DependencyError{Key: "x", Enable: true, Blockers: []string{"a", "b", "c"}},
			want: "cannot enable x: it depends on a, b and c, which are off",
		},
		"disable, one blocker": {
			err:  flags.DependencyError{Key: "compat_api", Blockers: []string{"compat_streaming"}},
			want: "cannot disable compat_api: compat_streaming is on and depends on it",
		},
		"disable, two blockers": {
			err:  flags.DependencyError{Key: "a", Blockers: []string{"b", "x"}},
			want: "cannot disable a: b and x are on and depend on it",
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if got := tt.err.Error(); got != tt.want {
				t.Errorf("Error() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestUnknownKey(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tests := map[string]func(key string) error{
		"Set": func(key string) error {
			_, err := b.reg.Set(t.Context(), key, true, "user:alice")
			return err
		},
		"Get": func(key string) error {
			_, err := b.reg.Get(t.Context(), key)
			return err
		},
		"Enabled": func(key string) error {
			_, err := b.reg.Enabled(t.Context(), key)
			return err
		},
	}
	for name, call := range tests {
		t.Run(name, func(t *testing.T) {
			for _, key := range []string{"no_such_flag", "", "Compat_API"} {
				err := call(key)
				if !errors.Is(err, flags.ErrUnknown) {
					t.Errorf("%s(%q): error %v, want one matching ErrUnknown", name, key, err)
				}
			}
		})
	}
	if got, want := states(t, b.reg), []string{"compat_api=off", "compat_streaming=off"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("states = %v, want %v", got, want)
	}
}

func TestNew(t *testing.T) {
	t.Parallel()
	s := storetest.New(t)
	def := func(key string, deflt bool, deps ...string) flags.Definition {
		return flags.Definition{Key: key, Description: "about " + key, Stage: flags.Beta, DependsOn: deps, Default: deflt}
	}
	tests := map[string]struct {
		defs []flags.Definition
		ok   bool
	}{
		"builtin":                      {defs: flags.Builtin(), ok: true},
		"chain and fan-in":             {defs: chainDefs(), ok: true},
		"none":                         {defs: nil, ok: true},
		"default on over default on":   {defs: []flags.Definition{def("a", true), def("b", true, "a")}, ok: true},
		"default off over default on":  {defs: []flags.Definition{def("a", true), def("b", false, "a")}, ok: true},
		"longest key":                  {defs: []flags.Definition{def(strings.Repeat("k", 64), false)}, ok: true},
		"digits and underscores":       {defs: []flags.Definition{def("a_1_b2", false)}, ok: true},
		"duplicate key":                {defs: []flags.Definition{def("a", false), def("a", false)}},
		"empty key":                    {defs: []flags.Definition{def("", false)}},
		"key with a capital":           {defs: []flags.Definition{def("compat_API", false)}},
		"key with a dash":              {defs: []flags.Definition{def("compat-api", false)}},
		"key with a dot":               {defs: []flags.Definition{def("compat.api", false)}},
		"key starting with a digit":    {defs: []flags.Definition{def("1compat", false)}},
		"key starting with _":          {defs: []flags.Definition{def("_compat", false)}},
		"key with a space":             {defs: []flags.Definition{def("compat api", false)}},
		"key too long":                 {defs: []flags.Definition{def(strings.Repeat("k", 65), false)}},
		"unknown dependency":           {defs: []flags.Definition{def("a", false, "nope")}},
		"dependency listed twice":      {defs: []flags.Definition{def("a", false), def("b", false, "a", "a")}},
		"self cycle":                   {defs: []flags.Definition{def("a", false, "a")}},
		"two-flag cycle":               {defs: []flags.Definition{def("a", false, "b"), def("b", false, "a")}},
		"three-flag cycle":             {defs: []flags.Definition{def("a", false, "c"), def("b", false, "a"), def("c", false, "b"), def("d", false, "a")}},
		"default on over default off":  {defs: []flags.Definition{def("a", false), def("b", true, "a")}},
		"no description":               {defs: []flags.Definition{{Key: "a", Stage: flags.Beta}}},
		"no stage":                     {defs: []flags.Definition{{Key: "a", Description: "about a"}}},
		"stage out of range":           {defs: []flags.Definition{{Key: "a", Description: "about a", Stage: flags.Stable + 1}}},
		"builtin with a cycle added":   {defs: append(flags.Builtin(), def("z", false, "z"))},
		"builtin with a duplicate key": {defs: append(flags.Builtin(), def(flags.CompatAPI, false))},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r, err := flags.New(flags.Options{Store: s, Definitions: tt.defs})
			switch {
			case tt.ok && err != nil:
				t.Fatalf("New: %v", err)
			case !tt.ok && err == nil:
				t.Fatalf("New accepted %+v", tt.defs)
			case !tt.ok:
				t.Logf("refused: %v", err)
			}
			if tt.ok && r == nil {
				t.Fatal("New returned no registry and no error")
			}
		})
	}
	if _, err := flags.New(flags.Options{Definitions: flags.Builtin()}); err == nil {
		t.Error("New accepted a nil store")
	}
}

func TestDefinitionsAreCopied(t *testing.T) {
	t.Parallel()
	b := setup(t)
	defs := chainDefs()
	r := newRegistry(t, b.store, defs, b.clock.Now)
	defs[1].DependsOn[0] = "c" // would make a cycle, and free b of a
	f, err := r.Get(t.Context(), "b")
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	f.DependsOn[0] = "x"
	f, err = r.Get(t.Context(), "b")
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	if !reflect.DeepEqual(f.DependsOn, []string{"a"}) {
		t.Fatalf("b depends on %v, want [a]", f.DependsOn)
	}
	if _, err := r.Set(t.Context(), "b", true, "user:alice"); err == nil {
		t.Fatal("enabling b with a off succeeded")
	}
}

func TestEnabledSeesLocalSetAtOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for i, want := range []bool{true, false, true, false} {
		// Warm the cache, so that only the Set can make the next answer right.
		if on, err := b.reg.Enabled(t.Context(), flags.CompatAPI); err != nil || on == want {
			t.Fatalf("round %d: Enabled before Set = %v, %v; want %v, nil", i, on, err, !want)
		}
		mustSet(t, b.reg, flags.CompatAPI, want, "user:alice")
		if on, err := b.reg.Enabled(t.Context(), flags.CompatAPI); err != nil || on != want {
			t.Fatalf("round %d: Enabled right after Set = %v, %v; want %v, nil", i, on, err, want)
		}
	}
}

func TestEnabledSeesOtherReplica(t *testing.T) {
	t.Parallel()
	b := setup(t)
	other := b.replica(t, flags.Builtin())
	for i, want := range []bool{true, false} {
		if on, err := b.reg.Enabled(t.Context(), flags.CompatAPI); err != nil || on == want {
			t.Fatalf("round %d: Enabled before the change = %v, %v; want %v, nil", i, on, err, !want)
		}
		mustSet(t, other, flags.CompatAPI, want, "user:alice")
		// The cache may hold the old state for up to a second of real time (cacheTTL, on
		// the monotonic clock): this checks only that the change shows eventually.
		start := time.Now()
		eventually.True(t, fmt.Sprintf("round %d: the other replica's change visible", i), func() bool {
			on, err := b.reg.Enabled(t.Context(), flags.CompatAPI)
			if err != nil {
				t.Fatalf("round %d: Enabled: %v", i, err)
			}
			return on == want
		})
		t.Logf("round %d: seen after %v", i, time.Since(start).Round(time.Millisecond))
	}
}

// TestEnabledRequiresDependencies covers stored states that break a dependency, which
// Set never writes but a change of definitions between releases can leave behind: here
// an older release's registry knew b without its dependency on a.
func TestEnabledRequiresDependencies(t *testing.T) {
	t.Parallel()
	b := setup(t)
	older := newRegistry(t, b.store, []flags.Definition{
		{Key: "a", Description: "the root", Stage: flags.Stable},
		{Key: "b", Description: "does not need a yet", Stage: flags.Beta},
	}, b.clock.Now)
	mustSet(t, older, "b", true, "user:alice")

	r := newRegistry(t, b.store, chainDefs(), b.clock.Now)
	f, err := r.Get(t.Context(), "b")
	if err != nil || !f.Enabled {
		t.Fatalf("Get(b) = %+v, %v; want the stored state, on", f, err)
	}
	for key, want := range map[string]bool{"a": false, "b": false, "c": false} {
		if on, err := r.Enabled(t.Context(), key); err != nil || on != want {
			t.Errorf("Enabled(%s) = %v, %v; want %v, nil", key, on, err, want)
		}
	}
	mustSet(t, r, "a", true, "user:alice")
	if on, err := r.Enabled(t.Context(), "b"); err != nil || !on {
		t.Errorf("with a on, Enabled(b) = %v, %v; want true, nil", on, err)
	}
}

// TestSetConcurrentReplicas races, many times, two replicas: one enables streaming
// while the other disables the API, which is on at the start. Exactly one may win, and
// the database must never end with streaming on and the API off.
func TestSetConcurrentReplicas(t *testing.T) {
	t.Parallel()
	b := setup(t)
	one, two := b.replica(t, flags.Builtin()), b.replica(t, flags.Builtin())
	const rounds = 100
	wins := map[string]int{}
	for i := range rounds {
		mustSet(t, b.reg, flags.CompatStreaming, false, "test:reset")
		mustSet(t, b.reg, flags.CompatAPI, true, "test:reset")
		start := make(chan struct{})
		var wg sync.WaitGroup
		var enableErr, disableErr error
		wg.Go(func() {
			<-start
			_, enableErr = one.Set(t.Context(), flags.CompatStreaming, true, "replica:one")
		})
		wg.Go(func() {
			<-start
			_, disableErr = two.Set(t.Context(), flags.CompatAPI, false, "replica:two")
		})
		close(start)
		wg.Wait()

		got := states(t, b.reg)
		if reflect.DeepEqual(got, []string{"compat_api=off", "compat_streaming=on"}) {
			t.Fatalf("round %d: a dependency is broken: %v (enable: %v, disable: %v)", i, got, enableErr, disableErr)
		}
		var depErr *flags.DependencyError
		switch {
		case enableErr == nil && errors.As(disableErr, &depErr):
			wins["enable"]++
		case disableErr == nil && errors.As(enableErr, &depErr):
			wins["disable"]++
		default:
			t.Fatalf("round %d: want exactly one change refused by a dependency; enable: %v, disable: %v",
				i, enableErr, disableErr)
		}
	}
	t.Logf("wins over %d rounds: %v", rounds, wins)
}

// TestEnabledConcurrent asks Enabled from many goroutines while flags change, for the
// race detector, while the changing goroutine checks that it sees its own Sets at once.
func TestEnabledConcurrent(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 16 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				for _, key := range []string{flags.CompatAPI, flags.CompatStreaming} {
					if _, err := b.reg.Enabled(t.Context(), key); err != nil {
						t.Errorf("Enabled(%s): %v", key, err)
						return
					}
				}
			}
		})
	}
	for range 20 {
		mustSet(t, b.reg, flags.CompatAPI, true, "user:alice")
		mustSet(t, b.reg, flags.CompatStreaming, true, "user:alice")
		if on, err := b.reg.Enabled(t.Context(), flags.CompatStreaming); err != nil || !on {
			t.Errorf("Enabled(streaming) right after Set = %v, %v; want true, nil", on, err)
		}
		mustSet(t, b.reg, flags.CompatStreaming, false, "user:alice")
		mustSet(t, b.reg, flags.CompatAPI, false, "user:alice")
		if on, err := b.reg.Enabled(t.Context(), flags.CompatAPI); err != nil || on {
			t.Errorf("Enabled(api) right after Set = %v, %v; want false, nil", on, err)
		}
	}
	close(stop)
	wg.Wait()
}
