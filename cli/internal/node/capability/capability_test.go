package capability

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
)

// recorder is an Output that keeps what it receives.
type recorder struct {
	mu     sync.Mutex // guards the following
	stdout bytes.Buffer
	stderr bytes.Buffer
	writes int
	notify chan struct{} // receives (without blocking) after each write
}

func newRecorder() *recorder { return &recorder{notify: make(chan struct{}, 1)} }

func (r *recorder) Write(stream Stream, p []byte) {
	r.mu.Lock()
	switch stream {
	case Stdout:
		r.stdout.Write(p)
	case Stderr:
		r.stderr.Write(p)
	default:
		panic("unknown stream")
	}
	r.writes++
	r.mu.Unlock()
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

func (r *recorder) Stdout() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stdout.String()
}

func (r *recorder) Stderr() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stderr.String()
}

func (r *recorder) Writes() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.writes
}

// waitStdout waits until stdout holds want, failing t if ctx ends first.
func (r *recorder) waitStdout(ctx context.Context, t *testing.T, want string) {
	t.Helper()
	for !strings.Contains(r.Stdout(), want) {
		select {
		case <-r.notify:
		case <-ctx.Done():
			t.Fatalf("stdout %q never held %q", r.Stdout(), want)
		}
	}
}

// testLogger logs to the test's output.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// wantRefused fails t unless err is a *RefusedError whose reason holds every part.
func wantRefused(t *testing.T, err error, parts ...string) {
	t.Helper()
	var refused *RefusedError
	if !errors.As(err, &refused) {
		t.Fatalf("error = %v (%T), want a *RefusedError", err, err)
	}
	for _, p := range parts {
		if !strings.Contains(refused.Reason, p) {
			t.Errorf("reason %q does not hold %q", refused.Reason, p)
		}
	}
}

// wantOutcome fails t unless a run was refused with every part of want and wrote
// nothing or, with want nil, ran and succeeded; it reports whether it ran.
func wantOutcome(t *testing.T, res Result, out *recorder, err error, want []string) (ran bool) {
	t.Helper()
	if want != nil {
		wantRefused(t, err, want...)
		if out.Writes() != 0 {
			t.Errorf("something ran: %q %q", out.Stdout(), out.Stderr())
		}
		return false
	}
	if err != nil || res.Failed {
		t.Fatalf("Run = %+v, %v; want it allowed (stderr %q)", res, err, out.Stderr())
	}
	return true
}

func TestDecodeInput(t *testing.T) {
	t.Parallel()
	type in struct {
		A string `json:"a"`
	}
	tests := map[string]struct {
		input   string
		want    in
		refused bool
	}{
		"object":           {input: `{"a":"x"}`, want: in{A: "x"}},
		"spaces":           {input: " \n{\"a\":\"x\"} \n", want: in{A: "x"}},
		"empty input":      {input: ``},
		"null":             {input: `null`},
		"empty object":     {input: `{}`},
		"unknown field":    {input: `{"a":"x","b":1}`, refused: true},
		"malformed":        {input: `{"a":`, refused: true},
		"array":            {input: `["a"]`, refused: true},
		"string":           {input: `"a"`, refused: true},
		"wrong type":       {input: `{"a":1}`, refused: true},
		"two objects":      {input: `{} {}`, refused: true},
		"trailing garbage": {input: `{}x`, refused: true},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var got in
			err := decodeInput("test.cap", json.RawMessage(tt.input), &got)
			if tt.refused {
				wantRefused(t, err, "test.cap")
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("decodeInput = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

// TestSchemasMatchInputs checks that each built-in capability's schema is a JSON
// object that names exactly the JSON fields of its input type, and requires fields the
// type cannot do without.
func TestSchemasMatchInputs(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		cap      Capability
		input    any
		required []string
	}{
		SystemInfoName:     {cap: newSystemInfo(procFS(), func() (string, error) { return "h", nil }), input: struct{}{}},
		ShellExecuteName:   {cap: newShell(ShellConfig{}, nil, slog.New(slog.DiscardHandler), nil), input: ShellInput{}, required: []string{"argv"}},
		FilesystemReadName: {cap: newFileReader(FilesystemConfig{}, slog.New(slog.DiscardHandler)), input: FileReadInput{}, required: []string{"path"}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			d := tt.cap.Describe()
			if d.Name != name {
				t.Fatalf("name = %q, want %q", d.Name, name)
			}
			var schema struct {
				Schema     string                     `json:"$schema"`
				Type       string                     `json:"type"`
				Properties map[string]json.RawMessage `json:"properties"`
				Required   []string                   `json:"required"`
				Additional *bool                      `json:"additionalProperties"`
			}
			if err := json.Unmarshal(d.InputSchema, &schema); err != nil {
				t.Fatalf("schema: %v", err)
			}
			if schema.Schema != "https://json-schema.org/draft/2020-12/schema" || schema.Type != "object" ||
				schema.Additional == nil || *schema.Additional {
				t.Errorf("schema = %s, want a draft 2020-12 object without additional properties", d.InputSchema)
			}
			var fields []string
			typ := reflect.TypeOf(tt.input)
			for i := range typ.NumField() {
				tag, _, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ",")
				fields = append(fields, tag)
			}
			var props []string
			for p := range schema.Properties {
				props = append(props, p)
			}
			slices.Sort(fields)
			slices.Sort(props)
			if !slices.Equal(fields, props) {
				t.Errorf("schema properties %v, input fields %v", props, fields)
			}
			if !slices.Equal(schema.Required, tt.required) {
				t.Errorf("required = %v, want %v", schema.Required, tt.required)
			}
		})
	}
}
