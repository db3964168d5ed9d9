package main

// The output of a dispatch as it survives crashes: a real `palyra node run` killed
// (SIGKILL) after it finished its dispatches but before palyrad stored their output;
// and, when the output is gone anyway, the dispatch that says so.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"

	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	"github.com/palyra/palyra/gen/go/palyra/controlplane/v1/controlplanev1connect"
	nodev1 "github.com/palyra/palyra/gen/go/palyra/node/v1"
	"github.com/palyra/palyra/internal/eventually"
	"github.com/palyra/palyra/server/internal/store/storetest"
)

// crashBench is a palyrad process and a `palyra node run` process, either of which a
// test kills and restarts, and dispatches of a script that writes output before and
// after it waits for the test to open its gate.
type crashBench struct {
	args     []string // palyrad's
	daemon   *process
	admin    *cliUser
	node     *nodeAgent
	stateDir string
	script   string
	gate     string // the script's dispatches finish once this file exists
	api      controlplanev1connect.DispatchServiceClient
}

func newCrashBench(t *testing.T) *crashBench {
	t.Helper()
	dbURL := storetest.URL(t)
	dataDir := t.TempDir()
	listen := "127.0.0.1:" + strconv.Itoa(freePort(t))
	c := &crashBench{args: []string{"--listen", listen, "--data-dir", dataDir, "--database-url", dbURL, "--nodes-heartbeat-interval", "1s"}}
	c.daemon = startDaemonProcess(t, c.args...)
	c.admin = newCLIUser(t).with("PALYRA_TOKEN", bootstrapToken(t, dataDir), "PALYRA_URL", "https://"+listen,
		"PALYRA_CA_FILE", filepath.Join(dataDir, "ca.pem"))
	scripts := t.TempDir()
	c.script, c.gate = filepath.Join(scripts, "work"), filepath.Join(scripts, "gate")
	if err := os.WriteFile(c.script, []byte("#!/bin/sh\necho \"start $1\"\nwhile [ ! -e \"$2\" ]; do sleep 0.05; done\necho \"done $1\" >&2\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	c.stateDir = t.TempDir()
	writeNodeConfig(t, c.stateDir, []string{c.script}, "")
	c.node = startNodeAgent(t, c.admin, "https://"+listen, caFingerprint(t, dataDir), c.stateDir)
	c.api = newDispatchClient(t, listen, dataDir)
	return c
}

// create creates a dispatch of the script; it prints "start <tag>", waits for the gate,
// then prints "done <tag>" on stderr.
func (c *crashBench) create(t *testing.T, tag string) string {
	t.Helper()
	input, _ := json.Marshal(map[string]any{"argv": []string{c.script, tag, c.gate}})
	res, err := c.api.CreateDispatch(t.Context(), connect.NewRequest(&controlplanev1.CreateDispatchRequest{
		NodeId: c.node.deviceID, Capability: "shell.execute", InputJson: string(input),
		Timeout: durationpb.New(3 * time.Minute), IdempotencyKey: "crash-" + tag,
	}))
	if err != nil {
		t.Fatalf("create dispatch %s: %v", tag, err)
	}
	return res.Msg.GetDispatch().GetId()
}

// finishWhileTheDaemonIsDown creates n dispatches, waits until the node runs them all,
// kills palyrad, opens the gate, waits until the node has finished them (their results
// spooled), and kills the node: what palyrad had not stored of their output when it died exists only
// on the node. It returns the dispatch ids by tag.
func (c *crashBench) finishWhileTheDaemonIsDown(t *testing.T, n int) map[string]string {
	t.Helper()
	ids := map[string]string{}
	for i := range n {
		tag := "d" + strconv.Itoa(i)
		ids[tag] = c.create(t, tag)
	}
	eventually.NoError(t, fmt.Sprintf("%d dispatches running", n), func() error {
		if states := dispatchStates(t, c.api, c.node.deviceID); states["running"] != n {
			return fmt.Errorf("the dispatches are %v", states)
		}
		return nil
	})
	c.daemon.kill(t)
	if err := os.WriteFile(c.gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	ranLog := filepath.Join(c.stateDir, "ran.log")
	eventually.NoError(t, fmt.Sprintf("the node finishes %d dispatches", n), func() error {
		done := 0
		for line, k := range countLines(t, ranLog) {
			if strings.HasPrefix(line, "done ") {
				done += k
			}
		}
		if done != n {
			return fmt.Errorf("%d finished; the node says:\n%s", done, c.node.stderr)
		}
		return nil
	})
	c.node.kill(t)
	return ids
}

// restart starts palyrad and the node again, and waits until every dispatch ended.
func (c *crashBench) restart(t *testing.T) {
	t.Helper()
	c.daemon = startDaemonProcess(t, c.args...)
	c.node = restartNodeAgent(t, c.node)
	eventually.NoError(t, "every dispatch ended after the restart", func() error {
		if states := dispatchStates(t, c.api, c.node.deviceID); states["queued"]+states["sent"]+states["running"] != 0 {
			return fmt.Errorf("the dispatches are %v; the node says:\n%s", states, c.node.stderr)
		}
		return nil
	})
}

// output reads a dispatch and all its output.
func (c *crashBench) output(t *testing.T, id string) (*controlplanev1.Dispatch, string) {
	t.Helper()
	res, err := c.api.GetDispatch(t.Context(), connect.NewRequest(&controlplanev1.GetDispatchRequest{Id: id, IncludeOutput: true}))
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	for _, o := range res.Msg.GetOutput() {
		out.Write(o.GetData())
	}
	return res.Msg.GetDispatch(), out.String()
}

// TestOutputSurvivesANodeKilledBeforePalyradStoredIt: the node finishes its dispatches
// while palyrad is down and is killed (SIGKILL) before it could send their output; after
// both restart, every dispatch has its whole output.
func TestOutputSurvivesANodeKilledBeforePalyradStoredIt(t *testing.T) {
	t.Parallel()
	c := newCrashBench(t)
	ids := c.finishWhileTheDaemonIsDown(t, 10)
	c.restart(t)
	for tag, id := range ids {
		d, out := c.output(t, id)
		want := fmt.Sprintf("start %s\ndone %s\n", tag, tag)
		if d.GetState() != controlplanev1.DispatchState_DISPATCH_STATE_SUCCEEDED || out != want || d.GetOutputBytes() != uint64(len(want)) {
			t.Errorf("dispatch %s (%s): %v, output_bytes %d, output %q; want succeeded with %q", tag, id, d.GetState(), d.GetOutputBytes(), out, want)
		}
	}
	c.node.stop(t)
	c.daemon.stop(t)
}

// TestLostOutputIsFlagged: when the node's output is gone anyway (here its spool holds
// the results alone, as an agent before 2026-12 kept them), each dispatch says so, with
// how much was lost, and the CLI shows it; output_bytes is never less than what is
// stored.
func TestLostOutputIsFlagged(t *testing.T) {
	t.Parallel()
	c := newCrashBench(t)
	ids := c.finishWhileTheDaemonIsDown(t, 3)
	spool := filepath.Join(c.stateDir, "results")
	files, err := filepath.Glob(filepath.Join(spool, "*.pb"))
	if err != nil || len(files) != len(ids) {
		t.Fatalf("the spool holds %v (%v), want %d results", files, err, len(ids))
	}
	for _, f := range files {
		oldSpool(t, f)
	}
	c.restart(t)
	for tag, id := range ids {
		d, out := c.output(t, id)
		full := fmt.Sprintf("start %s\ndone %s\n", tag, tag)
		// What reached palyrad before it was killed, if anything: the first line.
		if d.GetState() != controlplanev1.DispatchState_DISPATCH_STATE_SUCCEEDED || !strings.HasPrefix(full, out) || len(out) == len(full) ||
			d.GetOutputBytes() != uint64(len(full)) || !d.GetOutputLost() ||
			!strings.Contains(d.GetOutputLostReason(), fmt.Sprintf("only %d of the %d bytes of output reached palyrad", len(out), len(full))) {
			t.Errorf("dispatch %s (%s): %v, output_bytes %d, output %q, lost %v (%q)", tag, id, d.GetState(), d.GetOutputBytes(), out,
				d.GetOutputLost(), d.GetOutputLostReason())
		}
		if show := c.admin.ok(t, "dispatches", "show", id); !strings.Contains(show, "Output lost") {
			t.Errorf("palyra dispatches show %s does not say its output was lost:\n%s", id, show)
		}
		if code, _, stderr := c.admin.run(t, "", "dispatches", "watch", id); code != 0 ||
			!strings.Contains(stderr, "palyra: warning: dispatch "+id+" lost output: only") {
			t.Errorf("palyra dispatches watch %s: exit %d, and no warning that its output was lost: %q", id, code, stderr)
		}
	}
	c.node.stop(t)
	c.daemon.stop(t)
}

// oldSpool rewrites a spooled result of the agent (length-delimited AttachRequest
// messages: its output, then the result) as an agent before 2026-12 kept it: the
// result alone, as protojson, in <id>.json.
func oldSpool(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	in := bufio.NewReader(bytes.NewReader(b))
	var result *nodev1.DispatchResult
	for {
		m := &nodev1.AttachRequest{}
		if err := protodelim.UnmarshalFrom(in, m); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if r := m.GetResult(); r != nil {
			result = r
		}
	}
	if result == nil {
		t.Fatalf("%s holds no result", path)
	}
	j, err := protojson.Marshal(result)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(strings.TrimSuffix(path, ".pb")+".json", j, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
}
