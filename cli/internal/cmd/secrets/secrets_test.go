package secrets_test

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"testing"
	"testing/iotest"

	"connectrpc.com/connect"

	"github.com/palyra/palyra/cli/internal/cmd/cmdtest"
	"github.com/palyra/palyra/cli/internal/cmd/secrets"
	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	"github.com/palyra/palyra/gen/go/palyra/controlplane/v1/controlplanev1connect"
	"github.com/palyra/palyra/internal/cliusage"
	"github.com/palyra/palyra/internal/termtest"
)

// TestSecretNameArgument checks the NAME argument of every secrets command.
func TestSecretNameArgument(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{"openai", "A", "db.prod-2_key", strings.Repeat("a", 128)} {
		if got, err := secrets.ParseName(ok); err != nil || got != ok {
			t.Errorf("ParseName(%q) = %q, %v", ok, got, err)
		}
	}
	for _, bad := range []string{"", "a/b", "a b", "a\x1bb", ".a", "-a", "é", strings.Repeat("a", 129)} {
		if _, err := secrets.ParseName(bad); !cliusage.Is(err) {
			t.Errorf("ParseName(%q) = %v, want a usage error", bad, err)
		}
	}
}

// TestReadValue checks where set reads a value from and what it refuses.
func TestReadValue(t *testing.T) {
	t.Parallel()
	if v, err := secrets.ReadValue(strings.NewReader("sk-test"), false, ""); err != nil || string(v) != "sk-test" {
		t.Errorf("from a pipe: %q, %v", v, err)
	}
	if v, err := secrets.ReadValue(strings.NewReader("sk-test"), false, "-"); err != nil || string(v) != "sk-test" {
		t.Errorf("from -: %q, %v", v, err)
	}
	if _, err := secrets.ReadValue(strings.NewReader("typed"), true, ""); !cliusage.Is(err) || !strings.Contains(err.Error(), "never from the command line") {
		t.Errorf("from a terminal: %v, want a usage error", err)
	}
	if _, err := secrets.ReadValue(strings.NewReader(""), false, ""); err == nil {
		t.Error("an empty value was taken")
	}
	if _, err := secrets.ReadValue(bytes.NewReader(make([]byte, secrets.MaxValueBytes+1)), false, ""); err == nil || !strings.Contains(err.Error(), "64 KiB") {
		t.Errorf("65537 bytes: %v", err)
	}
	if _, err := secrets.ReadValue(iotest.ErrReader(context.Canceled), false, ""); err == nil {
		t.Error("a failed read was taken")
	}
	if _, err := secrets.ReadValue(nil, false, "/nonexistent/value"); err == nil || !strings.Contains(err.Error(), "--from-file") {
		t.Errorf("a missing file: %v", err)
	}
}

// revealer answers every reveal with one value.
type revealer struct {
	controlplanev1connect.UnimplementedSecretServiceHandler
	value string
}

func (r revealer) RevealSecret(_ context.Context, req *connect.Request[controlplanev1.RevealSecretRequest]) (*connect.Response[controlplanev1.RevealSecretResponse], error) {
	return connect.NewResponse(&controlplanev1.RevealSecretResponse{Name: req.Msg.GetName(), Version: 3, Value: []byte(r.value)}), nil
}

// TestRevealOnATerminal checks that reveal refuses to write control characters to a
// terminal unless --raw is given, and ends a value with a line feed there.
func TestRevealOnATerminal(t *testing.T) {
	t.Parallel()
	serve := func(value string) map[string]string {
		srv := cmdtest.NewServer(t, func(mux *http.ServeMux) {
			mux.Handle(controlplanev1connect.NewSecretServiceHandler(revealer{value: value}))
		})
		return srv.Env()
	}
	plain, control := serve("sk-test"), serve("x\x1b]52;c;aGk=\x07y")
	args := []string{"secrets", "reveal", "openai", "--reason", "test"}

	if r := cmdtest.RunTerminal(t.Context(), plain, "", args...); r.Code != 0 || r.Stdout != "sk-test\n" {
		t.Errorf("plain value on a terminal: %d %q %q", r.Code, r.Stdout, r.Stderr)
	}
	if r := cmdtest.Run(t.Context(), plain, args...); r.Code != 0 || r.Stdout != "sk-test" {
		t.Errorf("plain value to a pipe: %d %q %q", r.Code, r.Stdout, r.Stderr)
	}
	r := cmdtest.RunTerminal(t.Context(), control, "", args...)
	if r.Code != 1 || r.Stdout != "" || !strings.Contains(r.Stderr, "--raw") {
		t.Errorf("control characters on a terminal: %d %q %q", r.Code, r.Stdout, r.Stderr)
	}
	termtest.AssertSafe(t, "the refusal", r.Stdout+r.Stderr)
	if r := cmdtest.RunTerminal(t.Context(), control, "", append(args, "--raw")...); r.Code != 0 || r.Stdout != "x\x1b]52;c;aGk=\x07y\n" {
		t.Errorf("--raw on a terminal: %d %q %q", r.Code, r.Stdout, r.Stderr)
	}
	if r := cmdtest.Run(t.Context(), control, args...); r.Code != 0 || r.Stdout != "x\x1b]52;c;aGk=\x07y" {
		t.Errorf("control characters to a pipe: %d %q %q", r.Code, r.Stdout, r.Stderr)
	}
	if r := cmdtest.RunTerminal(t.Context(), control, "", append(args, "-o", "json")...); r.Code != 0 || !strings.Contains(r.Stdout, `"value": "eBtdNTI7YzthR2s9B3k="`) {
		t.Errorf("-o json on a terminal: %d %q %q", r.Code, r.Stdout, r.Stderr)
	}
}
