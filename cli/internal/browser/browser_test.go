package browser

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestOpener(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// A stand-in xdg-open that records the URL it was given.
	script := filepath.Join(dir, "xdg-open")
	got := filepath.Join(dir, "opened")
	if err := os.WriteFile(script, []byte("#!/bin/sh\nprintf '%s' \"$1\" > "+got+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	found := func(string) (string, error) { return script, nil }
	missing := func(string) (string, error) { return "", errors.New("not found") }
	env := func(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }

	if Opener(env(nil), found) != nil {
		t.Error("an opener without a graphical session (no DISPLAY, no WAYLAND_DISPLAY)")
	}
	if Opener(env(map[string]string{"DISPLAY": ":0"}), missing) != nil {
		t.Error("an opener without xdg-open")
	}
	open := Opener(env(map[string]string{"WAYLAND_DISPLAY": "wayland-0"}), found)
	if open == nil {
		t.Fatal("no opener with xdg-open and a graphical session")
	}
	const url = "https://127.0.0.1:7443/handoff#code=x"
	if err := open(t.Context(), url); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(got); err != nil || string(b) != url {
		t.Errorf("xdg-open got %q (%v), want %q", b, err, url)
	}
}
