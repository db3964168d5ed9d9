package config

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Source says where a setting's effective value came from.
type Source string

// The sources, from the weakest to the strongest (the database only for runtime
// settings).
const (
	SourceDefault     Source = "default"
	SourceFile        Source = "file"
	SourceEnvironment Source = "environment"
	SourceFlag        Source = "flag"
	SourceDatabase    Source = "database"
)

// Setting describes one setting of the table, for the configuration API.
type Setting struct {
	// Key is the file key, e.g. "nodes.heartbeat_interval"; the API names it so too.
	Key string
	// Kind is the value's type as the help text names it: "duration", "count",
	// "bytes", "bool", "level", "url", ...
	Kind string
	// Usage says what the setting does, with its range.
	Usage string
	// Flag is the command-line flag with its dashes ("--nodes-heartbeat-interval");
	// empty for secret settings, which have none.
	Flag string
	// Env is the environment variable, e.g. "PALYRA_NODES_HEARTBEAT_INTERVAL".
	Env string
	// List settings take a list of values (a repeated flag, a comma-separated variable,
	// a TOML array).
	List bool
	// Runtime settings can be changed live through the API; the others are bootstrap
	// settings, read once at start.
	Runtime bool
	// Secret settings' values are never shown.
	Secret bool
}

// Where says where a bootstrap setting is changed: its flag, variable and file key.
func (s Setting) Where() string {
	if s.Flag == "" {
		return fmt.Sprintf("the environment variable %s", s.Env)
	}
	return fmt.Sprintf("the flag %s, the environment variable %s or the key %s of palyrad's configuration file, then restart palyrad", s.Flag, s.Env, s.Key)
}

func (s setting) describe() Setting {
	d := Setting{
		Key: s.key, Kind: s.kind, Usage: s.usage, Env: s.envName(),
		List: s.setList != nil, Runtime: s.runtime, Secret: s.secret,
	}
	if !s.secret {
		d.Flag = "--" + s.flagName()
	}
	return d
}

// Settings describes every setting, in help order.
func Settings() []Setting {
	out := make([]Setting, len(settings))
	for i, s := range settings {
		out[i] = s.describe()
	}
	return out
}

// Lookup describes the setting key; ok is false when there is none.
func Lookup(key string) (Setting, bool) {
	s, ok := find(key)
	if !ok {
		return Setting{}, false
	}
	return s.describe(), true
}

func find(key string) (setting, bool) {
	for _, s := range settings {
		if s.key == key {
			return s, true
		}
	}
	return setting{}, false
}

// Suggest returns the known key closest to key, or "" when none is close: an edit
// distance above a third of its length, unless key begins a known key.
func Suggest(key string) string {
	best, bestDist := "", len(key)/3+1
	for _, s := range settings {
		d := editDistance(key, s.key)
		if len(key) >= 3 && strings.HasPrefix(s.key, key) {
			d = min(d, 1)
		}
		if d < bestDist {
			best, bestDist = s.key, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance of a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// Value is a setting's value: Items for list settings, Text for the others.
type Value struct {
	Text  string
	Items []string
	List  bool
}

// String renders the value as the help text does: lists comma-separated.
func (v Value) String() string {
	if v.List {
		return strings.Join(v.Items, ",")
	}
	return v.Text
}

// Equal reports whether v and w are the same value.
func (v Value) Equal(w Value) bool {
	return v.List == w.List && v.Text == w.Text && slices.Equal(v.Items, w.Items)
}

// Value returns the current value of the setting key: "" for secret settings and, for
// database.url, the database without its credentials. The key must exist.
func (c *Config) Value(key string) Value {
	s, _ := find(key)
	if s.setList != nil {
		return Value{List: true, Items: splitList(s.show(c))}
	}
	return Value{Text: s.show(c)}
}

// Set parses, checks and applies v to the setting key with the setting's own parser,
// the one flags, variables and the file go through. A list setting also takes a Text,
// comma-separated like its environment variable; a scalar setting refuses a list. The
// error says what was expected, without the key; the Config is unchanged on error.
func (c *Config) Set(key string, v Value) error {
	s, ok := find(key)
	if !ok {
		return fmt.Errorf("unknown setting %q", key)
	}
	next := c.Clone()
	var err error
	switch {
	case s.setList != nil && v.List:
		err = s.setList(next, slices.Clone(v.Items))
	case s.setList != nil:
		err = s.setList(next, splitList(v.Text))
	case v.List:
		err = fmt.Errorf("must be a single %s, not a list", s.kind)
	default:
		err = s.set(next, v.Text)
	}
	if err != nil {
		return err
	}
	*c = *next
	return nil
}

// Source says where the value of the setting key came from.
func (c *Config) Source(key string) Source {
	if src, ok := c.sources[key]; ok {
		return src
	}
	return SourceDefault
}

// SetSource records where the value of the setting key came from; the live
// configuration records SourceDatabase for the values it applies.
func (c *Config) SetSource(key string, src Source) { c.setSource(key, src) }

func (c *Config) setSource(key string, src Source) {
	if c.sources == nil {
		c.sources = map[string]Source{}
	}
	c.sources[key] = src
}

// Clone returns a copy of c that shares nothing with it but Log.LevelVar.
func (c *Config) Clone() *Config {
	out := *c
	out.TLS.SANs = slices.Clone(c.TLS.SANs)
	out.Compat.Models = slices.Clone(c.Compat.Models)
	out.sources = maps.Clone(c.sources)
	return &out
}
