package bench

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5"

	accessv1 "github.com/palyra/palyra/gen/go/palyra/access/v1"
	"github.com/palyra/palyra/gen/go/palyra/access/v1/accessv1connect"
	"github.com/palyra/palyra/internal/eventually"
)

// Files palyrad writes into its data directory (server/internal/identity.CAFile and
// server/internal/access.BootstrapFile, which this package may not import).
const (
	caFile        = "ca.pem"
	bootstrapFile = "bootstrap-token"
)

// maxRatePerMinute is the highest rate limit a token may have (CreateTokenRequest). A
// token's burst is one minute's allowance, so a fresh token serves 100,000 calls
// before the limit can bite.
const maxRatePerMinute = 100000

func TestMain(m *testing.M) {
	if n, why := raiseFileLimit(); why != "" {
		fmt.Fprintf(os.Stderr, "bench: open-file limit %d: %s; the node steps stop there\n", n, why)
	}
	code := m.Run()
	removeBuilt()
	results.printRatios(os.Stdout)
	results.printTargets(os.Stdout)
	os.Exit(code)
}

// The binaries the benchmarks run, each built at most once per process (in builtDir)
// unless an environment variable names one.
var (
	buildMu  sync.Mutex // guards the following
	builtDir string
	builtBin = map[string]string{}
)

// palyradBinary returns the palyrad binary to run: $PALYRAD, else built from ./server.
func palyradBinary(tb testing.TB) string {
	tb.Helper()
	return rootBinary(tb, "PALYRAD", "./server", "palyrad")
}

// palyraBinary returns the palyra CLI to run: $PALYRA, else built from ./cli.
func palyraBinary(tb testing.TB) string {
	tb.Helper()
	return rootBinary(tb, "PALYRA", "./cli", "palyra")
}

// rootBinary returns the file the environment variable env names (the names make
// test uses for bin/), else builds pkg of the root module as name.
func rootBinary(tb testing.TB, env, pkg, name string) string {
	tb.Helper()
	if bin := os.Getenv(env); bin != "" {
		return bin
	}
	// Built in the root module (bench/.., where go test's working directory is
	// bench/), so that it has the daemon's own dependency versions, not those this
	// module's extra requirements (nats-server, ...) might select.
	return goBinary(tb, "..", pkg, name)
}

// goBinary builds the main package pkg of the module in dir as name, once per process,
// and returns the binary's path.
func goBinary(tb testing.TB, dir, pkg, name string) string {
	tb.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if bin, ok := builtBin[name]; ok {
		return bin
	}
	if builtDir == "" {
		d, err := os.MkdirTemp("", "palyra-bench-bin-")
		if err != nil {
			tb.Fatal(err)
		}
		builtDir = d
	}
	bin := filepath.Join(builtDir, name)
	build := exec.Command("go", "build", "-o", bin, pkg)
	build.Dir = dir
	if out, err := build.CombinedOutput(); err != nil {
		tb.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
	builtBin[name] = bin
	return bin
}

func removeBuilt() {
	if builtDir != "" {
		os.RemoveAll(builtDir)
	}
}

// postgres is the server DATABASE_URL names. Every benchmark gets a database of its own
// on it.
type postgres struct {
	url   string
	admin *pgx.Conn
	// postmaster is the server's process id, for its CPU time; 0 when it could not be
	// found (the server is remote, or its data directory is not readable).
	postmaster int
}

// openPostgres connects to DATABASE_URL, skipping the benchmark without it. With
// PALYRA_BENCH_DURABLE_PG=1 it first makes the server durable (a throwaway server
// started by withpg is not), so that commits wait for the WAL flush as in production.
func openPostgres(tb testing.TB) *postgres {
	tb.Helper()
	u := os.Getenv("DATABASE_URL")
	if u == "" {
		tb.Skip("DATABASE_URL is not set: run make bench, or point it at a PostgreSQL superuser")
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		tb.Fatalf("connect to DATABASE_URL: %v", err)
	}
	tb.Cleanup(func() { conn.Close(context.Background()) })
	if os.Getenv("PALYRA_BENCH_DURABLE_PG") == "1" {
		for _, s := range []string{
			"alter system set fsync = on",
			"alter system set synchronous_commit = on",
			"alter system set full_page_writes = on",
			"select pg_reload_conf()",
		} {
			if _, err := conn.Exec(ctx, s); err != nil {
				tb.Fatalf("%s: %v", s, err)
			}
		}
		// The reload is asynchronous; a new session sees it once it took effect.
		eventually.True(tb, "PostgreSQL to reload fsync = on", func() bool {
			c, err := pgx.Connect(ctx, u)
			if err != nil {
				return false
			}
			defer c.Close(ctx)
			var v string
			return c.QueryRow(ctx, "show fsync").Scan(&v) == nil && v == "on"
		})
	}
	pg := &postgres{url: u, admin: conn}
	var version, fsync, syncCommit, fpw string
	err = conn.QueryRow(ctx, `select current_setting('server_version'), current_setting('fsync'),
		current_setting('synchronous_commit'), current_setting('full_page_writes')`).Scan(&version, &fsync, &syncCommit, &fpw)
	if err != nil {
		tb.Fatalf("read the PostgreSQL settings: %v", err)
	}
	tb.Logf("PostgreSQL %s: fsync=%s synchronous_commit=%s full_page_writes=%s", version, fsync, syncCommit, fpw)
	pg.postmaster = postmasterPID(ctx, conn)
	if pg.postmaster == 0 {
		tb.Log("PostgreSQL's process not found: no pg-cpu-µs/op figure")
	}
	return pg
}

// postmasterPID reads the first line of postmaster.pid in the server's data directory.
func postmasterPID(ctx context.Context, conn *pgx.Conn) int {
	var dir string
	if err := conn.QueryRow(ctx, "select current_setting('data_directory')").Scan(&dir); err != nil {
		return 0
	}
	raw, err := os.ReadFile(filepath.Join(dir, "postmaster.pid"))
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(raw), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		return 0
	}
	return pid
}

