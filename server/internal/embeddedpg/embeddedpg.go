// Package embeddedpg initialises, starts and stops a private PostgreSQL
// cluster from the system's PostgreSQL binaries.
//
// palyrad uses it when no database URL is configured: the cluster then lives
// under <data-dir>/pg and is reachable only through a Unix socket inside that
// directory. The withpg test wrapper (server/cmd/withpg) uses it too, with a
// loopback TCP port and durability traded for speed.
//
// A cluster directory (Options.Dir) looks like this:
//
//	Dir/                  mode 0700; also holds the Unix socket .s.PGSQL.<port>
//	Dir/data/             the cluster itself (initdb -D Dir/data)
//	Dir/data/palyra.conf  our settings, rewritten on every Start and included
//	                      from Dir/data/postgresql.conf
//	Dir/postgres.log      the server log (pg_ctl -l)
//
// Start runs initdb on first use, starts the server with pg_ctl and creates
// the requested database. When a server of the same cluster is already running
// (its previous owner was killed with SIGKILL, which does not stop PostgreSQL),
// Start adopts it instead of starting a second one. Stop stops the server.
//
// PostgreSQL refuses to run as root. When the calling process runs as root,
// every PostgreSQL program runs as the unprivileged user "postgres"
// (exec.Cmd.SysProcAttr.Credential), Dir is owned by that user, and Start checks
// that the user can reach Dir before it runs anything. The calling process
// itself connects as root through the socket, which the kernel allows.
//
// Settings are never passed on the command line (pg_ctl -o breaks on paths with
// spaces); they go into Dir/data/palyra.conf.
//
// The package runs programs as other users and inspects file ownership, so it
// works on Unix systems only. It keeps no global state: several clusters, in
// different directories, can run in one process.
package embeddedpg

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// DefaultDatabase is the database Start creates when Options.Database is empty.
const DefaultDatabase = "palyra"

const (
	// superuser is the cluster's bootstrap superuser (initdb -U); every URL
	// connects as it, with trust authentication.
	superuser = "postgres"
	// socketPort is the port in socket-only mode. It only names the socket
	// file (.s.PGSQL.5432) because nothing listens on TCP.
	socketPort = 5432
	// maxSocketPath is the longest Unix socket path Linux accepts: sun_path
	// holds 108 bytes including the terminating NUL.
	maxSocketPath = 107
	// startStopTimeout is what pg_ctl -t gets, in seconds.
	startStopTimeout = "60"
	// adoptConnectWait is how long Start keeps trying to connect to an
	// adopted server, which may still be starting up.
	adoptConnectWait = 15 * time.Second
	// duplicateDatabase is SQLSTATE 42P04, returned by CREATE DATABASE when
	// another connection created the database first.
	duplicateDatabase = "42P04"
	// logTailLines is how many lines of Dir/postgres.log a start error shows.
	logTailLines = 20
)

// ErrBinariesNotFound is returned (wrapped) by Start when it cannot find the
// PostgreSQL server programs. Its text tells the user what to install.
var ErrBinariesNotFound = errors.New(`PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or under /usr/lib/postgresql/*/bin: install the Debian package "postgresql" (apt-get install postgresql) or configure an external database URL`)

