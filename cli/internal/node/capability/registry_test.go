package capability

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// fakeCapability describes itself as d and runs nothing.
type fakeCapability struct{ d Descriptor }

func (f fakeCapability) Describe() Descriptor { return f.d }

func (f fakeCapability) Run(context.Context, json.RawMessage, Output) (Result, error) {
	return Result{}, nil
}

func fake(name string) Capability { return &fakeCapability{Descriptor{Name: name, Available: true}} }

func TestNewRegistry(t *testing.T) {
	t.Parallel()
	tooMany := make([]Capability, MaxCapabilities+1)
	for i := range tooMany {
		tooMany[i] = fake(fmt.Sprintf("c%d", i))
	}
	tests := map[string]struct {
		caps    []Capability
		wantErr string // empty: valid
	}{
		"none":                 {},
		"one":                  {caps: []Capability{fake("a")}},
		"dotted and digits":    {caps: []Capability{fake("shell.execute"), fake("a1.b_2.c3")}},
		"longest name":         {caps: []Capability{fake(strings.Repeat("a", MaxNameLen))}},
		"empty name":           {caps: []Capability{fake("")}, wantErr: "invalid capability name"},
		"upper case":           {caps: []Capability{fake("Shell.execute")}, wantErr: "invalid capability name"},
		"leading digit":        {caps: []Capability{fake("1shell")}, wantErr: "invalid capability name"},
		"double dot":           {caps: []Capability{fake("shell..execute")}, wantErr: "invalid capability name"},
		"trailing dot":         {caps: []Capability{fake("shell.")}, wantErr: "invalid capability name"},
		"leading dot":          {caps: []Capability{fake(".shell")}, wantErr: "invalid capability name"},
		"dash":                 {caps: []Capability{fake("shell-execute")}, wantErr: "invalid capability name"},
		"space":                {caps: []Capability{fake("shell execute")}, wantErr: "invalid capability name"},
		"name too long":        {caps: []Capability{fake(strings.Repeat("a", MaxNameLen+1))}, wantErr: "invalid capability name"},
		"duplicate":            {caps: []Capability{fake("a"), fake("b"), fake("a")}, wantErr: `"a" registered twice`},
		"nil":                  {caps: []Capability{fake("a"), nil}, wantErr: "capability 1 is nil"},
		"too many":             {caps: tooMany, wantErr: "at most 256"},
		"description too long": {caps: []Capability{fakeCapability{Descriptor{Name: "a", Description: strings.Repeat("x", MaxDescriptionLen+1)}}}, wantErr: "description"},
		"schema not JSON":      {caps: []Capability{fakeCapability{Descriptor{Name: "a", InputSchema: json.RawMessage(`{`)}}}, wantErr: "not a JSON object"},
		"schema not an object": {caps: []Capability{fakeCapability{Descriptor{Name: "a", InputSchema: json.RawMessage(`[]`)}}}, wantErr: "not a JSON object"},
		"schema too long": {caps: []Capability{fakeCapability{Descriptor{Name: "a",
			InputSchema: json.RawMessage(`{"description":"` + strings.Repeat("x", MaxSchemaLen) + `"}`)}}}, wantErr: "input schema of"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r, err := NewRegistry(tt.caps...)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("NewRegistry error = %v, want one holding %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("NewRegistry: %v", err)
			}
			if got := len(r.Descriptors()); got != len(tt.caps) {
				t.Errorf("%d descriptors, want %d", got, len(tt.caps))
			}
		})
	}
}

func TestRegistryLookupAndDescriptors(t *testing.T) {
	t.Parallel()
	b, c := fake("b.x"), fake("c")
	r, err := NewRegistry(c, fake("a"), b)
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := r.Lookup("b.x"); !ok || got != b {
		t.Errorf("Lookup(b.x) = %v, %v", got, ok)
	}
	for _, name := range []string{"b", "x", "", "B.X"} {
		if got, ok := r.Lookup(name); ok {
			t.Errorf("Lookup(%q) = %v, want nothing", name, got)
		}
	}
	var names []string
	for _, d := range r.Descriptors() {
		names = append(names, d.Name)
	}
	if want := []string{"a", "b.x", "c"}; !slices.Equal(names, want) {
		t.Errorf("descriptors %v, want %v", names, want)
	}
}

func TestBuiltinRegistry(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		cfg  Config
		want map[string]bool // name -> available
	}{
		"default": {
			cfg:  DefaultConfig(),
			want: map[string]bool{BrowserNavigateName: false, BrowserScreenshotName: false, FilesystemReadName: false, LLMChatName: false, LLMEmbedName: false, ShellExecuteName: false, SystemInfoName: true},
		},
		"zero": {
			cfg:  Config{},
			want: map[string]bool{BrowserNavigateName: false, BrowserScreenshotName: false, FilesystemReadName: false, LLMChatName: false, LLMEmbedName: false, ShellExecuteName: false, SystemInfoName: true},
		},
		"no browser": {
			cfg:  Config{Browser: BrowserConfig{Enabled: true, Executable: "/nonexistent/chromium"}},
			want: map[string]bool{FilesystemReadName: false, LLMChatName: false, LLMEmbedName: false, ShellExecuteName: false, SystemInfoName: true},
		},
		"configured": {
			cfg: Config{Shell: ShellConfig{Allow: []string{"/bin/echo"}}, Filesystem: FilesystemConfig{Roots: []string{t.TempDir()}},
				LLM: LLMConfig{BaseURL: "http://127.0.0.1:8080/v1", Models: []string{"m"}, EmbeddingModels: []string{"e"}}, Browser: BrowserConfig{Enabled: true}},
			want: map[string]bool{BrowserNavigateName: true, BrowserScreenshotName: true, FilesystemReadName: true, LLMChatName: true, LLMEmbedName: true, ShellExecuteName: true, SystemInfoName: true},
		},
		"relative entries are ignored": {
			cfg:  Config{Shell: ShellConfig{Allow: []string{"echo", "./echo"}}, Filesystem: FilesystemConfig{Roots: []string{"var"}}},
			want: map[string]bool{BrowserNavigateName: false, BrowserScreenshotName: false, FilesystemReadName: false, LLMChatName: false, LLMEmbedName: false, ShellExecuteName: false, SystemInfoName: true},
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r, err := NewRegistry(Builtin(tt.cfg, testLogger(t))...)
			if err != nil {
				t.Fatalf("NewRegistry(Builtin): %v", err)
			}
			ds := r.Descriptors()
			var names []string
			for _, d := range ds {
				names = append(names, d.Name)
				if d.Available != tt.want[d.Name] {
					t.Errorf("%s available = %v, want %v", d.Name, d.Available, tt.want[d.Name])
				}
				if d.Description == "" || d.InputSchema == nil {
					t.Errorf("%s lacks a description or a schema", d.Name)
				}
			}
			if want := []string{BrowserNavigateName, BrowserScreenshotName, FilesystemReadName, LLMChatName, LLMEmbedName, ShellExecuteName, SystemInfoName}; !slices.Equal(names, want) {
				t.Errorf("descriptors %v, want %v", names, want)
			}
		})
	}
}
