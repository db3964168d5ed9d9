package main

// The end-to-end tests of the node runtime as users run it: the real `palyra node run`
// pairs and attaches to one palyrad while an administrator invokes capabilities through
// another replica; and a real palyrad process is killed (SIGKILL) while dispatches are
// in flight, yet every dispatch ends and none runs twice.

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	"github.com/palyra/palyra/gen/go/palyra/controlplane/v1/controlplanev1connect"
	"github.com/palyra/palyra/internal/eventually"
	"github.com/palyra/palyra/server/internal/identity"
	"github.com/palyra/palyra/server/internal/store/storetest"
)

func TestCLINodeRuntimeAcrossReplicas(t *testing.T) {
	t.Parallel()
	dbURL := storetest.URL(t)
	dirA := t.TempDir()
	a := startDaemon(t, nil, "--listen", "127.0.0.1:0", "--data-dir", dirA, "--database-url", dbURL)
	b := startDaemon(t, map[string]string{"PALYRA_MASTER_KEY": masterKey(t, dirA)},
		"--listen", "127.0.0.1:0", "--data-dir", t.TempDir(), "--database-url", dbURL)
	admin := newCLIUser(t).with("PALYRA_TOKEN", bootstrapToken(t, dirA), "PALYRA_URL", "https://"+a.addr,
		"PALYRA_CA_FILE", filepath.Join(dirA, "ca.pem"))

	// A root for filesystem.read, with a symbolic link that leads out of it.
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "motd"), []byte("hello from the node\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/passwd", filepath.Join(root, "passwd")); err != nil {
		t.Fatal(err)
	}
	stateDir := t.TempDir()

	// The node runs against replica B; the administrator works through replica A. It
	// starts without node.toml: it writes the template, and until an operator allows
	// programs and directories, shell.execute and filesystem.read refuse everything.
	node := startNodeAgent(t, admin, "https://"+b.addr, caFingerprint(t, dirA), stateDir)
	id := node.deviceID
	if fi, err := os.Stat(filepath.Join(stateDir, "node.toml")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("node.toml: %v", err)
	}
	want := map[string]bool{"system.info": true, "shell.execute": false, "filesystem.read": false, "llm.chat": false, "llm.embed": false, "browser.navigate": false, "browser.screenshot": false}
	if caps := nodeCapabilities(t, admin, id); !maps.Equal(caps, want) {
		t.Errorf("a node without configuration offers %v, want %v", caps, want)
	}
	stderr := admin.fails(t, 1, "nodes", "invoke", id, "shell.execute", "--input", `{"argv":["echo","hi"]}`)
	if !strings.Contains(stderr, "shell.execute") {
		t.Errorf("invoking an unconfigured shell.execute: %s", stderr)
	}

	// The operator allows echo and false and a root, and sends SIGHUP: the node
	// announces the change without reconnecting.
	writeNodeConfig(t, stateDir, []string{"echo", "false"}, root)
	if err := node.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	want = map[string]bool{"system.info": true, "shell.execute": true, "filesystem.read": true, "llm.chat": false, "llm.embed": false, "browser.navigate": false, "browser.screenshot": false}
	eventually.NoError(t, "the node announces its new capabilities", func() error {
		if got := nodeCapabilities(t, admin, id); !maps.Equal(got, want) {
			return fmt.Errorf("the node offers %v, want %v; it says:\n%s", got, want, node.stderr)
		}
		return nil
	})
	var inventory struct {
		Nodes []struct {
			ID              string `json:"id"`
			Name            string `json:"name"`
			Presence        string `json:"presence"`
			AttachedReplica string `json:"attachedReplica"`
		} `json:"nodes"`
	}
	decode(t, admin.ok(t, "nodes", "list", "-o", "json"), &inventory)
	if len(inventory.Nodes) != 1 || inventory.Nodes[0].ID != id || inventory.Nodes[0].Name != "e2e-node" ||
		inventory.Nodes[0].Presence != "PRESENCE_ONLINE" || inventory.Nodes[0].AttachedReplica == "" {
		t.Fatalf("palyra nodes list: %+v", inventory.Nodes)
	}

	// The "done when": echo hi, through the replica the node is not attached to.
	began := time.Now()
	if out := admin.ok(t, "nodes", "invoke", id, "shell.execute", "--input", `{"argv":["echo","hi"]}`); out != "hi\n" {
		t.Errorf("nodes invoke echo hi printed %q", out)
	}
	t.Logf("palyra nodes invoke … echo hi through replica A, node attached to B: %v", time.Since(began).Round(time.Millisecond))
	if out := admin.ok(t, "nodes", "invoke", id, "shell.execute", "--follow", "--input", `{"argv":["echo","followed"]}`); out != "followed\n" {
		t.Errorf("nodes invoke --follow printed %q", out)
	}
	// The remote exit code becomes palyra's.
	admin.fails(t, 1, "nodes", "invoke", id, "shell.execute", "--input", `{"argv":["false"]}`)
	var info map[string]any
	decode(t, admin.ok(t, "nodes", "invoke", id, "system.info", "-o", "json"), &info)
	if d, _ := info["dispatch"].(map[string]any); d["state"] != "DISPATCH_STATE_SUCCEEDED" || !strings.Contains(fmt.Sprint(d["resultJson"]), "hostname") {
		t.Errorf("system.info: %v", info)
	}
	if out := admin.ok(t, "nodes", "invoke", id, "filesystem.read", "--input", `{"path":"motd"}`, "-o", "json"); !strings.Contains(out, base64.StdEncoding.EncodeToString([]byte("hello from the node\n"))) {
		t.Errorf("filesystem.read motd: %s", out)
	}

	// Refusals: by the node (the dispatch fails with the reason) and by palyrad (before
	// any dispatch exists).
	for _, tc := range []struct {
		name, capability, input string
		want                    string
	}{
		{"a program outside the allow-list", "shell.execute", `{"argv":["/bin/sh","-c","id"]}`, "allow-list"},
		{"a path with ..", "filesystem.read", `{"path":"../../etc/passwd"}`, `".."`},
		{"a symbolic link out of the root", "filesystem.read", `{"path":"passwd"}`, "symbolic link"},
		{"input violating the schema", "shell.execute", `{"argv":"echo hi"}`, "does not match the capability's schema"},
		{"a capability the node lacks", "browser.open", `{}`, "does not offer capability"},
		{"an unknown node", "shell.execute", `{"argv":["echo"]}`, "not found"},
	} {
		target := id
		if tc.name == "an unknown node" {
			target = "01JD5ZJ8Q0W1X2Y3Z4A5B6C7D8"
		}
		stderr := admin.fails(t, 1, "nodes", "invoke", target, tc.capability, "--input", tc.input)
		if !strings.Contains(stderr, tc.want) {
			t.Errorf("%s: stderr %q lacks %q", tc.name, stderr, tc.want)
		}
	}
	if strings.Contains(node.stderr.String(), "root:x:0") {
		t.Error("the node logged the content of /etc/passwd")
	}

	// The dispatches are visible from either replica.
	var list struct {
		Dispatches []struct {
			ID    string `json:"id"`
			State string `json:"state"`
		} `json:"dispatches"`
	}
	decode(t, admin.with("PALYRA_URL", "https://"+b.addr).ok(t, "dispatches", "list", "--node", id, "-o", "json"), &list)
	if len(list.Dispatches) < 8 {
		t.Errorf("dispatches list through B: %d dispatches, want at least 8", len(list.Dispatches))
	}
	for _, d := range list.Dispatches {
		if d.State == "DISPATCH_STATE_QUEUED" || d.State == "DISPATCH_STATE_SENT" || d.State == "DISPATCH_STATE_RUNNING" {
			t.Errorf("dispatch %s is still %s", d.ID, d.State)
		}
	}
	// A creation-time window: all of them in the last hour, none before it.
	all := len(list.Dispatches)
	decode(t, admin.ok(t, "dispatches", "list", "--node", id, "--since", "1h", "-o", "json"), &list)
	if len(list.Dispatches) != all {
		t.Errorf("dispatches list --since 1h: %d dispatches, want %d", len(list.Dispatches), all)
	}
	list.Dispatches = nil
	decode(t, admin.ok(t, "dispatches", "list", "--node", id, "--until", "1h", "-o", "json"), &list)
	if len(list.Dispatches) != 0 {
		t.Errorf("dispatches list --until 1h: %d dispatches, want none", len(list.Dispatches))
	}

	// Revoking the device through A ends its stream on B, by the revocation's NOTIFY: B
	// has logged the notification by then (its safety-net reload, every 30 s, cannot
	// pass for it). How soon is BenchmarkRevocation's to measure (BENCHMARKS.md).
	revoked := time.Now()
	admin.ok(t, "nodes", "revoke", id, "--reason", "lost")
	eventually.NoError(t, "the revoked node detached", func() error {
		var n struct {
			Node struct {
				Presence        string `json:"presence"`
				AttachedReplica string `json:"attachedReplica"`
			} `json:"node"`
		}
		decode(t, admin.ok(t, "nodes", "show", id, "-o", "json"), &n)
		if n.Node.AttachedReplica != "" || n.Node.Presence != "PRESENCE_OFFLINE" {
			return fmt.Errorf("the node is %+v", n.Node)
		}
		return nil
	})
	t.Logf("the revoked node's Attach stream on B was ended %v after `palyra nodes revoke` started through A", time.Since(revoked).Round(time.Millisecond))
	if !revocationNotified(b.stderr.String(), "device:"+id) {
		t.Errorf("B ended the revoked node's stream before it received the revocation by NOTIFY; its log:\n%s", b.stderr)
	}
	node.stop(t)
}

