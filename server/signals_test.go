package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	"github.com/palyra/palyra/internal/eventually"
	"github.com/palyra/palyra/server/internal/store/storetest"
)

// TestDaemonStopsOnSignals runs the palyrad binary on its embedded database and
// stops it three ways: one signal (a graceful stop), a second signal during a stop
// that cannot finish (the database is stalled with SIGSTOP), and a stop that cannot
// finish left alone (it ends at its bound).
func TestDaemonStopsOnSignals(t *testing.T) {
	t.Parallel()
	start := func(t *testing.T, args ...string) (*process, string) {
		t.Helper()
		dataDir := storetest.EmbeddedDataDir(t)
		return startDaemonProcess(t, append([]string{"--listen", "127.0.0.1:0", "--data-dir", dataDir}, args...)...), dataDir
	}

	t.Run("one signal stops gracefully", func(t *testing.T) {
		t.Parallel()
		d, dataDir := start(t)
		d.stop(t) // SIGTERM, and exit status 0
		if log := d.stderr.String(); !strings.Contains(log, "palyrad stopped") || strings.Contains(log, "stopped hard") {
			t.Errorf("the log does not end with a graceful stop:\n%s", log)
		}
		if _, err := os.Stat(filepath.Join(dataDir, "pg", "data", "postmaster.pid")); !os.IsNotExist(err) {
			t.Errorf("the embedded PostgreSQL still runs after the stop (postmaster.pid: %v)", err)
		}
	})

	t.Run("a second signal stops at once", func(t *testing.T) {
		t.Parallel()
		// The bound is minutes away: only the second signal can end this stop.
		d, dataDir := start(t, "--server-shutdown-timeout", "10m")
		stallPostgres(t, dataDir)
		sendSignal(t, d, syscall.SIGTERM)
		eventually.True(t, "palyrad logs that it is stopping", func() bool { return strings.Contains(d.stderr.String(), "palyrad stopping") })
		sendSignal(t, d, syscall.SIGINT)
		code := exitCode(t, d, 2*time.Minute)
		if log := d.stderr.String(); code != 1 || !strings.Contains(log, "palyrad: interrupt again: stopping at once") {
			t.Errorf("after a second signal: exit status %d, want 1 and the reason on stderr:\n%s", code, log)
		}
	})

	t.Run("a stop that cannot finish ends at its bound", func(t *testing.T) {
		t.Parallel()
		d, dataDir := start(t, "--server-shutdown-timeout", "1s")
		stallPostgres(t, dataDir)
		sendSignal(t, d, syscall.SIGTERM)
		code := exitCode(t, d, 2*time.Minute)
		log := d.stderr.String()
		if code != 1 || !strings.Contains(log, "palyrad stopped hard") {
			t.Fatalf("a stop that cannot finish: exit status %d, want 1 and a hard stop in the log:\n%s", code, log)
		}
		// The database stalls the first step that needs it; that step and every one
		// after it are named as abandoned.
		for _, step := range []string{"record the end of the node sessions", "stop the background work", "stop the embedded PostgreSQL"} {
			if !strings.Contains(log, step) {
				t.Errorf("the log does not name %q as abandoned:\n%s", step, log)
			}
		}
	})
}

