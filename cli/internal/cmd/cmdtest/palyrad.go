package cmdtest

import (
	"bufio"
	"encoding/json"
	"net"
	neturl "net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // the pgx driver of database/sql, which pgtestdb uses
	"github.com/peterldowns/pgtestdb"

	"github.com/palyra/palyra/internal/eventually"
)

// builtDir holds the palyrad that Palyrad built, if it built one; RemoveBuilt removes
// it.
var builtDir string

// RemoveBuilt removes the palyrad that Palyrad built, if any: call it from TestMain
// after the tests ran.
func RemoveBuilt() {
	if builtDir != "" {
		os.RemoveAll(builtDir)
	}
}

// Palyrad returns the palyrad binary: $PALYRAD (make test sets it to bin/palyrad), else
// one built from ./server for this test binary.
var Palyrad = sync.OnceValues(func() (string, error) {
	if bin := os.Getenv("PALYRAD"); bin != "" {
		return bin, nil
	}
	dir, err := os.MkdirTemp("", "palyra-cli-test-")
	if err != nil {
		return "", err
	}
	builtDir = dir
	bin := filepath.Join(dir, "palyrad")
	build := exec.Command("go", "build", "-o", bin, "./server")
	build.Dir = moduleRoot()
	if out, err := build.CombinedOutput(); err != nil {
		return "", &buildError{err: err, out: string(out)}
	}
	return bin, nil
})

// moduleRoot is the directory of go.mod, from this package's test working directory
// (cli/internal/cmd/<command>).
func moduleRoot() string { return "../../../.." }

type buildError struct {
	err error
	out string
}

func (e *buildError) Error() string { return "go build ./server: " + e.err.Error() + "\n" + e.out }

// Database returns the URL of a new, empty database on DATABASE_URL's server (make
// test starts one), dropped when the test passes.
func Database(t *testing.T) string {
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

// Replica is a palyrad process.
type Replica struct {
	// URL is its base URL; CAFile its CA certificate.
	URL, CAFile string
	// Owner is the owner's token, when this replica created the owner.
	Owner string
}

// StartReplica runs palyrad on dbURL with the master key masterKey and the extra
// arguments args, and returns once it is ready; it is stopped (SIGTERM) when the test
// ends.
func StartReplica(t *testing.T, dbURL, masterKey string, args ...string) *Replica {
	t.Helper()
	bin, err := Palyrad()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cmd := exec.Command(bin, append([]string{"--listen", "127.0.0.1:0", "--data-dir", dir, "--database-url", dbURL, "--log-format", "json"}, args...)...)
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
	var logs SyncBuffer
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
	r := &Replica{URL: "https://localhost:" + port, CAFile: filepath.Join(dir, "ca.pem")}
	if owner, err := os.ReadFile(filepath.Join(dir, "bootstrap-token")); err == nil {
		r.Owner = strings.TrimSpace(string(owner))
	}
	return r
}

// Env is the environment of a palyra command calling r with token.
func (r *Replica) Env(token string) map[string]string {
	return map[string]string{"PALYRA_URL": r.URL, "PALYRA_CA_FILE": r.CAFile, "PALYRA_TOKEN": token}
}