// TestSIGKILLWhileDispatchesAreInFlight kills a real palyrad process with dispatches
// queued, sent and running, restarts it, and checks that every dispatch ends and that
// none ran twice. Then it kills it again with dispatches queued for a node that is
// offline: they are delivered once the node attaches to the restarted daemon.
func TestSIGKILLWhileDispatchesAreInFlight(t *testing.T) {
	t.Parallel()
	dbURL := storetest.URL(t)
	dataDir := t.TempDir()
	listen := "127.0.0.1:" + strconv.Itoa(freePort(t))
	args := []string{"--listen", listen, "--data-dir", dataDir, "--database-url", dbURL, "--nodes-heartbeat-interval", "1s"}
	d := startDaemonProcess(t, args...)
	admin := newCLIUser(t).with("PALYRA_TOKEN", bootstrapToken(t, dataDir), "PALYRA_URL", "https://"+listen,
		"PALYRA_CA_FILE", filepath.Join(dataDir, "ca.pem"))

	// Each run of record appends its tag to a log, then works for a while.
	node, record, ranLog := startRecordingNode(t, admin, "https://"+listen, caFingerprint(t, dataDir), "sleep \"$2\"\necho \"done $1\"")
	api := newDispatchClient(t, listen, dataDir)

	// 1. Twenty dispatches, created as fast as the API takes them, and the daemon is
	// killed at once: some are queued, some sent, some running.
	create := func(tag string, seconds string) string {
		t.Helper()
		input, _ := json.Marshal(map[string]any{"argv": []string{record, tag, seconds}})
		res, err := api.CreateDispatch(t.Context(), connect.NewRequest(&controlplanev1.CreateDispatchRequest{
			NodeId: node.deviceID, Capability: "shell.execute", InputJson: string(input),
			Timeout: durationpb.New(2 * time.Minute), IdempotencyKey: "kill-test-" + tag,
		}))
		if err != nil {
			t.Fatalf("create dispatch %s: %v", tag, err)
		}
		return res.Msg.GetDispatch().GetId()
	}
	ids := map[string]string{} // tag → dispatch id
	// They finish while the daemon is down: their output and results wait on the node.
	for i := range 20 {
		tag := "first-" + strconv.Itoa(i)
		ids[tag] = create(tag, "0.2")
	}
	states := dispatchStates(t, api, node.deviceID)
	d.kill(t)
	t.Logf("SIGKILL with dispatches in flight: %v", states)

	// 2. Restarted, the daemon hears from the node again; every dispatch succeeds.
	restarted := time.Now()
	d = startDaemonProcess(t, args...)
	waitTerminal(t, api, ids)
	t.Logf("all 20 dispatches ended %v after the restart began", time.Since(restarted).Round(time.Millisecond))
	for tag, id := range ids {
		res, err := api.GetDispatch(t.Context(), connect.NewRequest(&controlplanev1.GetDispatchRequest{Id: id, IncludeOutput: true}))
		if err != nil {
			t.Fatal(err)
		}
		out := ""
		for _, c := range res.Msg.GetOutput() {
			out += string(c.GetData())
		}
		if s := res.Msg.GetDispatch().GetState(); s != controlplanev1.DispatchState_DISPATCH_STATE_SUCCEEDED || out != "done "+tag+"\n" {
			t.Errorf("dispatch %s (%s): %v, output %q, error %q", tag, id, s, out, res.Msg.GetDispatch().GetError())
		}
	}
	// A repeat with the same idempotency key returns the same dispatch, not a new run.
	if again := create("first-0", "0.2"); again != ids["first-0"] {
		t.Errorf("a repeated idempotency key made dispatch %s, not %s", again, ids["first-0"])
	}

	// 3. The node is stopped; dispatches wait for it; the daemon is killed again.
	node.stop(t)
	queued := map[string]string{}
	for i := range 5 {
		tag := "queued-" + strconv.Itoa(i)
		queued[tag] = create(tag, "0")
		ids[tag] = queued[tag]
	}
	d.kill(t)
	d = startDaemonProcess(t, args...)
	node = restartNodeAgent(t, node)
	waitTerminal(t, api, queued)
	for tag, id := range queued {
		res, err := api.GetDispatch(t.Context(), connect.NewRequest(&controlplanev1.GetDispatchRequest{Id: id}))
		if err != nil {
			t.Fatal(err)
		}
		if s := res.Msg.GetDispatch().GetState(); s != controlplanev1.DispatchState_DISPATCH_STATE_SUCCEEDED {
			t.Errorf("queued dispatch %s: %v (%s)", tag, s, res.Msg.GetDispatch().GetError())
		}
	}

	// 4. None ran twice: the log has each tag exactly once.
	runs := countLines(t, ranLog)
	for tag := range ids {
		if runs[tag] != 1 {
			t.Errorf("dispatch %s ran %d times", tag, runs[tag])
		}
	}
	if len(runs) != len(ids) {
		t.Errorf("the log holds %d tags, want %d: %v", len(runs), len(ids), runs)
	}
	node.stop(t)
	d.stop(t)
}