// newDatabase creates an empty database and returns its URL; it is dropped when the
// benchmark ends (after the daemons using it stopped, as they were started later).
func (pg *postgres) newDatabase(tb testing.TB) string {
	tb.Helper()
	name := "palyra_bench_" + strings.ToLower(rand.Text())
	ctx := context.Background()
	if _, err := pg.admin.Exec(ctx, "create database "+pgx.Identifier{name}.Sanitize()); err != nil {
		tb.Fatalf("create database %s: %v", name, err)
	}
	tb.Cleanup(func() {
		if _, err := pg.admin.Exec(context.Background(), "drop database "+pgx.Identifier{name}.Sanitize()+" with (force)"); err != nil {
			tb.Errorf("drop database %s: %v", name, err)
		}
	})
	u, err := url.Parse(pg.url)
	if err != nil {
		tb.Fatal(err)
	}
	u.Path = "/" + name
	return u.String()
}

// checkpoint flushes dirty buffers so that a run does not pay for the previous one's.
func (pg *postgres) checkpoint(tb testing.TB) {
	tb.Helper()
	if _, err := pg.admin.Exec(context.Background(), "checkpoint"); err != nil {
		tb.Fatalf("checkpoint: %v", err)
	}
}

// daemon is a palyrad process listening on a free loopback port.
type daemon struct {
	cmd     *exec.Cmd
	exited  chan struct{} // closed when the process exited
	baseURL string
	roots   *x509.CertPool
	// owner is the owner's token from the bootstrap file ("" when there is none).
	owner   string
	logPath string
	stopped bool
	// pprof is the base URL of palyrad's pprof listener ("" unless PALYRA_BENCH_PROFILE
	// is set).
	pprof string
}

// replicaID names the replica of a data directory: stable across restarts of the same
// daemon, distinct between the replicas of one benchmark (their data directories are
// the benchmark's temporary directories 001, 002, ...).
func replicaID(dataDir string) string {
	return "bench-" + strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' {
			return r
		}
		return '-'
	}, filepath.Base(dataDir))
}

// startDaemon starts palyrad on dbURL with dataDir, logging (JSON, the default info
// level, as deployed) to a file in dataDir, and returns once it is ready. It is
// stopped when the benchmark ends, unless stopped before.
func startDaemon(tb testing.TB, dbURL, dataDir string) *daemon {
	tb.Helper()
	return startDaemonOn(tb, dbURL, dataDir, "127.0.0.1:0")
}

