// Package cmdtest runs palyra commands in tests as the palyra binary runs them
// (cmd.Execute: exit codes, output on stdout and stderr), with an environment of the
// test's making, and serves fakes of palyrad's services over TLS with HTTP/2.
package cmdtest

import (
	"bytes"
	"context"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/palyra/palyra/cli/internal/cmd"
	"github.com/palyra/palyra/cli/internal/cmd/deps"
	"github.com/palyra/palyra/internal/eventually"
)

// Result is what a command did.
type Result struct {
	// Code is the exit code.
	Code int
	// Stdout and Stderr are what it wrote.
	Stdout, Stderr string
}

// Now is the clock of the commands that Run runs.
var Now = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// Run runs palyra with args and the environment env (nothing else of the process's
// environment), without a terminal, and returns what it did once it has ended.
func Run(ctx context.Context, env map[string]string, args ...string) Result {
	var stdout, stderr SyncBuffer
	code := execute(ctx, env, nil, false, &stdout, &stderr, args)
	return Result{Code: code, Stdout: stdout.String(), Stderr: stderr.String()}
}

// RunTerminal runs palyra as Run does, as if a person at a terminal typed answers and
// read the output there.
func RunTerminal(ctx context.Context, env map[string]string, answers string, args ...string) Result {
	var stdout, stderr SyncBuffer
	code := execute(ctx, env, strings.NewReader(answers), true, &stdout, &stderr, args)
	return Result{Code: code, Stdout: stdout.String(), Stderr: stderr.String()}
}

// execute runs palyra as Run describes, with stdin as its standard input (nil for
// none), a terminal or not, and returns its exit code.
func execute(ctx context.Context, env map[string]string, stdin io.Reader, terminal bool, stdout, stderr io.Writer, args []string) int {
	if stdin == nil {
		stdin = bytes.NewReader(nil)
	}
	return cmd.Execute(ctx, args, &deps.Deps{
		Stdout:           stdout,
		Stderr:           stderr,
		Stdin:            stdin,
		StdinIsTerminal:  terminal,
		StdoutIsTerminal: terminal,
		Getenv:           func(k string) string { return env[k] },
		Now:              func() time.Time { return Now },
	})
}

// Running is a palyra command that runs in the background, whose output the test can
// read while it runs: to see output streamed before the end, or to press Ctrl-C
// (cancel its context) at a chosen moment.
type Running struct {
	// Stdout and Stderr are what it wrote so far.
	Stdout, Stderr SyncBuffer
	done           chan int
}

// Start runs palyra in the background as Run does, with stdin as its standard input
// (nil for none).
func Start(ctx context.Context, env map[string]string, stdin io.Reader, args ...string) *Running {
	r := &Running{done: make(chan int, 1)}
	go func() { r.done <- execute(ctx, env, stdin, false, &r.Stdout, &r.Stderr, args) }()
	return r
}

// WaitFor waits until the command has written text on stdout.
func (r *Running) WaitFor(t *testing.T, text string) {
	t.Helper()
	eventually.NoError(t, fmt.Sprintf("%q on stdout", text), func() error {
		if !strings.Contains(r.Stdout.String(), text) {
			return fmt.Errorf("stdout %q, stderr %q", r.Stdout.String(), r.Stderr.String())
		}
		return nil
	})
}

// Wait waits for the command's end and returns what it did.
func (r *Running) Wait(t *testing.T) Result {
	t.Helper()
	select {
	case code := <-r.done:
		return Result{Code: code, Stdout: r.Stdout.String(), Stderr: r.Stderr.String()}
	case <-time.After(eventually.Deadline):
		t.Fatal("the command did not end")
	}
	return Result{}
}

// WantOutput fails the test when out, the output that what names ("stdout"), lacks
// any of want.
func WantOutput(t *testing.T, what, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("%s lacks %q:\n%s", what, w, out)
		}
	}
}

// SyncBuffer is a bytes.Buffer that goroutines may share.
type SyncBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

// Write implements io.Writer.
func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what was written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Server is an httptest TLS server with HTTP/2, and the file of the certificate to
// trust it with.
type Server struct {
	// URL is the server's base URL.
	URL string
	// CAFile is a PEM file of its (self-signed) certificate.
	CAFile string
}

// NewServer serves what mount adds to a mux, over TLS with HTTP/2, until the test ends.
func NewServer(t *testing.T, mount func(mux *http.ServeMux)) *Server {
	t.Helper()
	mux := http.NewServeMux()
	mount(mux)
	srv := httptest.NewUnstartedServer(mux)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return &Server{URL: srv.URL, CAFile: caFile}
}

// Env returns an environment that points the CLI at the server with an API token, and
// has no place for profiles.
func (s *Server) Env() map[string]string {
	return map[string]string{
		"PALYRA_URL":     s.URL,
		"PALYRA_CA_FILE": s.CAFile,
		"PALYRA_TOKEN":   "plr_01JD5ZJ8Q0W1X2Y3Z4A5B6C7D8_test",
	}
}

// Expect runs palyra with env as Run does and expects exit code want.
func Expect(t *testing.T, env map[string]string, want int, args ...string) Result {
	t.Helper()
	res := Run(t.Context(), env, args...)
	if res.Code != want {
		t.Fatalf("palyra %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), res.Code, want, res.Stdout, res.Stderr)
	}
	return res
}

// WantRow checks that a line of out has fields, in order, as its first fields.
func WantRow(t *testing.T, what, out string, fields ...string) {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		got := strings.Fields(line)
		if len(got) >= len(fields) && slices.Equal(got[:len(fields)], fields) {
			return
		}
	}
	t.Errorf("%s has no row %q:\n%s", what, strings.Join(fields, " "), out)
}
