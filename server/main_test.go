package main

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/palyra/palyra/internal/buildinfo"
	"github.com/palyra/palyra/server/internal/config"
	"github.com/palyra/palyra/server/internal/identity"
	"github.com/palyra/palyra/server/internal/store/storetest"
)

// binDir holds the palyra CLI binary, built at most once per test binary.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "palyrad-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// binary is a program of this repository that tests run: the file its environment
// variable names (make test sets PALYRAD and PALYRA to the bin/ it has just built),
// else built at most once per test binary with the go command on PATH.
type binary struct {
	name, pkg, env string // the file name in binDir; the package to build, relative to server/; the variable

	once sync.Once
	path string
	err  error
}

var (
	cliBin    = &binary{name: "palyra", pkg: "../cli", env: "PALYRA"}
	daemonBin = &binary{name: "palyrad", pkg: ".", env: "PALYRAD"}
)

// build returns the binary's path, building it unless the environment names one or it
// was built already.
func (b *binary) build(t *testing.T) string {
	t.Helper()
	b.once.Do(func() {
		if path := os.Getenv(b.env); path != "" {
			b.path = path
			return
		}
		path := filepath.Join(binDir, b.name)
		out, err := exec.Command("go", "build", "-o", path, b.pkg).CombinedOutput()
		if err != nil {
			b.err = fmt.Errorf("go build %s: %v\n%s", b.pkg, err, out)
			return
		}
		b.path = path
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// cliBinary returns the real palyra CLI (../cli).
func cliBinary(t *testing.T) string { return cliBin.build(t) }

// daemonBinary returns the real palyrad, for tests that must kill it as a process.
func daemonBinary(t *testing.T) string { return daemonBin.build(t) }

// syncBuffer is an io.Writer safe for the daemon's goroutines and the test to share.
// It reports the address of the first "palyrad ready" log line on ready.
type syncBuffer struct {
	mu       sync.Mutex // guards the following
	buf      bytes.Buffer
	signaled bool

	ready chan string // receives the listen address once
}

var readyLine = regexp.MustCompile(`msg="palyrad ready" listen=(\S+)`)

func newSyncBuffer() *syncBuffer { return &syncBuffer{ready: make(chan string, 1)} }

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.buf.Write(p)
	if !b.signaled {
		if m := readyLine.FindStringSubmatch(b.buf.String()); m != nil {
			b.signaled = true
			b.ready <- m[1]
		}
	}
	return n, err
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// revocationNotified reports whether a palyrad's log shows that it received what
// ("device:ID" or "certificate:FINGERPRINT") on the revocation channel.
func revocationNotified(log, what string) bool {
	for line := range strings.Lines(log) {
		if strings.Contains(line, `msg="revocation received"`) && strings.Contains(line, what) {
			return true
		}
	}
	return false
}

// getenv returns a fake environment made of env; the test process's own is never read.
func getenv(env map[string]string) func(string) string {
	return func(k string) string { return env[k] }
}

// palyrad runs a command that ends by itself and returns its exit code and output.
func palyrad(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	var out, errOut bytes.Buffer
	code = run(ctx, args, getenv(env), &out, &errOut)
	return code, out.String(), errOut.String()
}

// runningDaemon is palyrad's run in a goroutine, as `palyrad` without a command runs it.
type runningDaemon struct {
	addr   string // the bound listen address
	stderr *syncBuffer
	cancel context.CancelFunc
	done   chan int // receives run's exit code
}

// startDaemon starts palyrad and waits until it logs that it is ready. It is stopped
// when the test ends, unless the test stops it first.
func startDaemon(t *testing.T, env map[string]string, args ...string) *runningDaemon {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	d := &runningDaemon{stderr: newSyncBuffer(), cancel: cancel, done: make(chan int, 1)}
	stdout := newSyncBuffer()
	go func() { d.done <- run(ctx, args, getenv(env), stdout, d.stderr) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-d.done:
		case <-time.After(time.Minute):
			t.Errorf("palyrad did not stop within a minute; its log:\n%s", d.stderr)
		}
	})
	select {
	case d.addr = <-d.stderr.ready:
	case code := <-d.done:
		d.done <- code // for the cleanup
		t.Fatalf("palyrad exited with %d before it was ready; its log:\n%s", code, d.stderr)
	case <-time.After(time.Minute):
		t.Fatalf("palyrad was not ready within a minute; its log:\n%s", d.stderr)
	}
	return d
}

// stop cancels the daemon's context, as SIGTERM does, and returns run's exit code.
func (d *runningDaemon) stop(t *testing.T) int {
	t.Helper()
	d.cancel()
	select {
	case code := <-d.done:
		d.done <- code // for the cleanup
		return code
	case <-time.After(time.Minute):
		t.Fatalf("palyrad did not stop within a minute; its log:\n%s", d.stderr)
		return -1
	}
}

// palyra runs the CLI binary with an environment holding only the API token (when not
// empty) as PALYRA_TOKEN.
func palyra(t *testing.T, token string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	env := []string{}
	if token != "" {
		env = append(env, "PALYRA_TOKEN="+token)
	}
	return runCLI(t, env, "", args...)
}

// runCLI runs the CLI binary with env as its whole environment and returns its exit code
// and output; stdin is empty (/dev/null, not a terminal) unless given.
func runCLI(t *testing.T, env []string, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	bin := cliBinary(t) // built before the minute starts: a busy machine builds slowly
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exitErr):
		code = exitErr.ExitCode()
	default:
		t.Fatalf("run palyra %q: %v", args, err)
	}
	return code, out.String(), errOut.String()
}

