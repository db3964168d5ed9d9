package config_test

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net"
	neturl "net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // the pgx driver of database/sql, which pgtestdb uses
	"github.com/peterldowns/pgtestdb"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/palyra/palyra/cli/internal/cmd/cmdtest"
	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	"github.com/palyra/palyra/internal/eventually"
	"github.com/palyra/palyra/internal/termtest"
)

// builtDir holds the palyrad that palyrad built, if it built one; TestMain removes it.
var builtDir string

func TestMain(m *testing.M) {
	code := m.Run()
	if builtDir != "" {
		os.RemoveAll(builtDir)
	}
	os.Exit(code)
}

// palyrad returns the palyrad binary: $PALYRAD (make test sets it to bin/palyrad), else
// one built from ./server for this test binary.
var palyrad = sync.OnceValues(func() (string, error) {
	if bin := os.Getenv("PALYRAD"); bin != "" {
		return bin, nil
	}
	dir, err := os.MkdirTemp("", "palyra-config-test-")
	if err != nil {
		return "", err
	}
	builtDir = dir
	bin := filepath.Join(dir, "palyrad")
	build := exec.Command("go", "build", "-o", bin, "./server")
	build.Dir = "../../../.."
	if out, err := build.CombinedOutput(); err != nil {
		return "", &buildError{err: err, out: string(out)}
	}
	return bin, nil
})

type buildError struct {
	err error
	out string
}

func (e *buildError) Error() string { return "go build ./server: " + e.err.Error() + "\n" + e.out }

// database returns the URL of a new, empty database on DATABASE_URL's server (make
// test starts one), dropped when the test passes.
func database(t *testing.T) string {
	t.Helper()
	raw := os.Getenv("DATABASE_URL")
	if raw == "" {
		t.Fatal("DATABASE_URL is not set: run `make test`, which starts a throwaway PostgreSQL")
	}
	c, err := pgconn.ParseConfig(raw)
	if err != nil {
		t.Fatal("DATABASE_URL is not a valid PostgreSQL URL")
	}
	options := "sslmode=disable"
	if u, err := neturl.Parse(raw); err == nil && u.RawQuery != "" {
		options = u.RawQuery
	}
	return pgtestdb.Custom(t, pgtestdb.Config{
		DriverName: "pgx", Host: c.Host, Port: strconv.Itoa(int(c.Port)), User: c.User, Password: c.Password,
		Database: c.Database, Options: options,
	}, pgtestdb.NoopMigrator{}).URL()
}

// replica is a palyrad process.
type replica struct {
	url, caFile, owner string
}

// startReplica runs palyrad on dbURL with the master key masterKey and returns once it
// is ready; it is stopped (SIGTERM) when the test ends.
func startReplica(t *testing.T, dbURL, masterKey string) *replica {
	t.Helper()
	bin, err := palyrad()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cmd := exec.Command(bin, "--listen", "127.0.0.1:0", "--data-dir", dir, "--database-url", dbURL, "--log-format", "json")
	cmd.Env = []string{"PALYRA_MASTER_KEY=" + masterKey, "HOME=" + dir, "PATH=" + os.Getenv("PATH")}
	out, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan string, 1)
	exited := make(chan struct{})
	var logs cmdtest.SyncBuffer
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			logs.Write(append(sc.Bytes(), '\n'))
			var rec struct{ Msg, Listen string }
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "palyrad ready" {
				ready <- rec.Listen
			}
		}
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(eventually.Deadline):
			_ = cmd.Process.Kill()
			<-exited
			t.Errorf("palyrad did not stop on SIGTERM")
		}
		if t.Failed() {
			t.Logf("palyrad's log:\n%s", logs.String())
		}
	})
	var addr string
	select {
	case addr = <-ready:
	case <-exited:
		t.Fatalf("palyrad exited before it was ready:\n%s", logs.String())
	case <-time.After(eventually.Deadline):
		t.Fatalf("palyrad not ready:\n%s", logs.String())
	}
	_, port, _ := net.SplitHostPort(addr)
	r := &replica{url: "https://localhost:" + port, caFile: filepath.Join(dir, "ca.pem")}
	if owner, err := os.ReadFile(filepath.Join(dir, "bootstrap-token")); err == nil {
		r.owner = strings.TrimSpace(string(owner))
	}
	return r
}

