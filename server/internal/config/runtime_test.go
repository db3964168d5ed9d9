package config_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/palyra/palyra/server/internal/config"
)

// TestSources: each value says where it came from, whichever source set it last.
func TestSources(t *testing.T) {
	t.Parallel()
	file := writeFile(t, "[nodes]\nheartbeat_interval = \"20s\"\n[pairing]\npin_digits = 9\n")
	c, err := load(t, []string{"--config", file, "--pairing-pin-digits", "10"},
		map[string]string{"PALYRA_LOG_LEVEL": "debug", "PALYRA_MASTER_KEY": "x"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]config.Source{
		"nodes.heartbeat_interval": config.SourceFile,
		"pairing.pin_digits":       config.SourceFlag,
		"log.level":                config.SourceEnvironment,
		"master_key":               config.SourceEnvironment,
		"listen":                   config.SourceDefault,
	}
	for key, src := range want {
		if got := c.Source(key); got != src {
			t.Errorf("%s: source %v, want %v", key, got, src)
		}
	}
	if c.Log.LevelVar == nil || c.Log.LevelVar.Level() != c.Log.Level {
		t.Errorf("LevelVar %v does not hold the level %v", c.Log.LevelVar, c.Log.Level)
	}
}

// TestSetByKey: Set goes through the setting's own parser, for scalars and lists, and
// leaves the Config as it was when it refuses.
func TestSetByKey(t *testing.T) {
	t.Parallel()
	c, err := load(t, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Set("nodes.heartbeat_interval", config.Value{Text: "20000ms"}); err != nil || c.Nodes.HeartbeatInterval != 20*time.Second {
		t.Errorf("set heartbeat: %v, %v", err, c.Nodes.HeartbeatInterval)
	}
	if got := c.Value("nodes.heartbeat_interval"); got.Text != "20s" || got.List {
		t.Errorf("canonical value %+v", got)
	}
	if err := c.Set("compat.models", config.Value{Text: "a, b"}); err != nil || !slices.Equal(c.Compat.Models, []string{"a", "b"}) {
		t.Errorf("set models from text: %v, %v", err, c.Compat.Models)
	}
	if err := c.Set("compat.models", config.Value{List: true, Items: []string{"x"}}); err != nil || !c.Value("compat.models").Equal(config.Value{List: true, Items: []string{"x"}}) {
		t.Errorf("set models from a list: %v, %+v", err, c.Value("compat.models"))
	}
	if err := c.Set("compat.node_selector", config.Value{Text: " gpu , zone in (b,a)"}); err != nil ||
		c.Value("compat.node_selector").Text != "gpu,zone in (a,b)" || !c.Compat.NodeSelector.Matches(map[string]string{"gpu": "", "zone": "a"}) {
		t.Errorf("set the node selector: %v, %+v", err, c.Value("compat.node_selector"))
	}
	refusals := map[string]struct {
		key   string
		value config.Value
		says  string
	}{
		"not a duration":    {"nodes.heartbeat_interval", config.Value{Text: "soon"}, "must be a duration"},
		"out of range":      {"pairing.pin_digits", config.Value{Text: "5"}, "between 6 and 12"},
		"list for a scalar": {"log.level", config.Value{List: true, Items: []string{"debug"}}, "not a list"},
		"duplicate model":   {"compat.models", config.Value{List: true, Items: []string{"m", "m"}}, "listed twice"},
		"unknown":           {"no.such", config.Value{Text: "1"}, "unknown setting"},
		"bad selector":      {"compat.node_selector", config.Value{Text: "gpu in a100"}, `at position 8: want "(" after "in", found "a100"`},
	}
	for name, r := range refusals {
		before := c.Clone()
		err := c.Set(r.key, r.value)
		if err == nil || !strings.Contains(err.Error(), r.says) {
			t.Errorf("%s: %v, want an error saying %q", name, err, r.says)
		}
		if c.Nodes != before.Nodes || c.Pairing != before.Pairing || !slices.Equal(c.Compat.Models, before.Compat.Models) ||
			c.Compat.NodeSelector.String() != before.Compat.NodeSelector.String() {
			t.Errorf("%s: the refused value changed the Config", name)
		}
	}
	// Clones share no slices.
	clone := c.Clone()
	clone.Compat.Models[0] = "changed"
	clone.SetSource("compat.models", config.SourceDatabase)
	if c.Compat.Models[0] == "changed" || c.Source("compat.models") == config.SourceDatabase {
		t.Error("a clone shares state with its original")
	}
}

// TestSettingsDescribeThemselves: the runtime settings are those the issue names, and
// bootstrap settings say where they are changed.
func TestSettingsDescribeThemselves(t *testing.T) {
	t.Parallel()
	var runtime []string
	for _, s := range config.Settings() {
		if s.Runtime {
			runtime = append(runtime, s.Key)
		}
	}
	want := []string{"pairing.pin_digits", "pairing.request_ttl", "nodes.heartbeat_interval", "tokens.default_rate_limit", "log.level", "compat.models",
		"compat.providers.<name>.base_url", "compat.providers.<name>.api_key", "compat.providers.<name>.models", "compat.providers.<name>.timeout",
		"compat.node_selector", "agents.approval_timeout"}
	if !slices.Equal(runtime, want) {
		t.Errorf("runtime settings %v, want %v", runtime, want)
	}
	listen, ok := config.Lookup("listen")
	if !ok || !strings.Contains(listen.Where(), "--listen") || !strings.Contains(listen.Where(), "PALYRA_LISTEN") {
		t.Errorf("listen: %+v, where %q", listen, listen.Where())
	}
	if mk, _ := config.Lookup("master_key"); mk.Flag != "" || !mk.Secret || !strings.Contains(mk.Where(), "PALYRA_MASTER_KEY") {
		t.Errorf("master_key: %+v", mk)
	}
	for typo, want := range map[string]string{
		"nodes.heartbeat_intervall": "nodes.heartbeat_interval",
		"nodes.heartbeat":           "nodes.heartbeat_interval",
		"log.levle":                 "log.level",
		"completely.different":      "",
	} {
		if got := config.Suggest(typo); got != want {
			t.Errorf("Suggest(%q) = %q, want %q", typo, got, want)
		}
	}
}