// bootstrapToken reads the owner's token that palyrad's first start wrote.
func bootstrapToken(t *testing.T, dataDir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dataDir, "bootstrap-token"))
	if err != nil {
		t.Fatalf("bootstrap token: %v", err)
	}
	return strings.TrimSpace(string(b))
}

// caFingerprint computes the fingerprint of the certificate in <dataDir>/ca.pem.
func caFingerprint(t *testing.T, dataDir string) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dataDir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	block, rest := pem.Decode(raw)
	if block == nil || block.Type != "CERTIFICATE" || len(bytes.TrimSpace(rest)) != 0 {
		t.Fatalf("ca.pem does not hold exactly one PEM certificate:\n%s", raw)
	}
	return identity.Fingerprint(block.Bytes)
}

// freePort returns a TCP port on 127.0.0.1 that nothing listened on a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// statusTable parses the table of `palyra status`: a name, two or more spaces, a value.
func statusTable(t *testing.T, out string) map[string]string {
	t.Helper()
	row := regexp.MustCompile(`^(\S+(?: \S+)*)  +(.*)$`)
	rows := map[string]string{}
	for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		m := row.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("status line %q is not a table row; the output:\n%s", line, out)
		}
		rows[m[1]] = m[2]
	}
	return rows
}

var schemaCurrent = regexp.MustCompile(`^schema is current at version ([1-9][0-9]*)\n$`)

