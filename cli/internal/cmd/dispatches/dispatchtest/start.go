package dispatchtest

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/palyra/palyra/cli/internal/cmd"
	"github.com/palyra/palyra/cli/internal/cmd/cmdtest"
	"github.com/palyra/palyra/cli/internal/cmd/deps"
)

// Running is a palyra command that runs in the background, whose output the test can
// read while it runs: to see output streamed before the end, or to press Ctrl-C
// (cancel its context) at a chosen moment.
type Running struct {
	// Stdout and Stderr are what it wrote so far.
	Stdout, Stderr cmdtest.SyncBuffer
	done           chan int
}

// Start runs palyra in the background as cmdtest.Run does, with stdin as its standard
// input (nil for none).
func Start(ctx context.Context, env map[string]string, stdin io.Reader, args ...string) *Running {
	if stdin == nil {
		stdin = strings.NewReader("")
	}
	r := &Running{done: make(chan int, 1)}
	go func() {
		r.done <- cmd.Execute(ctx, args, &deps.Deps{
			Stdout: &r.Stdout, Stderr: &r.Stderr, Stdin: stdin,
			Getenv: func(k string) string { return env[k] },
			Now:    func() time.Time { return cmdtest.Now },
		})
	}()
	return r
}

// WaitFor waits until the command has written text on stdout.
func (r *Running) WaitFor(t *testing.T, text string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(r.Stdout.String(), text) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q on stdout after 10s; stdout %q, stderr %q", text, r.Stdout.String(), r.Stderr.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Wait waits for the command's end and returns what it did.
func (r *Running) Wait(t *testing.T) cmdtest.Result {
	t.Helper()
	select {
	case code := <-r.done:
		return cmdtest.Result{Code: code, Stdout: r.Stdout.String(), Stderr: r.Stderr.String()}
	case <-time.After(30 * time.Second):
		t.Fatal("the command did not end")
	}
	return cmdtest.Result{}
}