// Options configures Start. Only Dir is required.
type Options struct {
	// Dir is the cluster's home, for example <data-dir>/pg. Start creates it
	// (mode 0700; missing parents get mode 0755). The data files go in
	// Dir/data, the Unix socket in Dir and the server log in
	// Dir/postgres.log. The socket path, Dir/.s.PGSQL.<port>, must fit in 107
	// bytes, so Dir must be short (about 90 bytes at most). pg_ctl passes
	// paths through /bin/sh in double quotes and connection strings split
	// hosts at commas, so Dir must not contain " $ ` \ , or control
	// characters.
	Dir string

	// TCPAddress is "" for a server reachable only through the Unix socket
	// in Dir (listen_addresses = ''), or "host:port" to listen on TCP as
	// well, for example "127.0.0.1:0". Port 0 picks a free port. Keep the
	// host a loopback address: the cluster trusts every connection.
	TCPAddress string

	// Durable false turns off fsync, synchronous_commit and full_page_writes
	// (and runs initdb --no-sync). A crash of the machine can then corrupt
	// the cluster, so only throwaway test clusters set it to false.
	Durable bool

	// Database is created when it does not exist yet, and URL connects to
	// it. Empty means DefaultDatabase. "postgres" always exists.
	Database string

	// BinDir, when set, is the directory holding initdb, pg_ctl and postgres,
	// and no search happens. Otherwise Start looks for pg_ctl and initdb on
	// PATH (following symlinks to the directory of the real file), then
	// under /usr/lib/postgresql/*/bin, highest major version first.
	BinDir string

	// Logger receives the cluster's life cycle events (initialised, started,
	// adopted, stopped). Nil discards them.
	Logger *slog.Logger

	// searchPath and libGlob replace $PATH and /usr/lib/postgresql/*/bin
	// in tests; empty means the real ones.
	searchPath string
	libGlob    string
}

// Cluster is a running PostgreSQL cluster returned by Start. Its methods are
// safe for concurrent use.
type Cluster struct {
	dir      string // absolute, cleaned Options.Dir; also the socket directory
	dataDir  string // dir/data
	logFile  string // dir/postgres.log
	host     string // TCP host; "" in socket-only mode
	port     int    // TCP port, or socketPort in socket-only mode
	durable  bool
	database string

	run    *runner
	log    *slog.Logger
	binDir string

	// Set once by Start, read-only afterwards.
	initialized bool // Start ran initdb
	adopted     bool // Start adopted a running server

	mu      sync.Mutex // guards the following
	stopped bool       // Stop has succeeded
}

// Start initialises the cluster in opts.Dir on first use, starts its server
// (or adopts a server of this same cluster that is already running), and
// creates opts.Database if it is missing.
//
// If Start fails after it started the server, it stops the server again
// before returning. An adopted server is left running.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	c, err := newCluster(opts)
	if err != nil {
		return nil, fmt.Errorf("embeddedpg: %w", err)
	}
	if err := c.start(ctx); err != nil {
		return nil, fmt.Errorf("embeddedpg: start %s: %w", c.dir, err)
	}
	return c, nil
}

// URL returns the connection URL for the cluster's database, usable by pgx
// (and libpq): user postgres, no password, sslmode=disable. In socket-only mode
// it names the socket directory in the query, for example
// postgres://postgres@/palyra?host=%2Fvar%2Flib%2Fpalyra%2Fpg&port=5432&sslmode=disable;
// with a TCP address it is postgres://postgres@127.0.0.1:PORT/palyra?sslmode=disable.
func (c *Cluster) URL() string {
	return c.urlFor(c.database)
}

// TCPAddress returns the "host:port" the server listens on, with a port
// picked by Start in place of port 0, or "" in socket-only mode.
func (c *Cluster) TCPAddress() string {
	if c.host == "" {
		return ""
	}
	return net.JoinHostPort(c.host, strconv.Itoa(c.port))
}

// Initialized reports whether Start ran initdb, that is whether this was the
// cluster's first start.
func (c *Cluster) Initialized() bool {
	return c.initialized
}

// Adopted reports whether Start found the cluster's server already running
// and adopted it instead of starting it.
func (c *Cluster) Adopted() bool {
	return c.adopted
}

// Stop stops the server (pg_ctl stop -m fast: open sessions are rolled back)
// and waits until it has exited. A server that is not running counts as
// stopped, and calling Stop again after it succeeded does nothing. Pass a
// context that is not already cancelled, or pg_ctl cannot run.
func (c *Cluster) Stop(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return nil
	}
	t0 := time.Now()
	if err := c.stopServer(ctx); err != nil {
		return fmt.Errorf("embeddedpg: stop %s: %w", c.dir, err)
	}
	c.stopped = true
	c.log.Info("PostgreSQL stopped", "dir", c.dir, "elapsed", since(t0))
	return nil
}