func TestCommandLine(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		args       []string
		env        map[string]string
		wantCode   int
		wantStdout []string
		wantStderr string // exact, when not empty
	}{
		"version": {
			args:       []string{"version"},
			wantCode:   0,
			wantStdout: []string{"palyrad " + buildinfo.Version() + "\n"},
		},
		"help": {
			args:     []string{"--help"},
			wantCode: 0,
			wantStdout: []string{
				"--listen", "PALYRA_LISTEN", "--data-dir", "PALYRA_DATA_DIR",
				"--database-url", "PALYRA_DATABASE_URL", "--tls-san", "PALYRA_TLS_SANS",
				"--compat-model", "PALYRA_COMPAT_MODELS", "--config", "PALYRA_CONFIG",
				"PALYRA_MASTER_KEY", "file key tls.server_cert_lifetime",
				`--data-dir path`, `(default /home/ada/.local/share/palyra)`, "migrate", "version",
			},
		},
		"help of migrate": {
			args:       []string{"migrate", "-h"},
			wantCode:   0,
			wantStdout: []string{"palyrad migrate", "--database-url", "PALYRA_DATABASE_URL"},
		},
		"unknown flag": {
			args:       []string{"--no-such-flag"},
			wantCode:   2,
			wantStderr: "palyrad: unknown flag: --no-such-flag\nRun 'palyrad --help' for usage.\n",
		},
		"unknown command": {
			args:       []string{"frobnicate"},
			wantCode:   2,
			wantStderr: "palyrad: unknown command \"frobnicate\" for \"palyrad\"\nRun 'palyrad --help' for usage.\n",
		},
		"argument to version": {
			args:       []string{"version", "extra"},
			wantCode:   2,
			wantStderr: "palyrad: unknown command \"extra\" for \"palyrad version\"\nRun 'palyrad --help' for usage.\n",
		},
		"flag without its value": {
			args:       []string{"migrate", "--listen"},
			wantCode:   2,
			wantStderr: "palyrad: flag needs an argument: --listen\nRun 'palyrad --help' for usage.\n",
		},
		"bad setting from a flag": {
			args:       []string{"--listen", "nope"},
			wantCode:   1,
			wantStderr: "palyrad: config: listen (from flag --listen): must be host:port, got \"nope\"\n",
		},
		"bad setting from the environment": {
			env:        map[string]string{"PALYRA_LOG_LEVEL": "loud"},
			wantCode:   1,
			wantStderr: "palyrad: config: log.level (from environment variable PALYRA_LOG_LEVEL): must be debug, info, warn or error, got \"loud\"\n",
		},
		"bad setting for migrate": {
			args:       []string{"migrate", "--server-max-message-bytes", "1"},
			wantCode:   1,
			wantStderr: "palyrad: config: server.max_message_bytes (from flag --server-max-message-bytes): must be between 1024 and 67108864 bytes, got 1\n",
		},
		"missing config file": {
			args:       []string{"--config", "/nonexistent/palyrad.toml"},
			wantCode:   1,
			wantStderr: "palyrad: config: read configuration file: open /nonexistent/palyrad.toml: no such file or directory\n",
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			env := map[string]string{"HOME": "/home/ada"}
			for k, v := range tt.env {
				env[k] = v
			}
			code, stdout, stderr := palyrad(t, env, tt.args...)
			if code != tt.wantCode {
				t.Errorf("exit code = %d, want %d; stderr:\n%s", code, tt.wantCode, stderr)
			}
			for _, w := range tt.wantStdout {
				if !strings.Contains(stdout, w) {
					t.Errorf("stdout does not contain %q:\n%s", w, stdout)
				}
			}
			if tt.wantStderr != "" && stderr != tt.wantStderr {
				t.Errorf("stderr = %q, want %q", stderr, tt.wantStderr)
			}
			if tt.wantCode == 0 && stderr != "" {
				t.Errorf("stderr = %q, want nothing", stderr)
			}
			if tt.wantCode != 0 && stdout != "" {
				t.Errorf("stdout = %q, want nothing", stdout)
			}
		})
	}
}

// TestHelpListsEverySetting checks the help against the flags that config registers:
// every flag and the environment variable its usage names.
func TestHelpListsEverySetting(t *testing.T) {
	t.Parallel()
	code, help, _ := palyrad(t, map[string]string{"HOME": "/home/ada"}, "--help")
	if code != 0 {
		t.Fatalf("palyrad --help exited with %d", code)
	}
	fs := pflag.NewFlagSet("palyrad", pflag.ContinueOnError)
	config.RegisterFlags(fs, getenv(nil))
	envName := regexp.MustCompile(`\(env (PALYRA_[A-Z_]+)`)
	n := 0
	fs.VisitAll(func(f *pflag.Flag) {
		n++
		if !strings.Contains(help, "--"+f.Name+" ") {
			t.Errorf("help lacks --%s", f.Name)
		}
		m := envName.FindStringSubmatch(f.Usage)
		if m == nil {
			t.Errorf("--%s does not name its environment variable: %q", f.Name, f.Usage)
			return
		}
		if !strings.Contains(help, m[1]) {
			t.Errorf("help lacks %s", m[1])
		}
	})
	if n < 15 {
		t.Errorf("config registers only %d flags", n)
	}
	if strings.Contains(help, "--master-key") {
		t.Error("help offers --master-key")
	}
}

