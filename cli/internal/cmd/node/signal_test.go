//go:build unix

package node_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/palyra/palyra/cli/internal/cmd/cmdtest"
)

// TestNodeRunSignals runs the palyra binary's node run and stops it with SIGTERM (as
// systemd does) and with SIGINT (Ctrl-C): each must end the agent cleanly, exit 0.
func TestNodeRunSignals(t *testing.T) {
	bin := os.Getenv("PALYRA") // make test sets it to the bin/palyra it has just built
	if bin == "" && testing.Short() {
		t.Skip("builds the palyra binary")
	}
	t.Parallel()
	if bin == "" {
		bin = filepath.Join(t.TempDir(), "palyra")
		if out, err := exec.CommandContext(t.Context(), "go", "build", "-o", bin, "github.com/palyra/palyra/cli").CombinedOutput(); err != nil {
			t.Fatalf("go build: %v\n%s", err, out)
		}
	}
	b := newBench(t, "approve")
	if res := b.run(t.Context(), t, b.pairArgs()...); res.Code != 0 {
		t.Fatalf("pair: exit %d:\n%s", res.Code, res.Stderr)
	}
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		cmd := exec.Command(bin, "node", "run", "--state-dir", b.dir)
		cmd.Env = []string{"HOME=" + t.TempDir()}
		var stderr cmdtest.SyncBuffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		select {
		case <-b.fake.hellos:
		case <-time.After(wait):
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("%v: the node did not attach:\n%s", sig, stderr.String())
		}
		if err := cmd.Process.Signal(sig); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil || !strings.Contains(stderr.String(), "node agent stopped") {
				t.Errorf("%v: %v (want exit 0), stderr:\n%s", sig, err, stderr.String())
			}
		case <-time.After(wait):
			cmd.Process.Kill()
			t.Fatalf("%v: node run did not stop:\n%s", sig, stderr.String())
		}
	}
}
