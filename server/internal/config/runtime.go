package config

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/palyra/palyra/server/internal/secretref"
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
	// SecretRef settings take a secret reference, secret:NAME or secret:NAME@VERSION, as
	// their value, never the secret itself; the value is shown as written.
	SecretRef bool
	// Template settings stand for one setting per name: Key holds "<name>" where the
	// name goes. They have no flag and no environment variable. Config.Settings lists
	// their instances.
	Template bool
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
		Key: s.key, Kind: s.kind, Usage: s.usage, Runtime: s.runtime, Secret: s.secret,
		SecretRef: s.secretRef, Template: s.template(),
	}
	d.List = s.setList != nil
	if s.template() {
		d.List = s.instance("").setList != nil
	}
	if s.template() || s.templated {
		return d
	}
	d.Env = s.envName()
	if !s.secret {
		d.Flag = "--" + s.flagName()
	}
	return d
}

// Settings describes every setting of c, in help order, with the templates' instances
// for the names c has (every configured provider) instead of the templates.
func (c *Config) Settings() []Setting {
	var out []Setting
	for _, s := range settings {
		if !s.template() {
			out = append(out, s.describe())
			continue
		}
		for _, name := range s.names(c) {
			out = append(out, s.bind(name).describe())
		}
	}
	return out
}

// bind returns the template s's setting of name: its key, kind and usage with the name
// in place.
func (s setting) bind(name string) setting {
	in := s.instance(name)
	in.key = strings.Replace(s.key, nameSlot, name, 1)
	in.kind, in.runtime, in.secretRef, in.templated = s.kind, s.runtime, s.secretRef, true
	in.usage = strings.ReplaceAll(s.usage, nameSlot, name)
	return in
}

// SecretRef is a setting's secret reference.
type SecretRef struct {
	// Key is the setting's key.
	Key string
	// Ref is its value, parsed.
	Ref secretref.Ref
}

// SecretRefs lists the secret references of c: the value of every setting that takes
// one and has one, by key.
func (c *Config) SecretRefs() []SecretRef {
	var out []SecretRef
	for _, st := range c.Settings() {
		if !st.SecretRef {
			continue
		}
		v := c.Value(st.Key).Text
		if ref, err := secretref.Parse(v); err == nil {
			out = append(out, SecretRef{Key: st.Key, Ref: ref})
		}
	}
	return out
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

// find returns the setting key: one of the table, or a template's instance whose name
// is in the key's place of "<name>" (checked by the instance when it is set).
func find(key string) (setting, bool) {
	for _, s := range settings {
		if s.key == key && !s.template() {
			return s, true
		}
	}
	for _, s := range settings {
		if !s.template() {
			continue
		}
		prefix, suffix, _ := strings.Cut(s.key, nameSlot)
		name, ok := strings.CutPrefix(key, prefix)
		if name, ok2 := strings.CutSuffix(name, suffix); ok && ok2 && name != "" && !strings.Contains(name, ".") {
			return s.bind(name), true
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
	out.Compat.Providers = maps.Clone(c.Compat.Providers) // withProvider replaces a Provider, never changes one in place
	out.sources = maps.Clone(c.sources)
	return &out
}