func TestMigrate(t *testing.T) {
	t.Parallel()
	const password = "Tr0ub4dor-and-3"
	tests := map[string]struct {
		databaseURL func(t *testing.T) string
		wantCode    int
		check       func(t *testing.T, stdout, stderr string)
	}{
		"current schema": {
			databaseURL: func(t *testing.T) string { return storetest.URL(t) },
			wantCode:    0,
			check: func(t *testing.T, stdout, _ string) {
				if !schemaCurrent.MatchString(stdout) {
					t.Errorf("stdout = %q, want %q", stdout, schemaCurrent)
				}
			},
		},
		"unreachable database": {
			databaseURL: func(*testing.T) string {
				return "postgres://palyra:" + password + "@127.0.0.1:1/palyra?sslmode=disable&connect_timeout=5"
			},
			wantCode: 1,
			check: func(t *testing.T, stdout, stderr string) {
				if stdout != "" {
					t.Errorf("stdout = %q, want nothing", stdout)
				}
				if !strings.HasPrefix(stderr, "palyrad: ") || !strings.Contains(stderr, "127.0.0.1") {
					t.Errorf("stderr does not say which database failed:\n%s", stderr)
				}
				if strings.Contains(stderr, password) {
					t.Errorf("stderr contains the password:\n%s", stderr)
				}
			},
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dataDir := t.TempDir()
			code, stdout, stderr := palyrad(t, nil, "migrate", "--database-url", tt.databaseURL(t), "--data-dir", dataDir)
			if code != tt.wantCode {
				t.Fatalf("exit code = %d, want %d; stdout %q; stderr:\n%s", code, tt.wantCode, stdout, stderr)
			}
			tt.check(t, stdout, stderr)
		})
	}
}

