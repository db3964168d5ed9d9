package cmd_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/palyra/palyra/cli/internal/cmd"
	"github.com/palyra/palyra/cli/internal/cmd/cmdtest"
)

// TestExitCodes checks the exit codes: success, a usage mistake, a failure, and a
// command interrupted by the user.
func TestExitCodes(t *testing.T) {
	t.Parallel()
	srv := cmdtest.NewServer(t, func(*http.ServeMux) {}) // answers every call with 404
	interrupted, cancel := context.WithCancel(t.Context())
	cancel()
	tests := map[string]struct {
		ctx     context.Context
		args    []string
		code    int
		message string
	}{
		"success":          {ctx: t.Context(), args: []string{"version"}, code: cmd.ExitOK},
		"unknown command":  {ctx: t.Context(), args: []string{"pairs"}, code: cmd.ExitUsage, message: "palyra --help"},
		"unknown flag":     {ctx: t.Context(), args: []string{"pairing", "codes", "list", "--bogus"}, code: cmd.ExitUsage, message: "unknown flag"},
		"failed call":      {ctx: t.Context(), args: []string{"pairing", "codes", "list"}, code: cmd.ExitFailure, message: "palyra: "},
		"interrupted call": {ctx: interrupted, args: []string{"pairing", "codes", "list"}, code: cmd.ExitInterrupted, message: "palyra: interrupted\n"},
	}
	for name, tt := range tests {
		res := cmdtest.Run(tt.ctx, srv.Env(), tt.args...)
		if res.Code != tt.code || !strings.Contains(res.Stderr, tt.message) {
			t.Errorf("%s: exit %d, stderr %q; want %d with %q", name, res.Code, res.Stderr, tt.code, tt.message)
		}
	}
}