// newCluster validates opts and finds the programs and the user to run them
// as. It touches nothing on disk.
func newCluster(opts Options) (*Cluster, error) {
	if opts.Dir == "" {
		return nil, errors.New("Options.Dir is empty")
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("directory %q: %w", opts.Dir, err)
	}
	if err := checkDirName(dir); err != nil {
		return nil, err
	}
	c := &Cluster{
		dir:      dir,
		dataDir:  filepath.Join(dir, "data"),
		logFile:  filepath.Join(dir, "postgres.log"),
		port:     socketPort,
		durable:  opts.Durable,
		database: opts.Database,
		log:      opts.Logger,
	}
	if c.database == "" {
		c.database = DefaultDatabase
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if opts.TCPAddress != "" {
		host, port, err := splitTCPAddress(opts.TCPAddress)
		if err != nil {
			return nil, err
		}
		c.host, c.port = host, port
	}
	// A port picked later has at most 5 digits; checking with the longest
	// possible name keeps this check ahead of any change on disk.
	longestPort := c.port
	if c.port == 0 {
		longestPort = 65535
	}
	if sock := socketPath(dir, longestPort); len(sock) > maxSocketPath {
		return nil, fmt.Errorf("the Unix socket path %s would be %d bytes, but Unix sockets allow at most %d: choose a shorter data directory path", sock, len(sock), maxSocketPath)
	}

	c.binDir, err = findBinDir(opts.BinDir, opts.searchPath, opts.libGlob)
	if err != nil {
		return nil, err
	}
	c.run, err = newRunner(c.binDir, dir)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// start does Start's work on a validated Cluster.
func (c *Cluster) start(ctx context.Context) error {
	t0 := time.Now()
	if err := c.prepareDir(); err != nil {
		return err
	}
	if err := c.initOnce(ctx); err != nil {
		return err
	}

	running, err := c.isRunning(ctx)
	if err != nil {
		return err
	}
	if running {
		adopt, err := c.adoptOrStop(ctx, t0)
		if err != nil {
			return err
		}
		c.adopted = adopt
	}

	if c.adopted {
		// The running server may have been started with other durability
		// settings; those can change without a restart.
		if err := c.writeConf(); err != nil {
			return err
		}
		if _, err := c.run.output(ctx, "pg_ctl", "reload", "-D", c.dataDir); err != nil {
			return fmt.Errorf("reload the adopted server's settings: %w", err)
		}
	} else {
		if err := c.startServer(ctx); err != nil {
			return err
		}
	}

	wait := time.Duration(0)
	if c.adopted {
		wait = adoptConnectWait
	}
	if err := c.createDatabase(ctx, wait); err != nil {
		if !c.adopted {
			// Do not leave a server behind that the caller knows nothing of.
			stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			defer cancel()
			if serr := c.stopServer(stopCtx); serr != nil {
				err = errors.Join(err, fmt.Errorf("stop the server again: %w", serr))
			}
		}
		return err
	}
	c.log.Debug("PostgreSQL ready", "dir", c.dir, "url", c.URL(), "elapsed", since(t0))
	return nil
}

// adoptOrStop decides what to do with the cluster's server that is already
// running: adopt it (true) when it listens where this Start wants it to, or
// else stop it so that Start can start it with the new settings (false).
func (c *Cluster) adoptOrStop(ctx context.Context, t0 time.Time) (bool, error) {
	pf, err := readPIDFile(filepath.Join(c.dataDir, "postmaster.pid"))
	if err != nil {
		return false, err
	}
	same := pf.socketDir == c.dir && pf.listen == c.host && (pf.port == c.port || (c.port == 0 && c.host != ""))
	if same {
		c.port = pf.port
		c.log.Info("PostgreSQL already running, adopted it", "dir", c.dir, "pid", pf.pid, "listen", c.listenDescription(), "elapsed", since(t0))
		return true, nil
	}
	c.log.Info("PostgreSQL already running with other listen settings, restarting it",
		"dir", c.dir, "pid", pf.pid, "listen", pf.listen, "port", pf.port)
	if err := c.stopServer(ctx); err != nil {
		return false, err
	}
	return false, nil
}

// startServer writes palyra.conf and runs pg_ctl start.
func (c *Cluster) startServer(ctx context.Context) error {
	t0 := time.Now()
	if c.host != "" && c.port == 0 {
		port, err := freePort(ctx, c.host)
		if err != nil {
			return err
		}
		c.port = port
	}
	if err := c.writeConf(); err != nil {
		return err
	}
	// pg_ctl start is bounded by its own timeout and is not cancelled with
	// ctx: killing it could leave a postmaster running that nobody knows of.
	// A cancellation is honoured once it has returned.
	_, err := c.run.output(context.WithoutCancel(ctx), "pg_ctl", "start", "-w", "-t", startStopTimeout,
		"-D", c.dataDir, "-l", c.logFile)
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	if err != nil {
		// The postmaster may run even though pg_ctl failed (for example when
		// it timed out); stop it so that nothing is left behind.
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		_ = c.stopServer(stopCtx)
		if ctx.Err() != nil {
			return fmt.Errorf("pg_ctl start: %w", ctx.Err())
		}
		return fmt.Errorf("%w\n%s", err, c.logTail())
	}
	c.log.Info("PostgreSQL started", "dir", c.dir, "listen", c.listenDescription(), "elapsed", since(t0))
	return nil
}

// stopServer runs pg_ctl stop; a server that is not running is success.
func (c *Cluster) stopServer(ctx context.Context) error {
	_, err := c.run.output(ctx, "pg_ctl", "stop", "-D", c.dataDir, "-m", "fast", "-w", "-t", startStopTimeout)
	if err == nil {
		return nil
	}
	if running, serr := c.isRunning(ctx); serr == nil && !running {
		return nil
	}
	return err
}

// isRunning runs pg_ctl status: exit status 0 means a server is running and 3
// that none is.
func (c *Cluster) isRunning(ctx context.Context) (bool, error) {
	_, err := c.run.output(ctx, "pg_ctl", "status", "-D", c.dataDir)
	if err == nil {
		return true, nil
	}
	if exitCode(err) == 3 {
		return false, nil
	}
	return false, err
}

// createDatabase connects to the postgres database and creates c.database
// when it is missing. wait > 0 retries failed connections for that long.
func (c *Cluster) createDatabase(ctx context.Context, wait time.Duration) error {
	conn, err := c.connect(ctx, "postgres", wait)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))

	var exists bool
	err = conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", c.database).Scan(&exists)
	if err != nil {
		return fmt.Errorf("look up database %q: %w", c.database, err)
	}
	if exists {
		return nil
	}
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{c.database}.Sanitize())
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok && pgErr.Code == duplicateDatabase {
		err = nil
	}
	if err != nil {
		return fmt.Errorf("create database %q: %w", c.database, err)
	}
	c.log.Info("PostgreSQL database created", "dir", c.dir, "database", c.database)
	return nil
}