// TestDaemonWithCLI runs palyrad as a user does and asks it about itself with the real
// palyra binary; then it stops and restarts it on the same data directory and database.
func TestDaemonWithCLI(t *testing.T) {
	t.Parallel()
	cliBinary(t) // built before the daemon starts, so that the build does not eat into its timeouts
	dataDir := t.TempDir()
	databaseURL := storetest.URL(t)
	const replicaID = "e2e-replica-1"

	code, stdout, stderr := palyrad(t, nil, "migrate", "--database-url", databaseURL, "--data-dir", dataDir)
	m := schemaCurrent.FindStringSubmatch(stdout)
	if code != 0 || m == nil {
		t.Fatalf("palyrad migrate: exit code %d, stdout %q, stderr:\n%s", code, stdout, stderr)
	}
	schemaVersion := m[1]

	d := startDaemon(t, nil, "--listen", "127.0.0.1:0", "--data-dir", dataDir, "--database-url", databaseURL, "--replica-id", replicaID)
	caFile := filepath.Join(dataDir, "ca.pem")
	fingerprint := caFingerprint(t, dataDir)
	owner := bootstrapToken(t, dataDir)
	if !strings.Contains(d.stderr.String(), "ca_fingerprint="+fingerprint) {
		t.Errorf("the ready line does not log the CA fingerprint %s:\n%s", fingerprint, d.stderr)
	}
	url := "https://" + d.addr
	_, port, _ := net.SplitHostPort(d.addr)
	closedURL := "https://127.0.0.1:" + strconv.Itoa(freePort(t))

	t.Run("palyra status", func(t *testing.T) {
		tests := map[string]struct {
			args       []string
			wantCode   int
			wantStderr []string
			check      func(t *testing.T, stdout string)
		}{
			"table": {
				args: []string{"status", "--url", url, "--ca-file", caFile},
				check: func(t *testing.T, stdout string) {
					rows := statusTable(t, stdout)
					want := map[string]*regexp.Regexp{
						"Version":            regexp.MustCompile(`^` + regexp.QuoteMeta(buildinfo.Version()) + `$`),
						"Replica":            regexp.MustCompile(`^` + replicaID + ` on \S+$`),
						"Listen":             regexp.MustCompile(`^` + regexp.QuoteMeta(d.addr) + `$`),
						"Uptime":             regexp.MustCompile(`^(\d+h)?(\d+m)?\d+s \(since \S+\)$`), // however long the start took
						"Database":           regexp.MustCompile(`^available \(external, PostgreSQL \d+(\.\d+)?, schema version ` + schemaVersion + `, ping [^)]+\)$`),
						"CA":                 regexp.MustCompile(`^` + fingerprint + ` \(CN=Palyra Root CA [^)]*, expires \S+\)$`),
						"Server certificate": regexp.MustCompile(`^sha256:[0-9a-f]{64} \(CN=localhost, expires \S+\), renewed automatically$`),
					}
					for k, re := range want {
						if v, ok := rows[k]; !ok || !re.MatchString(v) {
							t.Errorf("%s = %q, want it to match %s", k, v, re)
						}
					}
					if len(rows) != len(want) {
						t.Errorf("status has %d rows, want %d:\n%s", len(rows), len(want), stdout)
					}
				},
			},
			"json": {
				args: []string{"status", "--url", url, "--ca-file", caFile, "-o", "json"},
				check: func(t *testing.T, stdout string) {
					var got struct {
						ReplicaID     string `json:"replicaId"`
						ListenAddress string `json:"listenAddress"`
						Database      struct {
							State         string `json:"state"`
							Embedded      bool   `json:"embedded"`
							SchemaVersion string `json:"schemaVersion"`
						} `json:"database"`
						CertificateAuthority struct {
							Fingerprint string `json:"fingerprint"`
						} `json:"certificateAuthority"`
					}
					if err := json.Unmarshal([]byte(stdout), &got); err != nil {
						t.Fatalf("stdout is not JSON: %v\n%s", err, stdout)
					}
					if got.ReplicaID != replicaID || got.ListenAddress != d.addr {
						t.Errorf("replicaId, listenAddress = %q, %q; want %q, %q", got.ReplicaID, got.ListenAddress, replicaID, d.addr)
					}
					if got.Database.State != "DATABASE_STATE_AVAILABLE" || got.Database.Embedded || got.Database.SchemaVersion != schemaVersion {
						t.Errorf("database = %+v, want available, external, schema version %s", got.Database, schemaVersion)
					}
					if got.CertificateAuthority.Fingerprint != fingerprint {
						t.Errorf("certificateAuthority.fingerprint = %q, want %q", got.CertificateAuthority.Fingerprint, fingerprint)
					}
				},
			},
			"no trust given": {
				args:       []string{"status", "--url", url},
				wantCode:   1,
				wantStderr: []string{"not signed by a CA you trust", "--ca-file", "--ca-fingerprint"},
			},
			"pinned fingerprint, host localhost": {
				args: []string{"status", "--url", "https://localhost:" + port, "--ca-fingerprint", fingerprint, "-o", "json"},
				check: func(t *testing.T, stdout string) {
					var got struct {
						ReplicaID string `json:"replicaId"`
					}
					if err := json.Unmarshal([]byte(stdout), &got); err != nil || got.ReplicaID != replicaID {
						t.Errorf("replicaId %q (%v), want %q:\n%s", got.ReplicaID, err, replicaID, stdout)
					}
				},
			},
			"wrong fingerprint": {
				args:       []string{"status", "--url", "https://localhost:" + port, "--ca-fingerprint", "sha256:" + strings.Repeat("0", 64)},
				wantCode:   1,
				wantStderr: []string{"no CA certificate with fingerprint sha256:" + strings.Repeat("0", 64), fingerprint},
			},
			"closed port": {
				args:       []string{"status", "--url", closedURL, "--ca-file", caFile},
				wantCode:   1,
				wantStderr: []string{"cannot connect to " + closedURL, "connection refused"},
			},
		}
		for name, tt := range tests {
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				code, stdout, stderr := palyra(t, owner, tt.args...)
				if code != tt.wantCode {
					t.Fatalf("exit code = %d, want %d; stdout:\n%s\nstderr:\n%s", code, tt.wantCode, stdout, stderr)
				}
				for _, w := range tt.wantStderr {
					if !strings.Contains(stderr, w) {
						t.Errorf("stderr does not contain %q:\n%s", w, stderr)
					}
				}
				if tt.wantCode != 0 && stdout != "" {
					t.Errorf("stdout = %q, want nothing", stdout)
				}
				if tt.check != nil {
					tt.check(t, stdout)
				}
			})
		}
	})

	if code := d.stop(t); code != 0 {
		t.Fatalf("palyrad exited with %d after a graceful stop, want 0; its log:\n%s", code, d.stderr)
	}
	if log := d.stderr.String(); !strings.Contains(log, `msg="palyrad stopped"`) {
		t.Errorf("palyrad did not log that it stopped:\n%s", log)
	}
	if code, _, stderr := palyra(t, owner, "status", "--url", url, "--ca-file", caFile); code != 1 || !strings.Contains(stderr, "connection refused") {
		t.Errorf("palyra status after the stop: exit code %d, stderr %q; want 1 and connection refused", code, stderr)
	}

	// The second start finds the CA in the database and unseals it with master.key.
	d = startDaemon(t, nil, "--listen", "127.0.0.1:0", "--data-dir", dataDir, "--database-url", databaseURL)
	if got := caFingerprint(t, dataDir); got != fingerprint {
		t.Errorf("after a restart the CA fingerprint is %s, want %s", got, fingerprint)
	}
	_, port, _ = net.SplitHostPort(d.addr)
	code, stdout, stderr = palyra(t, owner, "status", "--url", "https://localhost:"+port, "--ca-fingerprint", fingerprint)
	if code != 0 {
		t.Fatalf("palyra status with the old pin after a restart: exit code %d, stderr:\n%s", code, stderr)
	}
	if replica := statusTable(t, stdout)["Replica"]; strings.HasPrefix(replica, replicaID+" ") {
		t.Errorf("Replica = %q: the replica id of the first start was kept without --replica-id", replica)
	}
	if code := d.stop(t); code != 0 {
		t.Fatalf("palyrad exited with %d after the second graceful stop, want 0; its log:\n%s", code, d.stderr)
	}
}