// env is the environment of a palyra command calling r with token.
func (r *replica) env(token string) map[string]string {
	return map[string]string{"PALYRA_URL": r.url, "PALYRA_CA_FILE": r.caFile, "PALYRA_TOKEN": token}
}

// run runs palyra against r as the owner and expects exit code want.
func run(t *testing.T, env map[string]string, want int, args ...string) cmdtest.Result {
	t.Helper()
	res := cmdtest.Run(t.Context(), env, args...)
	if res.Code != want {
		t.Fatalf("palyra %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), res.Code, want, res.Stdout, res.Stderr)
	}
	return res
}

// wantRow checks that a line of out has fields, in order, as its first fields.
func wantRow(t *testing.T, what, out string, fields ...string) {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		got := strings.Fields(line)
		if len(got) >= len(fields) && slices.Equal(got[:len(fields)], fields) {
			return
		}
	}
	t.Errorf("%s has no row %q:\n%s", what, strings.Join(fields, " "), out)
}

// TestConfigCommands runs every `palyra config` command against two real palyrad
// replicas on one database: a change through A shows on B with source database, a
// stale revision and bad values are refused, export → apply round-trips, history shows
// the revisions and rollback restores one.
func TestConfigCommands(t *testing.T) {
	t.Parallel()
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	masterKey := base64.StdEncoding.EncodeToString(key)
	dbURL := database(t)
	a := startReplica(t, dbURL, masterKey)
	b := startReplica(t, dbURL, masterKey)
	if a.owner == "" {
		a, b = b, a // the second to start found the owner made
	}
	envA, envB := a.env(a.owner), b.env(a.owner)

	res := run(t, envA, 0, "config", "get")
	wantRow(t, "get", res.Stdout, "KEY", "VALUE", "SOURCE", "RUNTIME")
	wantRow(t, "get", res.Stdout, "nodes.heartbeat_interval", "15s", "default", "yes")
	wantRow(t, "get", res.Stdout, "listen", "127.0.0.1:0", "flag", "no")
	wantRow(t, "get", res.Stdout, "master_key", "(set)", "environment", "no")
	cmdtest.WantOutput(t, "get stderr", res.Stderr, "configuration revision 0")

	res = run(t, envA, 0, "config", "set", "nodes.heartbeat_interval", "20s", "--reason", "issue 12")
	wantRow(t, "set", res.Stdout, "nodes.heartbeat_interval", "set", "15s", "20s")
	cmdtest.WantOutput(t, "set stderr", res.Stderr, "configuration revision 1")
	eventually.True(t, "B shows the new value from the database", func() bool {
		res := cmdtest.Run(t.Context(), envB, "config", "get", "nodes.heartbeat_interval")
		return res.Code == 0 && strings.Join(strings.Fields(res.Stdout), " ") == "KEY VALUE SOURCE RUNTIME nodes.heartbeat_interval 20s database (revision 1) yes"
	})

	// Refusals change nothing.
	res = run(t, envA, 1, "config", "set", "nodes.heartbeat_interval", "25s", "--expected-revision", "0")
	cmdtest.WantOutput(t, "stale set", res.Stderr, "revision 1, not 0")
	res = run(t, envA, 1, "config", "set", "nodes.heartbeat_interval", "fast")
	cmdtest.WantOutput(t, "bad value", res.Stderr, "nodes.heartbeat_interval", "duration")
	res = run(t, envA, 1, "config", "set", "pairing.pin_digits", "20")
	cmdtest.WantOutput(t, "out of range", res.Stderr, "pairing.pin_digits", "between 6 and 12")
	res = run(t, envA, 1, "config", "set", "listen", "0.0.0.0:1")
	cmdtest.WantOutput(t, "bootstrap", res.Stderr, "bootstrap", "--listen", "PALYRA_LISTEN")
	res = run(t, envA, 1, "config", "unset", "nodes.heartbeat_intervl")
	cmdtest.WantOutput(t, "unknown key", res.Stderr, `did you mean "nodes.heartbeat_interval"`)
	run(t, envA, 2, "config", "set", "nodes.heartbeat_interval")
	run(t, envA, 2, "config", "rollback", "zero")

	// Export, edit, diff, apply: one revision for the file.
	res = run(t, envA, 0, "config", "export")
	exported := res.Stdout
	cmdtest.WantOutput(t, "export", exported, "[nodes]", "heartbeat_interval = '20s'", "pin_digits = 8", "[log]", "level = 'info'")
	file := filepath.Join(t.TempDir(), "runtime.toml")
	edited := strings.Replace(strings.Replace(exported, "'20s'", "'30s'", 1), "level = 'info'", "level = 'debug'", 1)
	if err := os.WriteFile(file, []byte(edited), 0o600); err != nil {
		t.Fatal(err)
	}
	res = run(t, envA, 0, "config", "diff", "-f", file)
	// Every key of the file is stored; two change their effective values.
	wantRow(t, "diff", res.Stdout, "log.level", "set", "info", "debug")
	wantRow(t, "diff", res.Stdout, "nodes.heartbeat_interval", "set", "20s", "30s")
	wantRow(t, "diff", res.Stdout, "pairing.pin_digits", "set", "8", "8")
	res = run(t, envA, 0, "config", "apply", "-f", file, "--dry-run")
	cmdtest.WantOutput(t, "dry run", res.Stderr, "would make configuration revision 2")
	run(t, envA, 0, "config", "history")
	res = run(t, envA, 0, "config", "apply", "-f", file, "--reason", "from file")
	cmdtest.WantOutput(t, "apply", res.Stderr, "configuration revision 2")
	// Applying the same file again changes nothing.
	res = run(t, envA, 0, "config", "apply", "-f", file)
	cmdtest.WantOutput(t, "apply again", res.Stderr, "nothing to change")
	// The export of the applied state round-trips to the file.
	res = run(t, envB, 0, "config", "export")
	if strings.SplitN(res.Stdout, "\n", 2)[1] != strings.SplitN(edited, "\n", 2)[1] {
		t.Errorf("export after apply:\n%s\nwant the applied file:\n%s", res.Stdout, edited)
	}
	res = run(t, envA, 0, "config", "diff", "-f", file)
	cmdtest.WantOutput(t, "diff after apply", res.Stderr, "no differences")

	res = run(t, envA, 0, "config", "history", "-o", "json")
	var hist controlplanev1.ListConfigRevisionsResponse
	if err := protojson.Unmarshal([]byte(res.Stdout), &hist); err != nil || len(hist.GetRevisions()) != 2 ||
		hist.GetRevisions()[0].GetReason() != "from file" || hist.GetRevisions()[0].GetChangeCount() != 7 {
		t.Errorf("history: %v\n%s", err, res.Stdout)
	}
	res = run(t, envA, 0, "config", "history", "2")
	wantRow(t, "history 2", res.Stdout, "2")
	wantRow(t, "history 2", res.Stdout, "nodes.heartbeat_interval", "set", "20s", "30s")
	wantRow(t, "history 2", res.Stdout, "pairing.pin_digits", "set", "-", "8")

	res = run(t, envB, 0, "config", "rollback", "1", "--reason", "too slow")
	cmdtest.WantOutput(t, "rollback", res.Stderr, "configuration revision 3")
	wantRow(t, "rollback", res.Stdout, "nodes.heartbeat_interval", "set", "30s", "20s")
	wantRow(t, "rollback", res.Stdout, "log.level", "unset", "debug", "info")
	eventually.True(t, "A back at revision 1's values", func() bool {
		res := cmdtest.Run(t.Context(), envA, "config", "get", "-o", "json")
		var cfg controlplanev1.GetConfigResponse
		if res.Code != 0 || protojson.Unmarshal([]byte(res.Stdout), &cfg) != nil || cfg.GetRevision() != 3 {
			return false
		}
		for _, s := range cfg.GetSettings() {
			if s.GetKey() == "nodes.heartbeat_interval" {
				return s.GetValue().GetText() == "20s"
			}
		}
		return false
	})
	res = run(t, envA, 0, "config", "unset", "nodes.heartbeat_interval", "--reason", "\x1b]0;owned\x07 done")
	wantRow(t, "unset", res.Stdout, "nodes.heartbeat_interval", "unset", "20s", "15s")
	res = run(t, envA, 0, "config", "history")
	termtest.AssertSafe(t, "history", res.Stdout+res.Stderr)
	wantRow(t, "history", res.Stdout, "4")
}
