package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/palyra/palyra/internal/eventually"
	"github.com/palyra/palyra/internal/termtest"
	"github.com/palyra/palyra/server/internal/store/storetest"
)

// TestCLIEscapesNodeLabels attaches a real node agent whose label holds a terminal
// escape sequence (clear the screen, go up a line, overwrite it), a C1 control and a
// bidi override, through a real palyrad, and checks what `palyra nodes show` and
// `palyra nodes list` print, as a table and as JSON: nothing a terminal would act on.
func TestCLIEscapesNodeLabels(t *testing.T) {
	t.Parallel()
	const hostile = "\x1b[2J\x1b[1A\rall good\u009b31m\x7f\u202etxt.exe"
	dir := t.TempDir()
	d := startDaemon(t, nil, "--listen", "127.0.0.1:0", "--data-dir", dir, "--database-url", storetest.URL(t))
	admin := newCLIUser(t).with("PALYRA_TOKEN", bootstrapToken(t, dir), "PALYRA_URL", "https://"+d.addr,
		"PALYRA_CA_FILE", filepath.Join(dir, "ca.pem"))
	node := startNodeAgent(t, admin, "https://"+d.addr, caFingerprint(t, dir), t.TempDir())
	node.stop(t)
	node.args = append(node.args, "--label", "note="+hostile)
	node = restartNodeAgent(t, node)
	id := node.deviceID

	eventually.True(t, "the label reported", func() bool {
		return strings.Contains(admin.ok(t, "nodes", "show", id, "-o", "json"), "txt.exe")
	})
	for _, args := range [][]string{
		{"nodes", "show", id},
		{"nodes", "show", id, "-o", "json"},
		{"nodes", "list"},
		{"nodes", "list", "-o", "json"},
	} {
		out := admin.ok(t, args...)
		termtest.AssertSafe(t, strings.Join(args, " "), out)
		if args[1] == "show" && len(args) == 3 && !strings.Contains(out, `note=\x1b[2J\x1b[1A all good\u009b31m\x7f\u202etxt.exe`) {
			t.Errorf("palyra nodes show: the label is not shown escaped:\n%s", out)
		}
	}
	node.stop(t)
}