// TestSettingsFromEnvironment starts palyrad configured through PALYRA_* variables only,
// and with a flag that overrides one of them.
func TestSettingsFromEnvironment(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		args       []string
		wantListen func(envPort int, addr string) bool
	}{
		"environment only": {
			wantListen: func(envPort int, addr string) bool { return addr == "127.0.0.1:"+strconv.Itoa(envPort) },
		},
		"flag over environment": {
			args:       []string{"--listen", "127.0.0.1:0"},
			wantListen: func(envPort int, addr string) bool { return addr != "127.0.0.1:"+strconv.Itoa(envPort) },
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			port := freePort(t)
			env := map[string]string{
				"PALYRA_LISTEN":       "127.0.0.1:" + strconv.Itoa(port),
				"PALYRA_DATA_DIR":     t.TempDir(),
				"PALYRA_DATABASE_URL": storetest.URL(t),
				"PALYRA_REPLICA_ID":   "from-env",
				"PALYRA_LOG_FORMAT":   "text",
			}
			d := startDaemon(t, env, tt.args...)
			if !tt.wantListen(port, d.addr) {
				t.Errorf("palyrad listens on %s; PALYRA_LISTEN was 127.0.0.1:%d, flags %q", d.addr, port, tt.args)
			}
			if log := d.stderr.String(); !strings.Contains(log, "replica_id=from-env") {
				t.Errorf("PALYRA_REPLICA_ID was not used:\n%s", log)
			}
			if _, err := os.Stat(filepath.Join(env["PALYRA_DATA_DIR"], "ca.pem")); err != nil {
				t.Errorf("PALYRA_DATA_DIR was not used: %v", err)
			}
			conn, err := net.DialTimeout("tcp", d.addr, 10*time.Second)
			if err != nil {
				t.Fatalf("dial %s: %v", d.addr, err)
			}
			conn.Close()
			if code := d.stop(t); code != 0 {
				t.Errorf("palyrad exited with %d, want 0; its log:\n%s", code, d.stderr)
			}
		})
	}
}