// nodeCapabilities returns the capabilities `palyra nodes show` lists for a node, with
// whether each is available.
func nodeCapabilities(t *testing.T, admin *cliUser, id string) map[string]bool {
	t.Helper()
	var n struct {
		Node struct {
			Capabilities []struct {
				Name      string `json:"name"`
				Available bool   `json:"available"`
			} `json:"capabilities"`
		} `json:"node"`
	}
	decode(t, admin.ok(t, "nodes", "show", id, "-o", "json"), &n)
	caps := map[string]bool{}
	for _, c := range n.Node.Capabilities {
		caps[c.Name] = c.Available
	}
	return caps
}

// masterKey reads the master key of a data directory, for a second replica.
func masterKey(t *testing.T, dataDir string) string {
	t.Helper()
	key, err := os.ReadFile(filepath.Join(dataDir, identity.MasterKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(key))
}

// decode parses JSON output, failing the test when it is not.
func decode(t *testing.T, out string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("%v in:\n%s", err, out)
	}
}

// writeNodeConfig writes node.toml: shell.execute may run allow, filesystem.read may
// read under root (none when empty).
func writeNodeConfig(t *testing.T, stateDir string, allow []string, root string) {
	t.Helper()
	quoted := make([]string, len(allow))
	for i, a := range allow {
		quoted[i] = strconv.Quote(a)
	}
	cfg := "[shell]\nallow = [" + strings.Join(quoted, ", ") + "]\ntimeout = \"1m\"\n"
	if root != "" {
		cfg += "\n[filesystem]\nroots = [" + strconv.Quote(root) + "]\n"
	}
	if err := os.WriteFile(filepath.Join(stateDir, "node.toml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
}

// startRecordingNode starts a node agent (startNodeAgent) whose shell.execute may run
// one program, record: a shell script that appends its first argument to the file
// ranLog, then runs then.
func startRecordingNode(t *testing.T, admin *cliUser, url, caFP, then string) (node *nodeAgent, record, ranLog string) {
	t.Helper()
	work := t.TempDir()
	ranLog = filepath.Join(work, "ran")
	record = filepath.Join(work, "record")
	script := fmt.Sprintf("#!/bin/sh\necho \"$1\" >> %s\n%s\n", ranLog, then)
	if err := os.WriteFile(record, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	stateDir := t.TempDir()
	writeNodeConfig(t, stateDir, []string{record}, "")
	return startNodeAgent(t, admin, url, caFP, stateDir), record, ranLog
}

// nodeAgent is a running `palyra node run`.
type nodeAgent struct {
	*process
	args     []string
	env      []string
	deviceID string
	admin    *cliUser
}

// startNodeAgent creates a PIN code, starts `palyra node run` with it against url,
// approves its request as admin, and waits until the node is online.
func startNodeAgent(t *testing.T, admin *cliUser, url, caFP, stateDir string) *nodeAgent {
	t.Helper()
	return startNodeAgentWith(t, admin, url, caFP, stateDir, nodeOptions{})
}

// nodeOptions are what startNodeAgentWith adds to the agent's command line and to its
// approval, e.g. --label k=v to each.
type nodeOptions struct {
	run, approve []string
}

// startNodeAgentWith is startNodeAgent with o; other nodes may be online already.
func startNodeAgentWith(t *testing.T, admin *cliUser, url, caFP, stateDir string, o nodeOptions) *nodeAgent {
	t.Helper()
	var code struct {
		Code string `json:"code"`
	}
	decode(t, admin.ok(t, "pairing", "codes", "create", "--method", "pin", "--ttl", "10m", "-o", "json"), &code)
	n := &nodeAgent{
		args: append([]string{"node", "run", "--url", url, "--pin", code.Code, "--ca-fingerprint", caFP, "--name", "e2e-node",
			"--state-dir", stateDir, "--log-level", "debug"}, o.run...),
		env:   []string{"HOME=" + t.TempDir()},
		admin: admin,
	}
	n.start(t)
	var request struct {
		ID string `json:"id"`
	}
	eventually.NoError(t, "a pending request", func() error {
		var list struct {
			PairingRequests []json.RawMessage `json:"pairingRequests"`
		}
		decode(t, admin.ok(t, "pairing", "requests", "list", "--state", "pending", "-o", "json"), &list)
		if len(list.PairingRequests) != 1 {
			return fmt.Errorf("%d pending requests; the node says:\n%s", len(list.PairingRequests), n.stderr)
		}
		decode(t, string(list.PairingRequests[0]), &request)
		return nil
	})
	var approved struct {
		PairingRequest struct {
			DeviceID string `json:"deviceId"`
		} `json:"pairingRequest"`
	}
	decode(t, admin.ok(t, append([]string{"pairing", "requests", "approve", request.ID, "-o", "json"}, o.approve...)...), &approved)
	n.deviceID = n.waitOnline(t, approved.PairingRequest.DeviceID)
	return n
}

// restartNodeAgent starts the agent of n again (it is paired now: no code is needed).
func restartNodeAgent(t *testing.T, n *nodeAgent) *nodeAgent {
	t.Helper()
	again := &nodeAgent{env: n.env, admin: n.admin, deviceID: n.deviceID}
	for i := 0; i < len(n.args); i++ {
		if n.args[i] == "--pin" {
			i++
			continue
		}
		again.args = append(again.args, n.args[i])
	}
	again.start(t)
	again.waitOnline(t, n.deviceID)
	return again
}

func (n *nodeAgent) start(t *testing.T) {
	t.Helper()
	n.process = startProcess(t, "palyra node run", cliBinary(t), n.env, n.args...)
}

// waitOnline waits until the node (id, or the only node when id is empty) is online,
// and returns its id.
func (n *nodeAgent) waitOnline(t *testing.T, id string) string {
	t.Helper()
	var online string
	eventually.NoError(t, "the node online", func() error {
		var list struct {
			Nodes []struct {
				ID       string `json:"id"`
				Presence string `json:"presence"`
			} `json:"nodes"`
		}
		decode(t, n.admin.ok(t, "nodes", "list", "--presence", "online", "-o", "json"), &list)
		for _, node := range list.Nodes {
			if id == "" || node.ID == id {
				online = node.ID
				return nil
			}
		}
		select {
		case err := <-n.done:
			t.Fatalf("palyra node run exited (%v) before the node was online:\n%s", err, n.stderr)
		default:
		}
		return fmt.Errorf("not online; it says:\n%s", n.stderr)
	})
	return online
}

// process is a program of this repository run as a process of its own, which a test
// may stop or kill; it is killed when the test ends, unless it exited first.
type process struct {
	name   string // for messages: "palyrad", "palyra node run"
	cmd    *exec.Cmd
	stdout *syncBuffer
	stderr *syncBuffer
	done   chan error // receives the result of Wait
}

// startProcess starts bin with env as its whole environment.
func startProcess(t *testing.T, name, bin string, env []string, args ...string) *process {
	t.Helper()
	p := &process{name: name, cmd: exec.Command(bin, args...), stdout: newSyncBuffer(), stderr: newSyncBuffer(), done: make(chan error, 1)}
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// kill sends SIGKILL: the process gets no chance to clean up.
func (p *process) kill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-p.done
}

// stop sends SIGTERM and expects the process to drain and exit 0.
func (p *process) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		if err != nil {
			t.Errorf("%s after SIGTERM: %v\n%s", p.name, err, p.stderr)
		}
	case <-time.After(time.Minute):
		t.Fatalf("%s did not stop within a minute of SIGTERM:\n%s", p.name, p.stderr)
	}
}

// startDaemonProcess starts the palyrad binary and waits until it is ready.
func startDaemonProcess(t *testing.T, args ...string) *process {
	t.Helper()
	d := startProcess(t, "palyrad", daemonBinary(t), []string{"HOME=" + t.TempDir()}, args...)
	select {
	case <-d.stderr.ready:
	case err := <-d.done:
		t.Fatalf("palyrad exited (%v) before it was ready:\n%s", err, d.stderr)
	case <-time.After(time.Minute):
		t.Fatalf("palyrad was not ready within a minute:\n%s", d.stderr)
	}
	return d
}

// newDispatchClient is a DispatchService client of the daemon at addr, with the owner's
// bootstrap token, trusting the CA of dataDir.
func newDispatchClient(t *testing.T, addr, dataDir string) controlplanev1connect.DispatchServiceClient {
	t.Helper()
	hc, owner := ownerClient(t, dataDir)
	return controlplanev1connect.NewDispatchServiceClient(hc, "https://"+addr, owner)
}

// ownerClient returns an HTTP client trusting the CA of dataDir, and the option that
// sends the owner's bootstrap token with every unary call.
func ownerClient(t *testing.T, dataDir string) (*http.Client, connect.ClientOption) {
	t.Helper()
	ca, err := os.ReadFile(filepath.Join(dataDir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(ca) {
		t.Fatal("ca.pem holds no certificate")
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "localhost"}, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	token := bootstrapToken(t, dataDir)
	return &http.Client{Transport: tr}, connect.WithInterceptors(connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			req.Header().Set("Authorization", "Bearer "+token)
			return next(ctx, req)
		}
	}))
}