// TestNodeAgentStopsOnSignals runs `palyra node run` with a dispatch that runs for
// minutes: the first signal starts the drain, which lets it run; a second one stops
// the agent at once.
func TestNodeAgentStopsOnSignals(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	d := startDaemon(t, nil, "--listen", "127.0.0.1:0", "--data-dir", dir, "--database-url", storetest.URL(t))
	admin := newCLIUser(t).with("PALYRA_TOKEN", bootstrapToken(t, dir), "PALYRA_URL", "https://"+d.addr,
		"PALYRA_CA_FILE", filepath.Join(dir, "ca.pem"))
	stateDir := t.TempDir()
	writeNodeConfig(t, stateDir, []string{"sleep"}, "")
	node := startNodeAgent(t, admin, "https://"+d.addr, caFingerprint(t, dir), stateDir)

	api := newDispatchClient(t, d.addr, dir)
	res, err := api.CreateDispatch(t.Context(), connect.NewRequest(&controlplanev1.CreateDispatchRequest{
		NodeId: node.deviceID, Capability: "shell.execute", InputJson: `{"argv":["sleep","50"]}`,
		Timeout: durationpb.New(2 * time.Minute),
	}))
	if err != nil {
		t.Fatal(err)
	}
	eventually.True(t, "the dispatch runs", func() bool {
		got, err := api.GetDispatch(t.Context(), connect.NewRequest(&controlplanev1.GetDispatchRequest{Id: res.Msg.GetDispatch().GetId()}))
		return err == nil && got.Msg.GetDispatch().GetState() == controlplanev1.DispatchState_DISPATCH_STATE_RUNNING
	})

	sendSignal(t, node.process, syscall.SIGTERM)
	eventually.True(t, "the agent starts draining", func() bool {
		return strings.Contains(node.stderr.String(), "stopping: letting running dispatches finish")
	})
	select {
	case <-node.done:
		t.Fatalf("the agent exited on the first signal instead of draining:\n%s", node.stderr)
	default:
	}
	sendSignal(t, node.process, syscall.SIGINT)
	code := exitCode(t, node.process, 2*time.Minute)
	if log := node.stderr.String(); code != 130 || !strings.Contains(log, "palyra: interrupt again: stopping at once") {
		t.Errorf("after a second signal: exit status %d, want 130 and the reason on stderr:\n%s", code, log)
	}
}

// stallPostgres stops (SIGSTOP) the embedded PostgreSQL of dataDir, the postmaster and
// every backend, so that each statement waits. When the test ends they continue and
// the postmaster is asked for an immediate shutdown.
func stallPostgres(t *testing.T, dataDir string) {
	t.Helper()
	pidFile, err := os.ReadFile(filepath.Join(dataDir, "pg", "data", "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	postmaster, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(pidFile), "\n", 2)[0]))
	if err != nil {
		t.Fatalf("postmaster.pid: %v", err)
	}
	// The postmaster first: stopped, it forks no backend that the list below would miss.
	if err := syscall.Kill(postmaster, syscall.SIGSTOP); err != nil {
		t.Fatalf("SIGSTOP %d: %v", postmaster, err)
	}
	pids := append([]int{postmaster}, children(t, postmaster)...)
	for _, pid := range pids[1:] {
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			t.Fatalf("SIGSTOP %d: %v", pid, err)
		}
	}
	t.Cleanup(func() {
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGCONT)
		}
		_ = syscall.Kill(postmaster, syscall.SIGQUIT)
		eventually.Within(time.Minute).True(t, "the thawed PostgreSQL exits on SIGQUIT", func() bool { return syscall.Kill(postmaster, 0) != nil })
	})
}

// children returns the processes whose parent is pid, from /proc.
func children(t *testing.T, pid int) []int {
	t.Helper()
	stats, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, path := range stats {
		b, err := os.ReadFile(path)
		if err != nil {
			continue // it exited meanwhile
		}
		// pid (comm) state ppid ...: comm may hold spaces and parentheses.
		fields := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(fields) < 2 || fields[1] != strconv.Itoa(pid) {
			continue
		}
		child, err := strconv.Atoi(filepath.Base(filepath.Dir(path)))
		if err == nil {
			out = append(out, child)
		}
	}
	return out
}

// sendSignal sends sig to p.
func sendSignal(t *testing.T, p *process, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %s: %v", p.name, err)
	}
}

// exitCode waits until p exits and returns its exit status, failing after within.
func exitCode(t *testing.T, p *process, within time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(within):
		t.Fatalf("%s did not exit within %v:\n%s", p.name, within, p.stderr)
		return -1
	}
}
