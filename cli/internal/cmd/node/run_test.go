package node_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/palyra/palyra/cli/internal/cmd/cmdtest"
	agent "github.com/palyra/palyra/cli/internal/node"
	nodev1 "github.com/palyra/palyra/gen/go/palyra/node/v1"
	"github.com/palyra/palyra/internal/eventually"
)

// wait is how long a test waits for something that should happen at once.
const wait = eventually.Deadline

// peerKey is the context key of the verified client certificate of a call.
type peerKey struct{}

// withPeer hands the verified client certificate of each request to the handlers.
func withPeer(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
			r = r.WithContext(context.WithValue(r.Context(), peerKey{}, r.TLS.PeerCertificates[0]))
		}
		h.ServeHTTP(w, r)
	})
}

// Attach is palyrad's side of a session, as far as these tests need it: it checks
// that the node presents a certificate of the device its hello names, welcomes it,
// reports the hello on hellos, and reads what the node sends until it ends the stream.
func (f *fakeNode) Attach(ctx context.Context, stream *connect.BidiStream[nodev1.AttachRequest, nodev1.AttachResponse]) error {
	first, err := stream.Receive()
	if err != nil {
		return err
	}
	hello := first.GetHello()
	if hello == nil {
		return connect.NewError(connect.CodeInvalidArgument, errors.New("the first message must be a hello"))
	}
	peer, _ := ctx.Value(peerKey{}).(*x509.Certificate)
	if peer == nil || len(peer.URIs) != 1 || peer.URIs[0].String() != "palyra://device/"+hello.GetDeviceId() {
		return connect.NewError(connect.CodeUnauthenticated, errors.New("no certificate of this device"))
	}
	if err := stream.Send(&nodev1.AttachResponse{Message: &nodev1.AttachResponse_Welcome{Welcome: &nodev1.Welcome{
		SessionId: "session-1", ProtocolVersion: agent.ProtocolVersion, HeartbeatInterval: durationpb.New(100 * time.Millisecond),
		MaxMessageBytes: 4 << 20, ServerTime: timestamppb.Now(),
	}}}); err != nil {
		return err
	}
	f.hellos <- hello
	for {
		if _, err := stream.Receive(); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// agentRun is `palyra node run` running in the background.
type agentRun struct {
	cancel context.CancelFunc // Ctrl-C
	done   chan cmdtest.Result
}

// start runs palyra with args until stop or the end of the test.
func (b *bench) start(t *testing.T, args ...string) *agentRun {
	t.Helper()
	env := map[string]string{"HOME": t.TempDir()}
	ctx, cancel := context.WithCancel(t.Context())
	r := &agentRun{cancel: cancel, done: make(chan cmdtest.Result, 1)}
	go func() { r.done <- cmdtest.Run(ctx, env, args...) }()
	t.Cleanup(cancel)
	return r
}

// hello waits until the node attaches and returns its hello.
func (b *bench) hello(t *testing.T, r *agentRun) *nodev1.Hello {
	t.Helper()
	select {
	case h := <-b.fake.hellos:
		return h
	case res := <-r.done:
		t.Fatalf("node run ended before it attached: exit %d:\n%s", res.Code, res.Stderr)
	case <-time.After(wait):
		t.Fatal("the node did not attach")
	}
	return nil
}

// stop interrupts the command, as SIGINT or SIGTERM do, and returns what it did.
func (r *agentRun) stop(t *testing.T) cmdtest.Result {
	t.Helper()
	r.cancel()
	select {
	case res := <-r.done:
		return res
	case <-time.After(wait):
		t.Fatal("node run did not stop")
		return cmdtest.Result{}
	}
}

// available returns the availability of each capability of a hello.
func available(h *nodev1.Hello) map[string]bool {
	m := map[string]bool{}
	for _, c := range h.GetCapabilities() {
		m[c.GetName()] = c.GetAvailable()
	}
	return m
}

// jsonStatus runs `node status -o json` on dir and decodes it.
func (b *bench) jsonStatus(t *testing.T, dir string) map[string]any {
	t.Helper()
	res := b.run(t.Context(), t, "node", "status", "--state-dir", dir, "-o", "json")
	if res.Code != 0 {
		t.Fatalf("node status: exit %d:\n%s", res.Code, res.Stderr)
	}
	var st map[string]any
	if err := json.Unmarshal([]byte(res.Stdout), &st); err != nil {
		t.Fatalf("node status -o json printed %q: %v", res.Stdout, err)
	}
	return st
}

// TestNodeRunPairsAndAttaches runs an unpaired node with a pairing code: it pairs,
// writes the default node.toml, attaches with its labels and capabilities, reports
// itself in node status while it runs, and exits 0 when interrupted.
func TestNodeRunPairsAndAttaches(t *testing.T) {
	t.Parallel()
	b := newBench(t, "approve")
	r := b.start(t, "node", "run", "--url", b.url, "--pin", pin, "--ca-fingerprint", b.fp, "--state-dir", b.dir,
		"--name", "build-01", "--label", "region=eu-west", "--label", "rack=7")
	h := b.hello(t, r)
	const device = "01JD5ZJ8Q0W1X2Y3Z4A5B6C7V1"
	if h.GetDeviceId() != device || h.GetLabels()["region"] != "eu-west" || h.GetLabels()["rack"] != "7" || len(h.GetLabels()) != 2 ||
		h.GetPlatform() != runtime.GOOS+"/"+runtime.GOARCH || len(h.GetProtocolVersions()) == 0 {
		t.Errorf("hello = %v", h)
	}
	want := map[string]bool{"system.info": true, "shell.execute": false, "filesystem.read": false, "llm.chat": false, "llm.embed": false, "browser.navigate": false, "browser.screenshot": false}
	if got := available(h); !maps.Equal(got, want) {
		t.Errorf("capabilities (name: available) = %v, want %v", got, want)
	}
	config := filepath.Join(b.dir, agent.ConfigFile)
	if runtime.GOOS != "windows" && fileMode(t, config) != 0o600 {
		t.Errorf("node.toml has mode %v, want 0600", fileMode(t, config))
	}

	// node status sees the agent attached, with its pid (this process's) and heartbeats.
	eventually.NoError(t, "node status shows the agent attached", func() error {
		st := b.jsonStatus(t, b.dir)
		a, _ := st["agent"].(map[string]any)
		if a == nil || a["attached"] != true || a["session_id"] != "session-1" || a["last_heartbeat"] == nil {
			return fmt.Errorf("status = %v", st)
		}
		if st["paired"] != true || st["device_id"] != device || a["pid"] != float64(os.Getpid()) {
			t.Errorf("status = %v", st)
		}
		return nil
	})

	res := r.stop(t)
	if res.Code != 0 {
		t.Fatalf("interrupted: exit %d, want 0:\n%s", res.Code, res.Stderr)
	}
	cmdtest.WantOutput(t, "stderr", res.Stderr, "waiting for approval (request 01JD5ZJ8Q0W1X2Y3Z4A5B6C7R1", "paired as device "+device,
		"wrote the default node configuration", "capability unavailable", "capability=shell.execute", "capability=filesystem.read",
		"attached to palyrad", "node agent stopped")
	if strings.Contains(res.Stderr, pin) {
		t.Errorf("the log shows the PIN:\n%s", res.Stderr)
	}
	b.secretsHidden(t, b.dir, res)
	if st := b.jsonStatus(t, b.dir); st["agent"] != nil {
		t.Errorf("after the agent stopped, status = %v", st)
	}
}

// TestNodeRunPaired runs a node that is paired: it pairs no more, ignores a pairing
// code, refuses a broken node.toml, and offers what node.toml allows.
func TestNodeRunPaired(t *testing.T) {
	t.Parallel()
	b := newBench(t, "approve")
	if res := b.run(t.Context(), t, b.pairArgs()...); res.Code != 0 {
		t.Fatalf("pair: exit %d:\n%s", res.Code, res.Stderr)
	}
	config := filepath.Join(b.dir, agent.ConfigFile)
	if err := os.WriteFile(config, []byte("[shell]\nallowed = [\"uname\"]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	res := b.run(t.Context(), t, "node", "run", "--state-dir", b.dir)
	if res.Code != 1 || !strings.Contains(res.Stderr, config) || !strings.Contains(res.Stderr, "allowed") {
		t.Errorf("a node.toml with an unknown setting: exit %d:\n%s", res.Code, res.Stderr)
	}

	exe := filepath.Join(t.TempDir(), "tool")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	toml := "[shell]\nallow = [\"" + filepath.ToSlash(exe) + "\"]\n"
	if err := os.WriteFile(config, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	r := b.start(t, "node", "run", "--state-dir", b.dir, "--pin", pin, "--log-level", "warn")
	h := b.hello(t, r)
	if got := available(h); !got["shell.execute"] || got["filesystem.read"] || !got["system.info"] {
		t.Errorf("capabilities (name: available) = %v", got)
	}
	res = r.stop(t)
	if res.Code != 0 {
		t.Fatalf("interrupted: exit %d, want 0:\n%s", res.Code, res.Stderr)
	}
	cmdtest.WantOutput(t, "stderr", res.Stderr, "this node is paired already: the pairing code given is not used", "capability=filesystem.read")
	if strings.Contains(res.Stderr, "level=INFO") || strings.Contains(res.Stderr, "capability=shell.execute") {
		t.Errorf("--log-level warn logged:\n%s", res.Stderr)
	}
	if _, starts := b.fake.calls(); len(starts) != 1 {
		t.Errorf("%d StartPairing calls; a paired node must not pair again", len(starts))
	}
	if b, err := os.ReadFile(config); err != nil || string(b) != toml {
		t.Errorf("node.toml is now %q, %v", b, err)
	}
}

// TestNodeRunResume interrupts a node run that waits for approval, and checks that
// the next run resumes the request, then attaches.
func TestNodeRunResume(t *testing.T) {
	t.Parallel()
	b := newBench(t, "hold")
	r := b.start(t, "node", "run", "--url", b.url, "--pin", pin, "--ca-fingerprint", b.fp, "--state-dir", b.dir, "--name", "n1")
	select {
	case <-b.fake.watching:
	case res := <-r.done:
		t.Fatalf("run ended before waiting: exit %d:\n%s", res.Code, res.Stderr)
	case <-time.After(wait):
		t.Fatal("run did not wait for approval")
	}
	res := r.stop(t)
	const id = "01JD5ZJ8Q0W1X2Y3Z4A5B6C7R1"
	if res.Code != 130 || !strings.Contains(res.Stderr, "interrupted: pairing request "+id+" stays pending; run `palyra node run --state-dir") {
		t.Fatalf("interrupted: exit %d, stderr:\n%s", res.Code, res.Stderr)
	}
	if _, err := os.Stat(filepath.Join(b.dir, agent.ConfigFile)); err == nil {
		t.Error("node.toml was written before the node paired")
	}

	b.fake.setOutcome("approve")
	r = b.start(t, "node", "run", "--state-dir", b.dir)
	b.hello(t, r)
	res = r.stop(t)
	if res.Code != 0 {
		t.Fatalf("resumed run: exit %d:\n%s", res.Code, res.Stderr)
	}
	cmdtest.WantOutput(t, "stderr", res.Stderr, "resuming pairing request "+id, "paired as device ")
	if _, starts := b.fake.calls(); len(starts) != 1 {
		t.Errorf("%d StartPairing calls; resuming must not make a new request", len(starts))
	}
}

// TestNodeRunArguments checks that mistaken command lines, and an unpaired node
// without a pairing code, exit 2 before anything is called or written.
func TestNodeRunArguments(t *testing.T) {
	t.Parallel()
	b := newBench(t, "approve")
	tests := map[string]struct {
		args []string
		want string
	}{
		"unpaired without a code": {want: "this node is not paired yet: run needs a pairing code: --pin with --url"},
		"unpaired without trust":  {args: []string{"--url", b.url, "--pin", pin}, want: "run needs palyrad's CA pinned"},
		"log level":               {args: []string{"--log-level", "loud"}, want: `--log-level "loud": use debug, info, warn or error`},
		"label without value":     {args: []string{"--label", "region"}, want: `--label "region" is not key=value`},
		"label key":               {args: []string{"--label", "Region=eu"}, want: `--label key "Region"`},
		"an argument":             {args: []string{"now"}, want: "unknown command"},
	}
	for name, tc := range tests {
		res := b.run(t.Context(), t, append([]string{"node", "run", "--state-dir", b.dir, "--name", "n1"}, tc.args...)...)
		if res.Code != 2 || !strings.Contains(res.Stderr, tc.want) {
			t.Errorf("%s: exit %d, want 2 and %q; stderr:\n%s", name, res.Code, tc.want, res.Stderr)
		}
	}
	if infos, starts := b.fake.calls(); infos != 0 || len(starts) != 0 {
		t.Errorf("palyrad got %d GetServerInfo and %d StartPairing calls", infos, len(starts))
	}
	if _, err := os.Stat(b.dir); err == nil {
		t.Error("a mistaken command line created the state directory")
	}
}