// dispatchStates counts a node's dispatches by state.
func dispatchStates(t *testing.T, api controlplanev1connect.DispatchServiceClient, nodeID string) map[string]int {
	t.Helper()
	res, err := api.ListDispatches(t.Context(), connect.NewRequest(&controlplanev1.ListDispatchesRequest{NodeId: nodeID, PageSize: 500}))
	if err != nil {
		t.Fatal(err)
	}
	states := map[string]int{}
	for _, d := range res.Msg.GetDispatches() {
		states[strings.ToLower(strings.TrimPrefix(d.GetState().String(), "DISPATCH_STATE_"))]++
	}
	return states
}

// waitTerminal waits until every dispatch of ids has ended.
func waitTerminal(t *testing.T, api controlplanev1connect.DispatchServiceClient, ids map[string]string) {
	t.Helper()
	for tag, id := range ids {
		eventually.NoError(t, "dispatch "+tag+" ended", func() error {
			res, err := api.GetDispatch(t.Context(), connect.NewRequest(&controlplanev1.GetDispatchRequest{Id: id}))
			if err != nil {
				t.Fatalf("get dispatch %s: %v", tag, err)
			}
			if s := res.Msg.GetDispatch().GetState(); s < controlplanev1.DispatchState_DISPATCH_STATE_SUCCEEDED {
				return fmt.Errorf("dispatch %s is %v", id, s)
			}
			return nil
		})
	}
}