// startDaemonOn is startDaemon listening on listen (host:port), with palyrad's flags
// extra added.
func startDaemonOn(tb testing.TB, dbURL, dataDir, listen string, extra ...string) *daemon {
	tb.Helper()
	logPath := filepath.Join(dataDir, fmt.Sprintf("palyrad-%d.log", time.Now().UnixNano()))
	logFile, err := os.Create(logPath)
	if err != nil {
		tb.Fatal(err)
	}
	args := []string{"--listen", listen, "--data-dir", dataDir,
		"--database-url", dbURL, "--replica-id", replicaID(dataDir), "--log-format", "json"}
	if profileDir() != "" {
		args = append(args, "--debug-pprof-listen", "127.0.0.1:0")
	}
	args = append(args, extra...)
	cmd := exec.Command(palyradBinary(tb), args...)
	// A bench killed by its timeout leaves no palyrad behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PALYRA_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	// stdout and stderr share one pipe, so that the log keeps its order.
	out, w, err := os.Pipe()
	if err != nil {
		tb.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = w, w
	err = cmd.Start()
	w.Close()
	if err != nil {
		out.Close()
		tb.Fatalf("start palyrad: %v", err)
	}
	d := &daemon{cmd: cmd, exited: make(chan struct{}), logPath: logPath}
	ready := make(chan string, 1)
	pprofAddr := make(chan string, 1)
	go func() {
		// Copies the log to the file, watching for the ready line, until palyrad exits.
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		sent := false
		for sc.Scan() {
			line := sc.Bytes()
			_, _ = logFile.Write(append(line, '\n'))
			var rec struct{ Msg, Listen string }
			if !sent && json.Unmarshal(line, &rec) == nil {
				switch {
				case rec.Msg == "palyrad ready":
					ready <- rec.Listen
					sent = true
				case strings.HasPrefix(rec.Msg, "pprof listener on"):
					pprofAddr <- rec.Listen
				}
			}
		}
		_, _ = io.Copy(logFile, out)
		out.Close()
		_ = cmd.Wait()
		logFile.Close()
		close(d.exited)
	}()
	tb.Cleanup(func() { d.stop(tb) })
	select {
	case addr := <-ready:
		_, port, _ := net.SplitHostPort(addr)
		d.baseURL = "https://localhost:" + port
		select {
		case a := <-pprofAddr:
			d.pprof = "http://" + a
		default:
		}
	case <-d.exited:
		tb.Fatalf("palyrad exited before it was ready; its log is %s:\n%s", logPath, tail(logPath))
	case <-time.After(60 * time.Second):
		tb.Fatalf("palyrad not ready within 60 s; its log is %s:\n%s", logPath, tail(logPath))
	}
	caPEM, err := os.ReadFile(filepath.Join(dataDir, caFile))
	if err != nil {
		tb.Fatal(err)
	}
	d.roots = x509.NewCertPool()
	if !d.roots.AppendCertsFromPEM(caPEM) {
		tb.Fatalf("%s holds no certificate", caFile)
	}
	if owner, err := os.ReadFile(filepath.Join(dataDir, bootstrapFile)); err == nil {
		d.owner = strings.TrimSpace(string(owner))
	}
	return d
}

// stop stops palyrad the way a service manager does (SIGTERM), once.
func (d *daemon) stop(tb testing.TB) {
	tb.Helper()
	if d.stopped {
		return
	}
	d.stopped = true
	if !stopProcess(d.cmd.Process, d.exited, syscall.SIGTERM, 30*time.Second) {
		tb.Errorf("palyrad did not stop within 30 s of SIGTERM; killed. Its log is %s", d.logPath)
	}
}

// stopProcess sends p sig and waits until it exited (exited is closed), killing it
// after within; it reports whether p exited before.
func stopProcess(p *os.Process, exited <-chan struct{}, sig os.Signal, within time.Duration) bool {
	_ = p.Signal(sig)
	select {
	case <-exited:
		return true
	case <-time.After(within):
		_ = p.Kill()
		<-exited
		return false
	}
}

// kill kills palyrad with SIGKILL, as a crash does, and waits until it exited.
func (d *daemon) kill() {
	d.stopped = true
	_ = d.cmd.Process.Kill()
	<-d.exited
}

// pid is palyrad's process id.
func (d *daemon) pid() int { return d.cmd.Process.Pid }

// tail returns the end of a file, for error messages.
func tail(path string) string {
	raw, _ := os.ReadFile(path)
	if len(raw) > 4000 {
		raw = raw[len(raw)-4000:]
	}
	return string(raw)
}

// tlsConfig trusts palyrad's CA only, and presents cert when it is not nil.
func (d *daemon) tlsConfig(cert *tls.Certificate) *tls.Config {
	c := &tls.Config{RootCAs: d.roots, ServerName: "localhost"}
	if cert != nil {
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	return c
}

// transport returns an HTTP/2-only transport with connections of its own, from the
// loopback address src when it is not nil, presenting cert when it is not nil.
func (d *daemon) transport(src net.IP, cert *tls.Certificate) *http.Transport {
	dialer := &net.Dialer{Timeout: 10 * time.Second}
	if src != nil {
		dialer.LocalAddr = &net.TCPAddr{IP: src}
	}
	tr := &http.Transport{
		TLSClientConfig:     d.tlsConfig(cert),
		DialContext:         dialer.DialContext,
		TLSHandshakeTimeout: 10 * time.Second,
		// As the node agent: pings find a dead connection.
		HTTP2: &http.HTTP2Config{SendPingTimeout: 30 * time.Second, PingTimeout: 15 * time.Second},
	}
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetHTTP2(true)
	return tr
}

// apiClient returns a client on one HTTP/2 connection of its own that sends token as a
// bearer token.
func (d *daemon) apiClient(token string) *http.Client {
	return &http.Client{Transport: &bearer{token: token, next: d.transport(nil, nil)}}
}

// bearer adds an Authorization header to every request.
type bearer struct {
	token string
	next  http.RoundTripper
}

func (b *bearer) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(req)
}

// CloseIdleConnections closes the idle connections of the transport below, which
// http.Client.CloseIdleConnections reaches only through this method.
func (b *bearer) CloseIdleConnections() {
	if c, ok := b.next.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// newToken creates an admin token with the highest rate limit, with the owner's token,
// and returns its secret. Every token has its own rate limit state, so each measured
// run takes a fresh one.
func (d *daemon) newToken(tb testing.TB, label string) string {
	tb.Helper()
	rate := uint32(maxRatePerMinute)
	hc := d.apiClient(d.owner)
	defer hc.CloseIdleConnections()
	c := accessv1connect.NewAccessServiceClient(hc, d.baseURL)
	res, err := c.CreateToken(context.Background(), connect.NewRequest(&accessv1.CreateTokenRequest{
		Label: label, Role: accessv1.Role_ROLE_ADMIN, RateLimitPerMinute: &rate,
	}))
	if err != nil {
		tb.Fatalf("create token %s: %v", label, err)
	}
	return res.Msg.GetSecret()
}

// metrics scrapes palyrad's /metrics (unauthenticated) into name{labels} → value.
func (d *daemon) metrics(ctx context.Context, hc *http.Client) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.baseURL+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	res, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("/metrics: %s", res.Status)
	}
	m := map[string]float64{}
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			m[line[:i]] = v
		}
	}
	return m, sc.Err()
}

