package node_test

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/palyra/palyra/cli/internal/client"
	"github.com/palyra/palyra/cli/internal/cmd/cmdtest"
	agent "github.com/palyra/palyra/cli/internal/node"
	"github.com/palyra/palyra/internal/testpki"
)

// stateDevice is the device of the state directories that writePaired makes.
const stateDevice = "01JD5ZJ8Q0W1X2Y3Z4A5B6C7S1"

// writePaired makes dir the state directory of a node paired as stateDevice with
// https://admin-host:7443, whose certificate expires at notAfter.
func writePaired(t *testing.T, dir string, notAfter time.Time) {
	t.Helper()
	ca, caKey := newCA(t, "Test Palyra CA")
	key := testpki.Key(t)
	u, _ := url.Parse("palyra://device/" + stateDevice)
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: stateDevice}, URIs: []*url.URL{u},
		NotBefore: notAfter.Add(-24 * time.Hour), NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	s := agent.NewStateDir(dir)
	keyFP, _ := agent.KeyFingerprint(key.Public())
	for _, err := range []error{
		s.SaveKey(key),
		s.SaveCertificates(cert, ca),
		s.SaveHost(&agent.Host{
			URL: "https://admin-host:7443", CAFingerprint: client.Fingerprint(ca), DeviceName: "build-01", DeviceID: stateDevice,
			KeyFingerprint: keyFP, CertificateFingerprint: client.Fingerprint(cert), CertificateExpireTime: notAfter,
		}),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// writeAgent writes the agent.json of an agent running on dir.
func writeAgent(t *testing.T, dir string, st agent.AgentStatus) {
	t.Helper()
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, agent.StatusFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// field returns the value at a dotted path of decoded JSON.
func field(v any, path string) any {
	for _, k := range strings.Split(path, ".") {
		m, _ := v.(map[string]any)
		v = m[k]
	}
	return v
}

// TestNodeStatus checks the report of node status, as a table and as JSON, for the
// states a node goes through.
func TestNodeStatus(t *testing.T) {
	t.Parallel()
	now := cmdtest.Now
	valid := now.Add(20 * time.Hour)
	tests := map[string]struct {
		setup func(t *testing.T, dir string)
		table []string
		json  map[string]any
	}{
		"unpaired": {
			setup: func(*testing.T, string) {},
			table: []string{"Paired  no: pair with `palyra node pair`", "palyrad  -", "Agent  not running", "Spooled results  0 awaiting acknowledgement"},
			json:  map[string]any{"paired": false, "agent": nil, "spooled_results": 0.0, "certificate_expired": false, "pending_request": nil},
		},
		"pending": {
			setup: func(t *testing.T, dir string) {
				s := agent.NewStateDir(dir)
				if err := s.SaveHost(&agent.Host{URL: "https://admin-host:7443", DeviceName: "n1", RequestID: "01JD5ZJ8Q0W1X2Y3Z4A5B6C7R9"}); err != nil {
					t.Fatal(err)
				}
				if err := s.SavePending(&agent.Pending{RequestID: "01JD5ZJ8Q0W1X2Y3Z4A5B6C7R9", Secret: "pairing-secret-x", ExpireTime: now.Add(5 * time.Minute)}); err != nil {
					t.Fatal(err)
				}
			},
			table: []string{"Paired  no: waiting for the approval of pairing request 01JD5ZJ8Q0W1X2Y3Z4A5B6C7R9", "palyrad  https://admin-host:7443",
				"Pending request  01JD5ZJ8Q0W1X2Y3Z4A5B6C7R9, expires at 2025-06-01T12:05:00Z"},
			json: map[string]any{"paired": false, "pending_request.request_id": "01JD5ZJ8Q0W1X2Y3Z4A5B6C7R9", "pending_request.expire_time": "2025-06-01T12:05:00Z"},
		},
		"paired, not running": {
			setup: func(t *testing.T, dir string) { writePaired(t, dir, valid) },
			table: []string{"Paired  yes, as device " + stateDevice + " (build-01)", "palyrad  https://admin-host:7443",
				"Certificate  valid until 2025-06-02T08:00:00Z (20h left)", "Agent  not running"},
			json: map[string]any{
				"paired": true, "device_id": stateDevice, "device_name": "build-01", "url": "https://admin-host:7443",
				"certificate_expire_time": "2025-06-02T08:00:00Z", "certificate_expired": false, "agent": nil,
			},
		},
		"expired": {
			setup: func(t *testing.T, dir string) { writePaired(t, dir, now.Add(-2*time.Hour)) },
			table: []string{"Certificate  EXPIRED at 2025-06-01T10:00:00Z (2h ago): pair again with `palyra node pair --force`"},
			json:  map[string]any{"paired": true, "certificate_expired": true},
		},
		"running, attached": {
			setup: func(t *testing.T, dir string) {
				writePaired(t, dir, valid)
				writeAgent(t, dir, agent.AgentStatus{
					PID: os.Getpid(), StartedAt: now.Add(-time.Hour), URL: "https://admin-host:7443", DeviceID: stateDevice,
					Attached: true, SessionID: "session-7", AttachedSince: now.Add(-30 * time.Minute), LastHeartbeat: now.Add(-5 * time.Second),
					Running: 2, UpdatedAt: now,
				})
				if err := os.MkdirAll(filepath.Join(dir, agent.ResultsDir), 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, agent.ResultsDir, "01JD5ZJ8Q0W1X2Y3Z4A5B6C7D1.json"), []byte("{}"), 0o600); err != nil {
					t.Fatal(err)
				}
			},
			table: []string{
				"Agent  running (pid " + strconv.Itoa(os.Getpid()) + ", since 2025-06-01T11:00:00Z (1h ago))",
				"Session  attached since 2025-06-01T11:30:00Z (30m ago) (session session-7)",
				"Last heartbeat  2025-06-01T11:59:55Z (5s ago)", "Running dispatches  2", "Spooled results  1 awaiting acknowledgement",
			},
			json: map[string]any{
				"agent.pid": float64(os.Getpid()), "agent.attached": true, "agent.session_id": "session-7", "agent.running": 2.0,
				"agent.last_heartbeat": "2025-06-01T11:59:55Z", "spooled_results": 1.0,
			},
		},
		"running, detached": {
			setup: func(t *testing.T, dir string) {
				writePaired(t, dir, valid)
				writeAgent(t, dir, agent.AgentStatus{PID: os.Getpid(), StartedAt: now.Add(-time.Minute), LastError: "connection refused"})
			},
			table: []string{"Session  not attached", "Last error  connection refused"},
			json:  map[string]any{"agent.attached": false, "agent.last_error": "connection refused"},
		},
		"agent gone": {
			setup: func(t *testing.T, dir string) {
				writePaired(t, dir, valid)
				writeAgent(t, dir, agent.AgentStatus{PID: 1 << 30, StartedAt: now.Add(-time.Minute), Attached: true})
			},
			table: []string{"Agent  not running"},
			json:  map[string]any{"agent": nil},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			tc.setup(t, dir)
			env := map[string]string{"HOME": t.TempDir()}
			res := cmdtest.Run(t.Context(), env, "node", "status", "--state-dir", dir)
			if res.Code != 0 {
				t.Fatalf("exit %d:\n%s", res.Code, res.Stderr)
			}
			table := strings.Join(strings.Fields(strings.ReplaceAll(res.Stdout, "\n", " | ")), " ")
			for _, want := range append(tc.table, "State directory  "+dir) {
				if !strings.Contains(table, strings.Join(strings.Fields(want), " ")) {
					t.Errorf("the table lacks %q:\n%s", want, res.Stdout)
				}
			}
			if strings.Contains(res.Stdout, "pairing-secret-") {
				t.Errorf("the table shows the pairing secret:\n%s", res.Stdout)
			}

			res = cmdtest.Run(t.Context(), env, "node", "status", "--state-dir", dir, "-o", "json")
			var got map[string]any
			if err := json.Unmarshal([]byte(res.Stdout), &got); res.Code != 0 || err != nil {
				t.Fatalf("-o json: exit %d, %v:\n%s%s", res.Code, err, res.Stdout, res.Stderr)
			}
			for path, want := range tc.json {
				if v := field(got, path); v != want {
					t.Errorf("JSON %s = %#v, want %#v", path, v, want)
				}
			}
			if got["state_dir"] != dir || strings.Contains(res.Stdout, "pairing-secret-") {
				t.Errorf("JSON = %s", res.Stdout)
			}
		})
	}
}

