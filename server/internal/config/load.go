package config

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/oklog/ulid/v2"
	"github.com/pelletier/go-toml/v2"
	"github.com/spf13/pflag"
)

// configFlag names the configuration file; its environment variable is PALYRA_CONFIG.
const configFlag = "config"

// RegisterFlags adds --config and one flag per setting to fs. Each flag's help names
// its environment variable and file key and shows its default. getenv supplies the
// variables that defaults depend on (XDG_DATA_HOME, HOME).
func RegisterFlags(fs *pflag.FlagSet, getenv func(string) string) {
	def := defaults(getenv)
	fs.String(configFlag, "", "TOML configuration file (env PALYRA_CONFIG)")
	for _, s := range settings {
		if s.secret || s.template() {
			continue
		}
		usage := fmt.Sprintf("%s (env %s, file key %s)", s.usage, s.envName(), s.key)
		if s.setList != nil {
			fs.Var(&listFlag{kind: s.kind}, s.flagName(), usage)
			continue
		}
		fs.Var(&textFlag{value: s.show(&def), kind: s.kind}, s.flagName(), usage)
	}
}

// textFlag is a flag holding one value, with its kind as the type in the help text.
type textFlag struct{ value, kind string }

func (f *textFlag) String() string     { return f.value }
func (f *textFlag) Set(v string) error { f.value = v; return nil }
func (f *textFlag) Type() string       { return f.kind }

// listFlag is a repeatable flag: each use adds a value.
type listFlag struct {
	values []string
	kind   string
}

func (f *listFlag) String() string     { return strings.Join(f.values, ",") }
func (f *listFlag) Set(v string) error { f.values = append(f.values, v); return nil }
func (f *listFlag) Type() string       { return f.kind }

// EnvironmentOnly describes the settings that have no flag, for the help text.
func EnvironmentOnly() string {
	var b strings.Builder
	for _, s := range settings {
		if s.secret {
			fmt.Fprintf(&b, "  %s\n      %s\n", s.envName(), s.usage)
		}
	}
	return b.String()
}

// Load builds the configuration: the defaults, overridden by the TOML file (--config or
// PALYRA_CONFIG), overridden by PALYRA_* environment variables, overridden by the flags
// set on fs (already parsed). Every value is validated as it is applied; an error names
// the setting and the source of the offending value.
func Load(fs *pflag.FlagSet, getenv func(string) string) (*Config, error) {
	c := defaults(getenv)
	path := getenv("PALYRA_CONFIG")
	if fs.Changed(configFlag) {
		path, _ = fs.GetString(configFlag)
	}
	if path != "" {
		if err := c.applyFile(path); err != nil {
			return nil, err
		}
		c.File = path
	}
	for _, s := range settings {
		if s.template() {
			continue
		}
		if v := getenv(s.envName()); v != "" {
			src := "environment variable " + s.envName()
			c.setSource(s.key, SourceEnvironment)
			if s.setList != nil {
				if err := s.setList(&c, splitList(v)); err != nil {
					return nil, settingError(s, src, err)
				}
				continue
			}
			if err := s.set(&c, v); err != nil {
				return nil, settingError(s, src, err)
			}
		}
	}
	for _, s := range settings {
		if s.secret || s.template() || !fs.Changed(s.flagName()) {
			continue
		}
		src := "flag --" + s.flagName()
		c.setSource(s.key, SourceFlag)
		var err error
		switch v := fs.Lookup(s.flagName()).Value.(type) {
		case *listFlag:
			err = s.setList(&c, v.values)
		default:
			err = s.set(&c, v.String())
		}
		if err != nil {
			return nil, settingError(s, src, err)
		}
	}
	if c.ReplicaID == "" {
		c.ReplicaID = ulid.Make().String()
	}
	// The default is relative when neither HOME nor XDG_DATA_HOME is set.
	abs, err := filepath.Abs(c.DataDir)
	if err != nil {
		return nil, fmt.Errorf("config: data_dir: %w", err)
	}
	c.DataDir = abs
	c.Log.LevelVar = new(slog.LevelVar)
	c.Log.LevelVar.Set(c.Log.Level)
	return &c, nil
}

func settingError(s setting, source string, err error) error {
	return fmt.Errorf("config: %s (from %s): %w", s.key, source, err)
}

// splitList splits a comma-separated environment value.
func splitList(v string) []string {
	var out []string
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// applyFile applies the settings of a TOML file. Unknown keys are errors, so that a
// misspelt setting is not silently ignored.
func (c *Config) applyFile(path string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: read configuration file: %w", err)
	}
	var doc map[string]any
	if err := toml.Unmarshal(raw, &doc); err != nil {
		var de *toml.DecodeError
		if errors.As(err, &de) {
			row, col := de.Position()
			return fmt.Errorf("config: %s:%d:%d: %s", path, row, col, de.Error())
		}
		return fmt.Errorf("config: %s: %w", path, err)
	}
	return c.applyTable(path, "", doc)
}

func (c *Config) applyTable(path, prefix string, table map[string]any) error {
	keys := make([]string, 0, len(table))
	for k := range table {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		key := prefix + k
		v := table[k]
		if sub, ok := v.(map[string]any); ok {
			if err := c.applyTable(path, key+".", sub); err != nil {
				return err
			}
			continue
		}
		s, ok := find(key)
		if !ok {
			return fmt.Errorf("config: %s: unknown setting %q", path, key)
		}
		src := "file " + path
		if s.secret {
			return settingError(s, src, fmt.Errorf("can only be set through the environment variable %s", s.envName()))
		}
		if err := c.applyValue(s, v); err != nil {
			return settingError(s, src, err)
		}
		c.setSource(s.key, SourceFile)
	}
	return nil
}

// applyValue applies one TOML value.
func (c *Config) applyValue(s setting, v any) error {
	if s.setList != nil {
		items, ok := v.([]any)
		if !ok {
			return fmt.Errorf("must be a list of strings")
		}
		list := make([]string, len(items))
		for i, it := range items {
			str, ok := it.(string)
			if !ok {
				return fmt.Errorf("must be a list of strings")
			}
			list[i] = str
		}
		return s.setList(c, list)
	}
	switch v := v.(type) {
	case string:
		return s.set(c, v)
	case int64:
		return s.set(c, strconv.FormatInt(v, 10))
	case bool:
		return s.set(c, strconv.FormatBool(v))
	default:
		return fmt.Errorf("has an unsupported value type %T (write it as a string)", v)
	}
}