// countLines counts the lines of a file by content.
func countLines(t *testing.T, path string) map[string]int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	counts := map[string]int{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		counts[sc.Text()]++
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return counts
}

// TestNodeReattachesAfterPalyradRestarts stops palyrad (SIGTERM) under an attached
// `palyra node run`, and starts it again on the same address: the node attaches again.
// While nothing listened its dials were refused, and the agent retried each within the
// short ceiling of a refused dial (retry.AttachBackoff: 2 s, drawn with full jitter)
// instead of letting its backoff grow toward 30 s and sleep through palyrad's return.
func TestNodeReattachesAfterPalyradRestarts(t *testing.T) {
	t.Parallel()
	dbURL := storetest.URL(t)
	dataDir := t.TempDir()
	listen := "127.0.0.1:" + strconv.Itoa(freePort(t))
	args := []string{"--listen", listen, "--data-dir", dataDir, "--database-url", dbURL}
	d := startDaemonProcess(t, args...)
	admin := newCLIUser(t).with("PALYRA_TOKEN", bootstrapToken(t, dataDir), "PALYRA_URL", "https://"+listen,
		"PALYRA_CA_FILE", filepath.Join(dataDir, "ca.pem"))
	node := startNodeAgent(t, admin, "https://"+listen, caFingerprint(t, dataDir), t.TempDir())

	d.stop(t)
	refusedRetries := func() []string {
		var waits []string
		for line := range strings.Lines(node.stderr.String()) {
			if strings.Contains(line, "cannot attach to palyrad") && strings.Contains(line, "connection refused") {
				_, wait, _ := strings.Cut(line, "retry_in=")
				waits = append(waits, strings.TrimSpace(wait))
			}
		}
		return waits
	}
	// More refused dials than the long backoff's first ceilings allow in as many
	// attempts: each of them was retried within the short ceiling.
	eventually.True(t, "the agent's dials refused 8 times", func() bool { return len(refusedRetries()) >= 8 })
	for _, w := range refusedRetries() {
		if wait, err := time.ParseDuration(w); err != nil || wait > 2*time.Second {
			t.Errorf("a refused dial retried in %q, want within 2s (retry.AttachBackoff's Refused)", w)
		}
	}

	d = startDaemonProcess(t, args...)
	node.waitOnline(t, node.deviceID)
	node.stop(t)
	d.stop(t)
}
