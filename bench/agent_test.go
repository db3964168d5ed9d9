package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/palyra/palyra/bench/internal/witness"
	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	"github.com/palyra/palyra/gen/go/palyra/controlplane/v1/controlplanev1connect"
)

// agent is a real node agent: `palyra node run` in a process of its own, on a state
// directory of its own, paired through `palyra node pair` and an approval. Its log
// (stderr) goes to agent.log beside the state directory; the times at which it
// attached are kept.
type agent struct {
	name     string
	deviceID string
	stateDir string
	bin      string // the palyra binary
	env      []string
	log      *os.File

	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd exited

	mu       sync.Mutex  // guards the following
	attached []time.Time // when its log said "attached to palyrad", in order
}

// waitingLine is what `palyra node pair` prints once its request waits for approval.
var waitingLine = regexp.MustCompile(`waiting for approval \(request ([0-9A-Z]{26}), key (sha256:[0-9a-f]{64})\)`)

// cliEnv is the environment of the palyra processes: this one's without PALYRA_*
// settings, with a configuration directory of their own.
func cliEnv(dir string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PALYRA_") && !strings.HasPrefix(kv, "XDG_") && !strings.HasPrefix(kv, "HOME=") {
			env = append(env, kv)
		}
	}
	return append(env, "HOME="+dir, "XDG_CONFIG_HOME="+filepath.Join(dir, "config"))
}

// pairAgent pairs a node named name with d the way an operator does: a PIN code from
// pairing (an admin's client), `palyra node pair` on the node, an approval bound to
// the key fingerprint the node prints. It then writes the node's node.toml, which
// allows shell.execute to run program only and passes witness.NodeEnv through.
func pairAgent(tb testing.TB, d *daemon, pairing controlplanev1connect.PairingServiceClient, bin, program, dir, name string) *agent {
	tb.Helper()
	ctx := context.Background()
	code, err := pairing.CreatePairingCode(ctx, connect.NewRequest(&controlplanev1.CreatePairingCodeRequest{
		Method: controlplanev1.PairingMethod_PAIRING_METHOD_PIN, Label: name,
	}))
	if err != nil {
		tb.Fatalf("create a pairing code for %s: %v", name, err)
	}
	a := &agent{name: name, stateDir: filepath.Join(dir, "state"), bin: bin, env: cliEnv(dir)}
	cmd := exec.Command(bin, "-o", "json", "node", "pair", "--url", d.baseURL, "--pin", code.Msg.GetCode(),
		"--ca-fingerprint", code.Msg.GetCaFingerprint(), "--state-dir", a.stateDir, "--name", name)
	cmd.Env = a.env
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	pipe, err := cmd.StderrPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatalf("palyra node pair: %v", err)
	}
	approved := make(chan error, 1)
	read := make(chan struct{}) // closed when stderr is read to its end
	go func() {
		defer close(read)
		sc := bufio.NewScanner(io.TeeReader(pipe, &stderr))
		sent := false
		for sc.Scan() {
			m := waitingLine.FindStringSubmatch(sc.Text())
			if m == nil || sent {
				continue
			}
			_, err := pairing.ApprovePairingRequest(ctx, connect.NewRequest(&controlplanev1.ApprovePairingRequestRequest{
				Id: m[1], ExpectedKeyFingerprint: m[2],
			}))
			approved <- err
			sent = true
		}
		if !sent {
			approved <- fmt.Errorf("palyra node pair never said it waits for approval")
		}
	}()
	timer := time.AfterFunc(2*time.Minute, func() { _ = cmd.Process.Kill() })
	err = <-approved
	<-read
	waitErr := cmd.Wait()
	timer.Stop()
	if err != nil || waitErr != nil {
		tb.Fatalf("pair %s: approve: %v; palyra node pair: %v\n%s", name, err, waitErr, stderr.String())
	}
	var res struct {
		DeviceID string `json:"device_id"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil || res.DeviceID == "" {
		tb.Fatalf("pair %s: no device id in %q (%v)", name, stdout.String(), err)
	}
	a.deviceID = res.DeviceID
	config := fmt.Sprintf("[shell]\nallow = [%q]\nenv = [%q]\n", program, witness.NodeEnv)
	if err := os.WriteFile(filepath.Join(a.stateDir, "node.toml"), []byte(config), 0o600); err != nil {
		tb.Fatal(err)
	}
	if a.log, err = os.Create(filepath.Join(dir, "agent.log")); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { a.log.Close() })
	return a
}

// start starts `palyra node run` on the node's state directory, with witness.NodeEnv
// naming the node. It returns at once: the agent attaches on its own.
func (a *agent) start(tb testing.TB) {
	tb.Helper()
	cmd := exec.Command(a.bin, "node", "run", "--state-dir", a.stateDir, "--log-level", "info")
	cmd.Env = slices.Concat(a.env, []string{witness.NodeEnv + "=" + a.name})
	pipe, err := cmd.StderrPipe()
	if err != nil {
		tb.Fatal(err)
	}
	cmd.Stdout = a.log
	if err := cmd.Start(); err != nil {
		tb.Fatalf("palyra node run (%s): %v", a.name, err)
	}
	exited := make(chan struct{})
	a.cmd, a.exited = cmd, exited
	fmt.Fprintf(a.log, "=== palyra node run, pid %d\n", cmd.Process.Pid)
	go func() {
		// Copies the log, noting each attachment, until the agent exits.
		sc := bufio.NewScanner(pipe)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if strings.Contains(line, `msg="attached to palyrad"`) {
				a.mu.Lock()
				a.attached = append(a.attached, time.Now())
				a.mu.Unlock()
			}
			fmt.Fprintln(a.log, line)
		}
		_ = cmd.Wait()
		fmt.Fprintf(a.log, "=== exited: %v\n", cmd.ProcessState)
		close(exited)
	}()
}

// kill kills the agent with SIGKILL, as a crash does, and waits until it exited. What
// it ran keeps running: shell.execute starts each program in a process group of its
// own.
func (a *agent) kill() {
	_ = a.cmd.Process.Kill()
	<-a.exited
}

// stop stops the agent as a service manager does (SIGTERM: it lets running dispatches
// finish), killing it after a minute.
func (a *agent) stop() {
	if a.cmd == nil {
		return
	}
	_ = a.cmd.Process.Signal(syscall.SIGCONT)
	stopProcess(a.cmd.Process, a.exited, syscall.SIGTERM, time.Minute)
}

// attachedAfter returns the first time the agent attached at or after t, if it did.
func (a *agent) attachedAfter(t time.Time) (time.Time, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, at := range a.attached {
		if !at.Before(t) {
			return at, true
		}
	}
	return time.Time{}, false
}

// attachCount returns how often the agent attached.
func (a *agent) attachCount() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.attached)
}