// waitAttached waits until palyrad holds n Attach sessions.
func (d *daemon) waitAttached(tb testing.TB, n int) {
	tb.Helper()
	hc := &http.Client{Transport: d.transport(nil, nil)}
	defer hc.CloseIdleConnections()
	eventually.True(tb, fmt.Sprintf("palyrad to hold %d Attach sessions", n), func() bool {
		m, err := d.metrics(context.Background(), hc)
		return err == nil && m["palyra_nodes_attached"] == float64(n)
	})
}

// cpuTime is the user + system CPU time a process has used, from /proc.
func cpuTime(pid int) (time.Duration, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; the fields after it are plain.
	s := string(raw)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc stat")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, errors.New("short /proc stat")
	}
	// f[0] is field 3 (state): utime and stime are fields 14 and 15.
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	const ticksPerSecond = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / ticksPerSecond, nil
}

// parentPID is a process's parent, from /proc.
func parentPID(pid int) int {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(raw)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}

// treeCPU is the CPU time of a process and its children (PostgreSQL's backends are the
// postmaster's children). Children that exited meanwhile are not counted.
func treeCPU(pid int) time.Duration {
	total, _ := cpuTime(pid)
	for _, child := range children(pid) {
		t, _ := cpuTime(child)
		total += t
	}
	return total
}

// children returns the process ids of a process's children, from /proc.
func children(pid int) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if child, err := strconv.Atoi(e.Name()); err == nil && parentPID(child) == pid {
			pids = append(pids, child)
		}
	}
	return pids
}

// rssKiB is a process's resident set size (VmRSS) in KiB.
func rssKiB(pid int) (float64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(raw)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			return strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
		}
	}
	return 0, errors.New("no VmRSS in /proc status")
}
