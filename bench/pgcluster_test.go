package bench

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// pgCluster is a throwaway PostgreSQL cluster of the fault suite's own, run as a child
// process so that the suite can kill it (SIGKILL of the postmaster, as a crash does)
// and freeze it (SIGSTOP of all its processes), then start it again on the same port
// and data directory.
//
// It runs with synchronous_commit on, so that a commit palyrad saw is in the WAL the
// kernel holds before the answer: killing processes then loses nothing, as on a
// production server. fsync and full_page_writes are off, which only matters when the
// machine itself crashes.
type pgCluster struct {
	bin     string // directory of initdb and postgres
	dir     string // the cluster's directory: data/, the log, the socket
	port    int
	cred    *syscall.Credential // nil: run as the calling user
	logFile *os.File

	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd exited
}

// startCluster initialises a cluster in the new directory dir, starts it and creates
// the database palyra. It is stopped when the test ends; dir is the caller's to
// remove.
func startCluster(tb testing.TB, dir string) *pgCluster {
	tb.Helper()
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
	if len(bins) == 0 {
		tb.Fatal("PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin (apt-get install postgresql)")
	}
	c := &pgCluster{bin: filepath.Dir(bins[len(bins)-1]), dir: dir}
	if err := os.Mkdir(dir, 0o700); err != nil {
		tb.Fatal(err)
	}
	// PostgreSQL refuses to run as root: then it runs as postgres, which must reach
	// the directory (and so its parent) and own it.
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			tb.Fatalf("running as root, PostgreSQL needs the user postgres: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		c.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chmod(c.dir, 0o755); err != nil {
			tb.Fatal(err)
		}
		if err := os.Chown(c.dir, uid, gid); err != nil {
			tb.Fatal(err)
		}
	}
	initdb := c.command("initdb", "-D", c.data(), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C.UTF-8")
	if out, err := initdb.CombinedOutput(); err != nil {
		tb.Fatalf("initdb: %v\n%s", err, out)
	}
	var err error
	if c.logFile, err = os.Create(filepath.Join(c.dir, "postgres.log")); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.logFile.Close() })
	addr := freeAddress(tb)
	_, port, _ := net.SplitHostPort(addr)
	c.port, _ = strconv.Atoi(port)
	if err := c.start(time.Minute); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(c.stop)
	conn, err := pgx.Connect(context.Background(), c.url("postgres"))
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), "create database palyra"); err != nil {
		tb.Fatal(err)
	}
	return c
}

// command returns the PostgreSQL program name with args, run as the cluster's user.
func (c *pgCluster) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(c.bin, name), args...)
	cmd.Dir = c.dir
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	}
	return cmd
}

func (c *pgCluster) data() string { return filepath.Join(c.dir, "data") }

// url is the URL of database db, over TCP on loopback.
func (c *pgCluster) url(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.port, db)
}

// start starts the postmaster and waits until it accepts connections. After a kill
// it retries until the old server's processes are gone (PostgreSQL refuses to start
// while a backend of the killed postmaster still holds the shared memory), at most
// for within.
func (c *pgCluster) start(within time.Duration) error {
	deadline := time.Now().Add(within)
	for attempt := 1; ; attempt++ {
		err := c.startOnce()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("PostgreSQL did not start within %v (%d attempts): %w; its log is %s", within, attempt, err, c.logFile.Name())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (c *pgCluster) startOnce() error {
	cmd := c.command("postgres", "-D", c.data(), "-p", strconv.Itoa(c.port), "-k", c.dir,
		"-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200",
		"-c", "fsync=off", "-c", "full_page_writes=off", "-c", "synchronous_commit=on")
	cmd.Stdout, cmd.Stderr = c.logFile, c.logFile
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case <-exited:
			return fmt.Errorf("postgres exited at start (%v)", cmd.ProcessState)
		case <-deadline:
			_ = cmd.Process.Kill()
			<-exited
			return fmt.Errorf("postgres not accepting connections within 30 s")
		case <-time.After(100 * time.Millisecond):
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		conn, err := pgx.Connect(ctx, c.url("postgres"))
		if err == nil {
			err = conn.Ping(ctx)
			conn.Close(ctx)
		}
		cancel()
		if err == nil {
			c.cmd, c.exited = cmd, exited
			return nil
		}
	}
}

// kill kills the postmaster with SIGKILL and waits until it exited. Its backends
// notice and end on their own, as after a crash; start runs the recovery.
func (c *pgCluster) kill() {
	_ = c.cmd.Process.Kill()
	<-c.exited
}

// freeze stops every process of the cluster (SIGSTOP; the postmaster first, so that
// it starts no new one) and returns the function that continues them.
func (c *pgCluster) freeze() (thaw func()) {
	pm := c.cmd.Process.Pid
	_ = syscall.Kill(pm, syscall.SIGSTOP)
	pids := []int{pm}
	for _, pid := range children(pm) {
		_ = syscall.Kill(pid, syscall.SIGSTOP)
		pids = append(pids, pid)
	}
	return func() {
		for i := len(pids) - 1; i >= 0; i-- {
			_ = syscall.Kill(pids[i], syscall.SIGCONT)
		}
	}
}

// stop shuts the cluster down (SIGINT, PostgreSQL's fast shutdown), killing it after
// 30 s.
func (c *pgCluster) stop() {
	if c.cmd == nil {
		return
	}
	stopProcess(c.cmd.Process, c.exited, syscall.SIGINT, 30*time.Second)
}