// connect opens a connection to database db, retrying for up to wait.
func (c *Cluster) connect(ctx context.Context, db string, wait time.Duration) (*pgx.Conn, error) {
	deadline := time.Now().Add(wait)
	for {
		conn, err := pgx.Connect(ctx, c.urlFor(db))
		if err == nil {
			return conn, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("connect to database %q: %w", db, err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("connect to database %q: %w", db, errors.Join(ctx.Err(), err))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// urlFor returns the connection URL for database db (see URL). It is built by
// hand because libpq and pgx decode only %XX escapes: url.Values would encode
// a space as "+", which they keep as a plus sign.
func (c *Cluster) urlFor(db string) string {
	var b strings.Builder
	b.WriteString("postgres://" + superuser + "@")
	if c.host != "" {
		b.WriteString(c.TCPAddress())
	}
	b.WriteString("/" + uriEscape(db) + "?")
	if c.host == "" {
		b.WriteString("host=" + uriEscape(c.dir) + "&port=" + strconv.Itoa(c.port) + "&")
	}
	b.WriteString("sslmode=disable")
	return b.String()
}

// uriEscape percent-encodes every byte of s except RFC 3986's unreserved
// characters, so that "/" in a socket directory becomes %2F.
func uriEscape(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if 'a' <= ch && ch <= 'z' || 'A' <= ch && ch <= 'Z' || '0' <= ch && ch <= '9' || strings.IndexByte("-._~", ch) >= 0 {
			b.WriteByte(ch)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[ch>>4])
		b.WriteByte(hex[ch&0xF])
	}
	return b.String()
}

// listenDescription says where the server listens, for logs.
func (c *Cluster) listenDescription() string {
	sock := socketPath(c.dir, c.port)
	if c.host == "" {
		return sock
	}
	return c.TCPAddress() + " and " + sock
}

// logTail returns the last lines of the server log for an error message.
func (c *Cluster) logTail() string {
	lines, err := tailLines(c.logFile, logTailLines)
	switch {
	case err != nil:
		return fmt.Sprintf("(no server log: %v)", err)
	case len(lines) == 0:
		return fmt.Sprintf("(the server log %s is empty)", c.logFile)
	default:
		return fmt.Sprintf("last lines of %s:\n%s", c.logFile, strings.Join(lines, "\n"))
	}
}

// splitTCPAddress parses Options.TCPAddress.
func splitTCPAddress(addr string) (host string, port int, err error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("TCP address %q: %w", addr, err)
	}
	if host == "" {
		return "", 0, fmt.Errorf("TCP address %q: name a host, for example 127.0.0.1", addr)
	}
	port, err = strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("TCP address %q: port must be a number from 0 to 65535", addr)
	}
	return host, port, nil
}

// freePort asks the kernel for a free TCP port on host. Another process may
// take it before the server binds it; the window is a fraction of a second.
func freePort(ctx context.Context, host string) (int, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("pick a free port on %s: %w", host, err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	if err := ln.Close(); err != nil {
		return 0, fmt.Errorf("pick a free port on %s: %w", host, err)
	}
	return port, nil
}

// pidFile is what Start needs from Dir/data/postmaster.pid.
type pidFile struct {
	pid       int
	port      int
	socketDir string // first entry of unix_socket_directories
	listen    string // first entry of listen_addresses; "" for none
}

// readPIDFile parses postmaster.pid: line 1 is the PID, 4 the port, 5 the
// first socket directory and 6 the first listen address.
func readPIDFile(path string) (pidFile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return pidFile{}, fmt.Errorf("read the running server's PID file: %w", err)
	}
	lines := strings.Split(string(b), "\n")
	if len(lines) < 6 {
		return pidFile{}, fmt.Errorf("%s: only %d lines; is the server still starting?", path, len(lines))
	}
	var pf pidFile
	if pf.pid, err = strconv.Atoi(strings.TrimSpace(lines[0])); err != nil {
		return pidFile{}, fmt.Errorf("%s: bad PID line: %w", path, err)
	}
	if pf.port, err = strconv.Atoi(strings.TrimSpace(lines[3])); err != nil {
		return pidFile{}, fmt.Errorf("%s: bad port line: %w", path, err)
	}
	pf.socketDir = strings.TrimSpace(lines[4])
	pf.listen = strings.TrimSpace(lines[5])
	return pf, nil
}

// tailLines returns the last n lines of a file, reading at most its last 64 KiB.
func tailLines(path string, n int) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	const window = 64 << 10
	if fi, err := f.Stat(); err == nil && fi.Size() > window {
		if _, err := f.Seek(-window, io.SeekEnd); err != nil {
			return nil, err
		}
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return nil, err
	}
	s := strings.TrimRight(string(b), "\n")
	if s == "" {
		return nil, nil
	}
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return lines, nil
}

// since returns the time elapsed since t0, rounded for logs.
func since(t0 time.Time) time.Duration {
	return time.Since(t0).Round(time.Millisecond)
}
