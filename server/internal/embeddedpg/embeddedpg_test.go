package embeddedpg

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// These tests start real PostgreSQL servers from the system's binaries. As
// root they run them as the postgres user, as palyrad does.

// baseDir returns a fresh directory that the postgres user can traverse.
// (t.TempDir is 0700 and root-owned, so postgres could not reach inside it.)
// The path stays short because the socket path must fit in 107 bytes.
func baseDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "epg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove %s: %v", dir, err)
		}
	})
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// requireBinaries skips the test when PostgreSQL is not installed.
func requireBinaries(t *testing.T) {
	t.Helper()
	if _, err := findBinDir("", "", ""); err != nil {
		t.Skipf("needs the PostgreSQL server binaries: %v", err)
	}
}

// testLogger sends the cluster's logs to the test log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// start starts a cluster and stops it when the test ends (before baseDir's
// cleanup removes the directory: cleanups run last-registered first).
func start(t *testing.T, opts Options) *Cluster {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	c, err := Start(t.Context(), opts)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { stop(t, c) })
	return c
}

func stop(t *testing.T, c *Cluster) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.Stop(ctx); err != nil {
		t.Errorf("Stop: %v", err)
	}
}

func connect(t *testing.T, rawURL string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), rawURL)
	if err != nil {
		t.Fatalf("connect to %s: %v", rawURL, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func show(t *testing.T, conn *pgx.Conn, setting string) string {
	t.Helper()
	var v string
	if err := conn.QueryRow(t.Context(), "SHOW "+setting).Scan(&v); err != nil {
		t.Fatalf("SHOW %s: %v", setting, err)
	}
	return v
}

func TestLifecycle(t *testing.T) {
	t.Parallel()
	requireBinaries(t)
	// A space and a quote in the path: settings must survive quoting.
	dir := filepath.Join(baseDir(t), "it's pg")
	opts := Options{Dir: dir, Durable: true}

	c := start(t, opts)
	if !c.Initialized() {
		t.Error("first Start: Initialized() = false, want true")
	}
	if c.Adopted() {
		t.Error("first Start: Adopted() = true, want false")
	}
	if c.TCPAddress() != "" {
		t.Errorf("TCPAddress() = %q, want empty in socket-only mode", c.TCPAddress())
	}
	u, err := url.Parse(c.URL())
	if err != nil {
		t.Fatalf("URL() %q: %v", c.URL(), err)
	}
	if u.Host != "" || u.Path != "/palyra" || u.Query().Get("host") != dir || u.Query().Get("port") != "5432" {
		t.Errorf("URL() = %q, want the socket form for database palyra in %s", c.URL(), dir)
	}
	fi, err := os.Stat(filepath.Join(dir, ".s.PGSQL.5432"))
	if err != nil || fi.Mode()&fs.ModeSocket == 0 {
		t.Errorf("no Unix socket inside Dir: %v (mode %v)", err, fi)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("Dir mode = %v (err %v), want 0700", fi.Mode().Perm(), err)
	}

	conn := connect(t, c.URL())
	if got := show(t, conn, "listen_addresses"); got != "" {
		t.Errorf("listen_addresses = %q, want '' (no TCP listener)", got)
	}
	if got := show(t, conn, "fsync"); got != "on" {
		t.Errorf("durable cluster: fsync = %q, want on", got)
	}
	var db string
	if err := conn.QueryRow(t.Context(), "SELECT current_database()").Scan(&db); err != nil || db != "palyra" {
		t.Errorf("current_database() = %q (err %v), want palyra", db, err)
	}
	if _, err := conn.Exec(t.Context(), "CREATE TABLE notes (body text NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(t.Context(), "INSERT INTO notes VALUES ('kept across restarts')"); err != nil {
		t.Fatal(err)
	}
	conn.Close(t.Context())

	stop(t, c)
	stop(t, c) // idempotent
	if _, err := os.Stat(filepath.Join(dir, ".s.PGSQL.5432")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket still present after Stop: %v", err)
	}

	c2 := start(t, opts)
	if c2.Initialized() {
		t.Error("second Start: Initialized() = true, want false")
	}
	if c2.Adopted() {
		t.Error("second Start after Stop: Adopted() = true, want false")
	}
	conn2 := connect(t, c2.URL())
	var body string
	if err := conn2.QueryRow(t.Context(), "SELECT body FROM notes").Scan(&body); err != nil || body != "kept across restarts" {
		t.Errorf("row after restart = %q (err %v)", body, err)
	}
	conf, err := os.ReadFile(filepath.Join(dir, "data", "postgresql.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(conf), includeLine); n != 1 {
		t.Errorf("postgresql.conf has %d include lines, want 1", n)
	}
	conn2.Close(t.Context())
	stop(t, c2)
}

func TestAdoptRunningServer(t *testing.T) {
	t.Parallel()
	requireBinaries(t)
	dir := filepath.Join(baseDir(t), "pg")
	opts := Options{Dir: dir, Database: "adopt"}

	// c1's owner "dies" without stopping the server.
	c1 := start(t, opts)
	conn := connect(t, c1.URL())
	if _, err := conn.Exec(t.Context(), "CREATE TABLE t AS SELECT 42 AS answer"); err != nil {
		t.Fatal(err)
	}
	var started1 time.Time
	if err := conn.QueryRow(t.Context(), "SELECT pg_postmaster_start_time()").Scan(&started1); err != nil {
		t.Fatal(err)
	}
	conn.Close(t.Context())

	c2 := start(t, opts)
	if !c2.Adopted() || c2.Initialized() {
		t.Errorf("second Start: Adopted() = %v, Initialized() = %v; want true, false", c2.Adopted(), c2.Initialized())
	}
	if c2.URL() != c1.URL() {
		t.Errorf("URL() = %q, want %q", c2.URL(), c1.URL())
	}
	conn2 := connect(t, c2.URL())
	var answer int
	var started2 time.Time
	if err := conn2.QueryRow(t.Context(), "SELECT answer, pg_postmaster_start_time() FROM t").Scan(&answer, &started2); err != nil {
		t.Fatal(err)
	}
	if answer != 42 {
		t.Errorf("answer = %d, want 42", answer)
	}
	if !started2.Equal(started1) {
		t.Errorf("server start time changed from %v to %v: the server was restarted, not adopted", started1, started2)
	}
	conn2.Close(t.Context())

	stop(t, c2)
	// c1's server is gone now; stopping it counts as success.
	stop(t, c1)
	if _, err := os.Stat(filepath.Join(dir, "data", "postmaster.pid")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("postmaster.pid still present after Stop: %v", err)
	}
}

func TestTCPNotDurable(t *testing.T) {
	t.Parallel()
	requireBinaries(t)
	dir := filepath.Join(baseDir(t), "pg")
	opts := Options{Dir: dir, TCPAddress: "127.0.0.1:0", Database: "postgres"}

	c := start(t, opts)
	host, port, err := net.SplitHostPort(c.TCPAddress())
	if err != nil || host != "127.0.0.1" || port == "0" {
		t.Fatalf("TCPAddress() = %q (err %v), want 127.0.0.1 with a picked port", c.TCPAddress(), err)
	}
	want := "postgres://postgres@127.0.0.1:" + port + "/postgres?sslmode=disable"
	if c.URL() != want {
		t.Errorf("URL() = %q, want %q", c.URL(), want)
	}
	conn := connect(t, c.URL())
	for setting, want := range map[string]string{
		"fsync":              "off",
		"synchronous_commit": "off",
		"full_page_writes":   "off",
		"listen_addresses":   "127.0.0.1",
		"port":               port,
	} {
		if got := show(t, conn, setting); got != want {
			t.Errorf("SHOW %s = %q, want %q", setting, got, want)
		}
	}
	conn.Close(t.Context())

	// Port 0 again while the server runs: adopt it on its port.
	c2 := start(t, opts)
	if !c2.Adopted() || c2.TCPAddress() != c.TCPAddress() {
		t.Errorf("adopt: Adopted() = %v, TCPAddress() = %q; want true, %q", c2.Adopted(), c2.TCPAddress(), c.TCPAddress())
	}

	// Socket only, durable, while the TCP server runs: it must be restarted
	// with the new settings rather than adopted.
	c3 := start(t, Options{Dir: dir, Database: "postgres", Durable: true})
	if c3.Adopted() {
		t.Error("switch to socket only: Adopted() = true, want a restart")
	}
	conn3 := connect(t, c3.URL())
	if got := show(t, conn3, "listen_addresses"); got != "" {
		t.Errorf("after switching to socket only: listen_addresses = %q, want ''", got)
	}
	if got := show(t, conn3, "fsync"); got != "on" {
		t.Errorf("after switching to durable: fsync = %q, want on", got)
	}
	conn3.Close(t.Context())
	if _, err := pgx.Connect(t.Context(), c.URL()); err == nil {
		t.Error("the old TCP URL still accepts connections")
	}
}

func TestStartFailureShowsServerLog(t *testing.T) {
	t.Parallel()
	requireBinaries(t)
	// Occupy a port so that the server cannot bind it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dir := filepath.Join(baseDir(t), "pg")

	_, err = Start(t.Context(), Options{Dir: dir, TCPAddress: ln.Addr().String(), Logger: testLogger(t)})
	if err == nil {
		t.Fatal("Start succeeded on a port in use")
	}
	t.Logf("the error as users see it:\n%v", err)
	for _, want := range []string{"pg_ctl start", "last lines of " + filepath.Join(dir, "postgres.log"), "could not bind"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not contain %q:\n%v", want, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "postmaster.pid")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a server was left behind: %v", err)
	}
}

func TestMissingBinaries(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(baseDir(t), "pg")
	for name, opts := range map[string]Options{
		"search":        {Dir: dir, searchPath: t.TempDir(), libGlob: filepath.Join(t.TempDir(), "*", "bin")},
		"empty bin dir": {Dir: dir, BinDir: t.TempDir()},
	} {
		_, err := Start(t.Context(), opts)
		if !errors.Is(err, ErrBinariesNotFound) {
			t.Errorf("%s: Start error = %v, want ErrBinariesNotFound", name, err)
			continue
		}
		if !strings.Contains(err.Error(), "apt-get install postgresql") {
			t.Errorf("%s: error %q does not say what to install", name, err)
		}
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Start created %s although it could not run: %v", dir, err)
	}
}

func TestFindBinDir(t *testing.T) {
	t.Parallel()
	fakeInstall := func(dir string) {
		t.Helper()
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, prog := range []string{"initdb", "pg_ctl", "postgres"} {
			if err := os.WriteFile(filepath.Join(dir, prog), []byte("#!/bin/sh\n"), 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}

	t.Run("highest version under the glob", func(t *testing.T) {
		lib := t.TempDir()
		for _, v := range []string{"9.6", "15", "16", "100beta1"} {
			fakeInstall(filepath.Join(lib, v, "bin"))
		}
		if err := os.MkdirAll(filepath.Join(lib, "200", "bin"), 0o755); err != nil { // incomplete
			t.Fatal(err)
		}
		got, err := findBinDir("", t.TempDir(), filepath.Join(lib, "*", "bin"))
		if want := filepath.Join(lib, "100beta1", "bin"); err != nil || got != want {
			t.Errorf("findBinDir = %q, %v; want %q", got, err, want)
		}
	})

	t.Run("symlink on PATH resolves to the real directory", func(t *testing.T) {
		real := filepath.Join(t.TempDir(), "lib", "bin")
		fakeInstall(real)
		onPath := t.TempDir()
		if err := os.Symlink(filepath.Join(real, "pg_ctl"), filepath.Join(onPath, "pg_ctl")); err != nil {
			t.Fatal(err)
		}
		got, err := findBinDir("", "relative:"+onPath, filepath.Join(t.TempDir(), "*", "bin"))
		if want, _ := filepath.EvalSymlinks(real); err != nil || got != want {
			t.Errorf("findBinDir = %q, %v; want %q", got, err, want)
		}
	})
}

func TestUnreachableParent(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("only root runs PostgreSQL as another user whose access can be blocked; as a normal user the server runs as the caller, who can reach its own directories")
	}
	requireBinaries(t)
	locked := filepath.Join(baseDir(t), "locked")
	if err := os.Mkdir(locked, 0o700); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(locked, "pg")

	_, err := Start(t.Context(), Options{Dir: dir, Logger: testLogger(t)})
	ue, ok := errors.AsType[*UnreachableError](err)
	if !ok {
		t.Fatalf("Start error = %v, want an *UnreachableError", err)
	}
	if ue.Blocked != locked || ue.Who != "o" || ue.User != "postgres" {
		t.Errorf("UnreachableError = %+v, want Blocked %s, Who o, User postgres", ue, locked)
	}
	want := `the postgres user (uid ` + strconv.Itoa(ue.UID) + `) cannot reach ` + dir + `: ` + locked +
		` is not searchable by it; run "chmod o+x ` + locked + `" or choose a data directory elsewhere`
	if !strings.Contains(err.Error(), want) {
		t.Errorf("error = %q\nwant it to contain %q", err, want)
	}
	if _, err := os.Stat(filepath.Join(dir, "data")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("initdb ran although the directory is unreachable: %v", err)
	}
}

func TestInvalidOptions(t *testing.T) {
	t.Parallel()
	long := "/tmp/" + strings.Repeat("x", 100)
	for name, tc := range map[string]struct {
		opts Options
		want string
	}{
		"no dir":          {Options{}, "Options.Dir is empty"},
		"socket too long": {Options{Dir: long}, "choose a shorter data directory path"},
		"shell quote":     {Options{Dir: `/tmp/a"b`}, "pg_ctl or a connection URL cannot carry"},
		"comma":           {Options{Dir: "/tmp/a,b"}, "pg_ctl or a connection URL cannot carry"},
		"no host":         {Options{Dir: "/tmp/x", TCPAddress: ":5432"}, "name a host"},
		"bad port":        {Options{Dir: "/tmp/x", TCPAddress: "127.0.0.1:http"}, "port must be a number"},
	} {
		_, err := Start(t.Context(), tc.opts)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Start error = %v, want one containing %q", name, err, tc.want)
		}
	}
	if _, err := os.Stat(long); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Start created %s: %v", long, err)
	}
}

func TestURLEscaping(t *testing.T) {
	t.Parallel()
	c := &Cluster{dir: "/var/lib/palyra data/pg", port: 5432, database: "my db"}
	if got, want := (&Cluster{dir: "/path/pg", port: 5432, database: "palyra"}).URL(), "postgres://postgres@/palyra?host=%2Fpath%2Fpg&port=5432&sslmode=disable"; got != want {
		t.Errorf("URL() = %q, want %q", got, want)
	}
	want := "postgres://postgres@/my%20db?host=%2Fvar%2Flib%2Fpalyra%20data%2Fpg&port=5432&sslmode=disable"
	if got := c.URL(); got != want {
		t.Errorf("URL() = %q, want %q", got, want)
	}
	cfg, err := pgx.ParseConfig(c.URL())
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Host != c.dir || cfg.Port != 5432 || cfg.Database != "my db" || cfg.User != "postgres" {
		t.Errorf("pgx parses URL() as host %q port %d database %q user %q", cfg.Host, cfg.Port, cfg.Database, cfg.User)
	}
}

func TestConfString(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"":          "''",
		"127.0.0.1": "'127.0.0.1'",
		"/tmp/it's": "'/tmp/it''s'",
		`C:\path`:   `'C:\\path'`,
	} {
		if got := confString(in); got != want {
			t.Errorf("confString(%q) = %s, want %s", in, got, want)
		}
	}
}