// TestNodeStatusErrors checks that a state directory that is missing or not a
// directory is an error, not a node that is not paired.
func TestNodeStatusErrors(t *testing.T) {
	t.Parallel()
	tmp := t.TempDir()
	file := filepath.Join(tmp, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		env  map[string]string
		args []string
		want string
	}{
		"missing":         {args: []string{"--state-dir", filepath.Join(tmp, "none")}, want: "there is no node state directory " + filepath.Join(tmp, "none")},
		"missing default": {env: map[string]string{"XDG_STATE_HOME": tmp}, want: "there is no node state directory " + filepath.Join(tmp, "palyra", "node")},
		"a file":          {args: []string{"--state-dir", file}, want: file + " is not a directory"},
	}
	for name, tc := range tests {
		res := cmdtest.Run(t.Context(), tc.env, append([]string{"node", "status"}, tc.args...)...)
		if res.Code != 1 || !strings.Contains(res.Stderr, tc.want) {
			t.Errorf("%s: exit %d, stderr:\n%s", name, res.Code, res.Stderr)
		}
	}
	if os.Geteuid() == 0 || runtime.GOOS == "windows" {
		return // root reads whatever the mode says; Windows has no such mode
	}
	locked := filepath.Join(tmp, "locked")
	writePaired(t, locked, cmdtest.Now.Add(time.Hour))
	if err := os.Chmod(locked, 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(locked, 0o700) })
	if res := cmdtest.Run(t.Context(), nil, "node", "status", "--state-dir", locked); res.Code != 1 || !strings.Contains(res.Stderr, "cannot read the node state directory") {
		t.Errorf("unreadable: exit %d, stderr:\n%s", res.Code, res.Stderr)
	}
}
