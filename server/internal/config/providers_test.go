package config_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/palyra/palyra/server/internal/config"
	"github.com/palyra/palyra/server/internal/secretref"
)

// TestProvidersFromFile: [compat.providers.<name>] tables configure providers, with the
// same parsers as the API; their settings are listed per provider, the api_key as a
// reference, and have no flag or environment variable.
func TestProvidersFromFile(t *testing.T) {
	t.Parallel()
	file := writeFile(t, `
[compat]
models = ["palyra-echo"]

[compat.providers.openai]
base_url = "https://api.openai.com/v1/"
api_key = "secret:openai@2"
models = ["gpt-4o", "fast=gpt-4o-mini"]
timeout = "30s"

[compat.providers.local]
base_url = "http://127.0.0.1:8080/v1"
models = ["llama3"]
`)
	c, err := load(t, []string{"--config", file}, nil)
	if err != nil {
		t.Fatal(err)
	}
	openai := c.Compat.Providers["openai"]
	want := config.Provider{BaseURL: "https://api.openai.com/v1", APIKey: "secret:openai@2", Timeout: 30 * time.Second,
		Models: []config.ProviderModel{{ID: "gpt-4o", Upstream: "gpt-4o"}, {ID: "fast", Upstream: "gpt-4o-mini"}}}
	if openai.BaseURL != want.BaseURL || openai.APIKey != want.APIKey || openai.Timeout != want.Timeout || !slices.Equal(openai.Models, want.Models) {
		t.Errorf("openai = %+v, want %+v", openai, want)
	}
	if got := c.Compat.Providers["local"].Timeout; got != config.DefaultProviderTimeout {
		t.Errorf("local timeout %v, want the default", got)
	}
	if v := c.Value("compat.providers.openai.models"); !slices.Equal(v.Items, []string{"gpt-4o", "fast=gpt-4o-mini"}) {
		t.Errorf("models shown as %v", v)
	}
	if got := c.Source("compat.providers.openai.api_key"); got != config.SourceFile {
		t.Errorf("source %v", got)
	}
	var keys []string
	for _, st := range c.Settings() {
		if strings.HasPrefix(st.Key, "compat.providers.") {
			keys = append(keys, st.Key)
			if st.Flag != "" || st.Env != "" || !st.Runtime || st.Template {
				t.Errorf("%s: %+v", st.Key, st)
			}
			if st.SecretRef != strings.HasSuffix(st.Key, ".api_key") {
				t.Errorf("%s: SecretRef %v", st.Key, st.SecretRef)
			}
		}
	}
	if len(keys) != 8 || keys[0] != "compat.providers.local.base_url" || keys[1] != "compat.providers.openai.base_url" {
		t.Errorf("provider settings %v", keys)
	}
	if refs := c.SecretRefs(); len(refs) != 1 || refs[0] != (config.SecretRef{Key: "compat.providers.openai.api_key", Ref: secretref.Ref{Name: "openai", Version: 2}}) {
		t.Errorf("SecretRefs = %+v", refs)
	}
	if st, ok := config.Lookup("compat.providers.openai.timeout"); !ok || st.Kind != "duration" || !strings.Contains(st.Usage, "openai") {
		t.Errorf("Lookup = %+v, %v", st, ok)
	}
}

// TestProviderValuesRefused: each provider setting refuses what it cannot take, with a
// message saying what it expects, and the api_key takes only a reference.
func TestProviderValuesRefused(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		key  string
		v    config.Value
		want string
	}{
		{"compat.providers.openai.api_key", config.Value{Text: "sk-test-123"}, "palyra secrets set"},
		{"compat.providers.openai.api_key", config.Value{Text: "secret:"}, "malformed secret reference"},
		{"compat.providers.openai.api_key", config.Value{Text: "secret:a b"}, "malformed secret reference"},
		{"compat.providers.openai.api_key", config.Value{Text: "secret:openai@0"}, "positive whole number"},
		{"compat.providers.openai.base_url", config.Value{Text: "ftp://x"}, "http or https URL"},
		{"compat.providers.openai.base_url", config.Value{Text: "https://user:pw@api.example.com"}, "without credentials"},
		{"compat.providers.openai.timeout", config.Value{Text: "2h"}, "between 1s and 1h0m0s"},
		{"compat.providers.openai.models", config.Value{List: true, Items: []string{"a", "a"}}, "listed twice"},
		{"compat.providers.openai.models", config.Value{List: true, Items: []string{"a=b=c"}}, "not a model"},
		{"compat.providers.OpenAI.models", config.Value{List: true, Items: []string{"a"}}, "not a provider name"},
		{"compat.providers.a.b.models", config.Value{List: true, Items: []string{"a"}}, "unknown setting"},
		{"compat.providers.openai.nope", config.Value{Text: "x"}, "unknown setting"},
	} {
		c := &config.Config{}
		err := c.Set(tc.key, tc.v)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Set(%s, %v) = %v, want %q", tc.key, tc.v, err, tc.want)
		}
		if strings.Contains(fmtErr(err), "sk-test-123") {
			t.Errorf("the error repeats the key: %v", err)
		}
		if len(c.Compat.Providers) != 0 {
			t.Errorf("Set(%s) made a provider on error: %+v", tc.key, c.Compat.Providers)
		}
	}
	if _, err := load(t, []string{"--config", writeFile(t, "[compat.providers.openai]\napi_key = \"sk-plain\"\n")}, nil); err == nil ||
		!strings.Contains(err.Error(), "compat.providers.openai.api_key") || strings.Contains(err.Error(), "sk-plain") {
		t.Errorf("a plain key in the file: %v", err)
	}
}

func fmtErr(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
