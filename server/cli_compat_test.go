package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/palyra/palyra/internal/eventually"
	"github.com/palyra/palyra/internal/termtest"
)

// slowUpstream is an OpenAI-compatible provider on loopback whose streams send "first",
// then wait until release is closed (or the request ends) to send " second".
func slowUpstream(t *testing.T) (url string, release chan struct{}) {
	release = make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		rc := http.NewResponseController(w)
		send := func(content string) {
			b, _ := json.Marshal(map[string]any{"id": "chatcmpl-slow", "object": "chat.completion.chunk", "created": 1700000000, "model": "slow",
				"choices": []any{map[string]any{"index": 0, "delta": map[string]any{"content": content}, "finish_reason": nil}}})
			fmt.Fprintf(w, "data: %s\n\n", b)
			_ = rc.Flush()
		}
		send("first")
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		send(" second")
		fmt.Fprint(w, "data: [DONE]\n\n")
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/v1", release
}

// TestCLICompat runs `palyra compat models` and `palyra compat chat` against a real
// palyrad serving palyra-echo and an upstream: tables and JSON, the answer streamed to
// the terminal as it arrives (the first words are out while the upstream still waits),
// --no-stream, --system, control characters in the answer escaped, and the errors.
func TestCLICompat(t *testing.T) {
	t.Parallel()
	d := startCLIDaemon(t, "--compat-model", "palyra-echo")
	u := newCLIUser(t)
	u.login(t, d, "owner")
	upstream, release := slowUpstream(t)
	u.ok(t, "config", "set", "compat.providers.slow.base_url", upstream)
	u.ok(t, "config", "set", "compat.providers.slow.models", "slow-model")

	stderr := u.fails(t, 1, "compat", "models")
	if !strings.Contains(stderr, "compat_api") {
		t.Errorf("models with compat_api off: %q does not name the flag", stderr)
	}
	u.ok(t, "flags", "set", "compat_api", "on")
	out := u.ok(t, "compat", "models")
	for _, want := range []string{"ID", "OWNED BY", "palyra-echo", "palyra", "slow-model", "slow"} {
		if !strings.Contains(out, want) {
			t.Errorf("models table lacks %q:\n%s", want, out)
		}
	}
	var list struct {
		Models []struct {
			ID      string `json:"id"`
			OwnedBy string `json:"ownedBy"`
		} `json:"models"`
	}
	if err := json.Unmarshal([]byte(u.ok(t, "compat", "models", "-o", "json")), &list); err != nil || len(list.Models) != 2 ||
		list.Models[0].ID != "palyra-echo" || list.Models[1].OwnedBy != "slow" {
		t.Errorf("models -o json: %+v, %v", list, err)
	}

	if out := u.ok(t, "compat", "chat", "--no-stream", "palyra-echo", "hello  there"); out != "hello  there\n" {
		t.Errorf("chat --no-stream: %q", out)
	}
	stderr = u.fails(t, 1, "compat", "chat", "palyra-echo", "hello")
	if !strings.Contains(stderr, "compat_streaming") {
		t.Errorf("a stream with compat_streaming off: %q does not name the flag", stderr)
	}
	u.ok(t, "flags", "set", "compat_streaming", "on")
	if out := u.ok(t, "compat", "chat", "--system", "be brief", "palyra-echo", "one two three"); out != "one two three\n" {
		t.Errorf("chat: %q", out)
	}
	out = u.ok(t, "compat", "chat", "palyra-echo", "red \x1b[31malert\x1b[0m \u202eevil")
	termtest.AssertSafe(t, "chat with control characters", out)
	if !strings.Contains(out, `\x1b[31malert`) {
		t.Errorf("chat with control characters: %q", out)
	}
	out = u.ok(t, "compat", "chat", "--no-stream", "palyra-echo", "bell \a")
	termtest.AssertSafe(t, "chat --no-stream with control characters", out)
	var chunks int
	for dec := json.NewDecoder(strings.NewReader(u.ok(t, "compat", "chat", "-o", "json", "palyra-echo", "a b"))); dec.More(); chunks++ {
		var c map[string]any
		if err := dec.Decode(&c); err != nil || c["chunk"] == nil {
			t.Fatalf("chat -o json: %v, %v", c, err)
		}
	}
	if chunks != 4 { // the role, "a", " b", the finish
		t.Errorf("chat -o json printed %d chunks, want 4", chunks)
	}

	// The answer reaches the terminal as it arrives.
	var env []string
	for k, v := range u.env {
		env = append(env, k+"="+v)
	}
	cmd := exec.CommandContext(t.Context(), cliBinary(t), "compat", "chat", "slow-model", "go")
	cmd.Env = env
	stdout, errOut := newSyncBuffer(), newSyncBuffer()
	cmd.Stdout, cmd.Stderr = stdout, errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	eventually.NoError(t, "the first words on stdout", func() error {
		if stdout.String() != "first" {
			return fmt.Errorf("stdout %q, stderr %q", stdout.String(), errOut.String())
		}
		return nil
	})
	close(release)
	select {
	case err := <-done:
		if err != nil || stdout.String() != "first second\n" {
			t.Errorf("chat slow-model: %q, %v, stderr %q", stdout.String(), err, errOut.String())
		}
	case <-time.After(eventually.Deadline):
		t.Fatal("palyra compat chat did not end")
	}

	// Errors.
	stderr = u.fails(t, 1, "compat", "chat", "gpt-5", "hello")
	if !strings.Contains(stderr, "gpt-5") || !strings.Contains(stderr, "does not exist") {
		t.Errorf("an unknown model: %q", stderr)
	}
	for _, args := range [][]string{{"palyra-echo"}, {"palyra-echo", " "}, {"", "hello"}, {"palyra-echo", "a", "b"}} {
		if code, _, stderr := u.run(t, "", append([]string{"compat", "chat"}, args...)...); code != 2 {
			t.Errorf("compat chat %q: exit code %d, want 2 (usage); %s", args, code, stderr)
		}
	}
}
