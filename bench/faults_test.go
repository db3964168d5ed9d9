package bench

import (
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	"github.com/palyra/palyra/gen/go/palyra/controlplane/v1/controlplanev1connect"
	"github.com/palyra/palyra/internal/eventually"
)

// TestFaults is the fault suite (`make faults`, RELIABILITY.md). It runs two palyrad
// replicas on one PostgreSQL cluster of its own, real node agents (`palyra node run`,
// paired through `palyra node pair` and an approval), and callers that create
// dispatches through both replicas with idempotency keys, retrying a call that failed
// in transit with the same key on the other replica, as a client behind a load
// balancer would. Meanwhile it kills (SIGKILL, then an immediate restart) and stalls
// (SIGSTOP for a while, then SIGCONT) replicas, nodes and PostgreSQL at moments drawn
// from FAULTS_SEED. When the load stops, it waits until every dispatch has ended and
// checks through the public API (faults_check_test.go):
//
//   - every dispatch reached a terminal state (none stuck) and none acknowledged to a
//     caller is missing (none lost);
//   - no dispatch ran twice, nor on another node than its own: each dispatch runs
//     bench/cmd/faultwitness, which appends the dispatch's token to a witness file of
//     the suite's own before it prints anything (independent of the node's ran.log);
//   - every succeeded dispatch has its whole output stored, and output_bytes says so
//     (the program prints known content of a known size);
//   - every created dispatch has the audit record of the call that created it, and the
//     audit log verifies;
//   - an idempotency key, however often retried and through whichever replica, made
//     one dispatch.
//
// It prints the counts, the time to quiescence after the last fault, and the time from
// a restarted replica being ready to each of its nodes attached again, and fails when
// an invariant does not hold. It runs only with PALYRA_FAULTS=1; faultsConfig lists
// its settings.
func TestFaults(t *testing.T) {
	if os.Getenv("PALYRA_FAULTS") != "1" {
		t.Skip("the fault suite runs with make faults (PALYRA_FAULTS=1)")
	}
	cfg := loadFaultsConfig(t)
	s := setUpFaults(t, cfg)
	s.run(t)
	s.quiesce(t)
	s.check(t)
}

// faultsConfig is the suite's settings, from the environment.
type faultsConfig struct {
	seed            uint64        // FAULTS_SEED: the faults, their moments and the load; default random
	duration        time.Duration // FAULTS_DURATION: how long the load and the faults last (2m)
	nodes           int           // FAULTS_NODES: node agents, spread over the replicas (4; at most 10)
	callers         int           // FAULTS_CALLERS: callers creating dispatches (4)
	rate            float64       // FAULTS_RATE: dispatches a second, all callers together (15)
	interval        time.Duration // FAULTS_INTERVAL: mean time between faults (4s)
	stallMax        time.Duration // FAULTS_STALL_MAX: longest stall (10s)
	dispatchTimeout time.Duration // FAULTS_DISPATCH_TIMEOUT: each dispatch's timeout (2m)
	kinds           []string      // FAULTS_KINDS: the kinds of fault to inject (all)
}

// faultKind is a kind of fault, with its weight in the draw.
type faultKind struct {
	name   string
	weight int
}

// faultKinds are the kinds of fault.
var faultKinds = []faultKind{
	{"replica-kill", 3}, {"replica-stall", 3}, {"node-kill", 4}, {"node-stall", 2}, {"pg-kill", 2}, {"pg-stall", 2},
}

func loadFaultsConfig(t *testing.T) faultsConfig {
	t.Helper()
	cfg := faultsConfig{
		duration: 2 * time.Minute, nodes: 4, callers: 4, rate: 15,
		interval: 4 * time.Second, stallMax: 10 * time.Second, dispatchTimeout: 2 * time.Minute,
	}
	var seed [8]byte
	_, _ = crand.Read(seed[:])
	cfg.seed = binary.LittleEndian.Uint64(seed[:]) % 1_000_000_000
	for _, k := range faultKinds {
		cfg.kinds = append(cfg.kinds, k.name)
	}
	env := func(name string, parse func(string) error) {
		if v := os.Getenv(name); v != "" {
			if err := parse(v); err != nil {
				t.Fatalf("%s=%q: %v", name, v, err)
			}
		}
	}
	positive := func(p *time.Duration) func(string) error {
		return func(v string) (err error) {
			if *p, err = time.ParseDuration(v); err == nil && *p <= 0 {
				err = fmt.Errorf("not positive")
			}
			return err
		}
	}
	count := func(p *int) func(string) error {
		return func(v string) (err error) {
			if *p, err = strconv.Atoi(v); err == nil && *p < 1 {
				err = fmt.Errorf("not positive")
			}
			return err
		}
	}
	env("FAULTS_SEED", func(v string) (err error) { cfg.seed, err = strconv.ParseUint(v, 10, 64); return err })
	env("FAULTS_DURATION", positive(&cfg.duration))
	env("FAULTS_NODES", func(v string) error {
		// The nodes pair from one address, and StartPairing allows ten a minute each.
		if err := count(&cfg.nodes)(v); err != nil || cfg.nodes <= 10 {
			return err
		}
		return fmt.Errorf("at most 10: the nodes pair from one address, and palyrad allows ten pairings a minute per address")
	})
	env("FAULTS_CALLERS", count(&cfg.callers))
	env("FAULTS_RATE", func(v string) (err error) {
		if cfg.rate, err = strconv.ParseFloat(v, 64); err == nil && cfg.rate <= 0 {
			err = fmt.Errorf("not positive")
		}
		return err
	})
	env("FAULTS_INTERVAL", positive(&cfg.interval))
	env("FAULTS_STALL_MAX", positive(&cfg.stallMax))
	env("FAULTS_DISPATCH_TIMEOUT", positive(&cfg.dispatchTimeout))
	env("FAULTS_KINDS", func(v string) error {
		cfg.kinds = strings.Split(v, ",")
		for _, k := range cfg.kinds {
			if !slices.ContainsFunc(faultKinds, func(f faultKind) bool { return f.name == k }) {
				return fmt.Errorf("unknown kind %q", k)
			}
		}
		return nil
	})
	return cfg
}

// replica is one palyrad of the suite; a restart replaces d, on the same address and
// data directory.
type replica struct {
	name    string
	dataDir string
	listen  string
	d       *daemon
}

// heartbeatFlags make nodes heartbeat every second, so that a stalled node turns stale
// after three seconds and loses its stream after ten, within the stalls drawn.
var heartbeatFlags = []string{"--nodes-heartbeat-interval", "1s"}

func (r *replica) start(t *testing.T, dbURL string) {
	t.Helper()
	r.d = startDaemonOn(t, dbURL, r.dataDir, r.listen, heartbeatFlags...)
}

// faultSuite is one run of TestFaults.
type faultSuite struct {
	cfg     faultsConfig
	began   time.Time
	work    string // the run's directory
	pg      *pgCluster
	dbURL   string
	reps    []*replica
	agents  []*agent
	home    []int // the replica agents[i] attaches to
	program string
	witness string // the witness file
	admin   string // an admin token, for the checks
	callers []*caller

	faults   []*fault
	restarts []restart
	stalls   sync.WaitGroup // the stalls under way, each ending in a goroutine of its own
	loadEnd  time.Time      // when the callers stopped creating dispatches
	quiet    time.Time      // when every dispatch had ended; zero if they did not

	mu      sync.Mutex      // guards the following
	stalled map[string]bool // the targets stalled now
}

// fault is one fault injected.
type fault struct {
	kind, target string
	node         int           // the agent it hit; -1 for a replica or PostgreSQL
	at           time.Time     // when it began
	end          time.Time     // when its target was back: ready again, or continued
	stall        time.Duration // for stalls
}

// restart is a restart of a killed replica.
type restart struct {
	replica       int
	killed, ready time.Time
}

// logf prints a line of the suite's progress, timed now.
func (s *faultSuite) logf(format string, args ...any) { s.logAt(time.Now(), format, args...) }

// logAt prints a line of the suite's progress about something that happened at t, with
// the time from the suite's start and the wall-clock time (UTC, as in the logs of
// palyrad, the nodes and PostgreSQL).
func (s *faultSuite) logAt(t time.Time, format string, args ...any) {
	el := t.Sub(s.began)
	m := int(el / time.Minute)
	fmt.Printf("faults +%d:%04.1f %s %s\n", m, (el - time.Duration(m)*time.Minute).Seconds(),
		t.UTC().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

// setUpFaults starts PostgreSQL, two replicas and the node agents, pairs and attaches
// them, and prepares the callers.
func setUpFaults(t *testing.T, cfg faultsConfig) *faultSuite {
	s := &faultSuite{cfg: cfg, began: time.Now(), stalled: map[string]bool{}}
	s.logf("FAULTS_SEED=%d FAULTS_DURATION=%v FAULTS_NODES=%d FAULTS_CALLERS=%d FAULTS_RATE=%g FAULTS_INTERVAL=%v FAULTS_STALL_MAX=%v FAULTS_DISPATCH_TIMEOUT=%v FAULTS_KINDS=%s",
		cfg.seed, cfg.duration, cfg.nodes, cfg.callers, cfg.rate, cfg.interval, cfg.stallMax, cfg.dispatchTimeout, strings.Join(cfg.kinds, ","))
	palyra := palyraBinary(t)
	s.program = goBinary(t, ".", "./cmd/faultwitness", "faultwitness")
	palyradBinary(t)
	// Everything the run leaves (logs, state directories, the witness file) is in
	// work, which is kept when the test fails. PostgreSQL must reach it.
	work, err := os.MkdirTemp("", fmt.Sprintf("palyra-faults-%d-", cfg.seed))
	if err != nil {
		t.Fatal(err)
	}
	s.work = work
	if err := os.Chmod(work, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			fmt.Printf("faults: kept %s (logs, state directories, the witness file)\n", work)
			return
		}
		os.RemoveAll(work)
	})
	s.witness = filepath.Join(work, "witness.log")
	if err := os.WriteFile(s.witness, nil, 0o644); err != nil {
		t.Fatal(err)
	}

	s.pg = startCluster(t, filepath.Join(work, "pg"))
	s.dbURL = s.pg.url("palyra")
	for _, name := range []string{"a", "b"} {
		r := &replica{name: name, dataDir: filepath.Join(work, "replica-"+name), listen: freeAddress(t)}
		if err := os.Mkdir(r.dataDir, 0o700); err != nil {
			t.Fatal(err)
		}
		if len(s.reps) > 0 {
			copyMasterKey(t, s.reps[0].dataDir, r.dataDir)
		}
		r.start(t, s.dbURL)
		s.reps = append(s.reps, r)
	}
	s.logf("PostgreSQL on port %d, replicas a on %s and b on %s; logs, state and the witness file in %s",
		s.pg.port, s.reps[0].d.baseURL, s.reps[1].d.baseURL, work)

	s.admin = s.reps[0].d.newToken(t, "faults-admin")
	hc := s.reps[0].d.apiClient(s.admin)
	pairing := controlplanev1connect.NewPairingServiceClient(hc, s.reps[0].d.baseURL)
	for i := range cfg.nodes {
		home := i % len(s.reps)
		a := pairAgent(t, s.reps[home].d, pairing, palyra, s.program, filepath.Join(work, fmt.Sprintf("node-%d", i)), fmt.Sprintf("faults-node-%d", i))
		a.start(t)
		t.Cleanup(a.stop)
		s.agents = append(s.agents, a)
		s.home = append(s.home, home)
	}
	hc.CloseIdleConnections()
	eventually.True(t, "every node to attach", func() bool {
		for _, a := range s.agents {
			if a.attachCount() == 0 {
				return false
			}
		}
		return true
	})
	for i, a := range s.agents {
		s.logf("node %s (device %s) attached to replica %s; its log is %s", a.name, a.deviceID, s.reps[s.home[i]].name, a.log.Name())
	}
	for i := range cfg.callers {
		s.callers = append(s.callers, newCaller(t, s, i))
	}
	return s
}

// run runs the load and the faults for the configured duration.
func (s *faultSuite) run(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	abortCtx, abort := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, c := range s.callers {
		wg.Go(func() { c.run(ctx, abortCtx) })
	}
	stopLoad := func() {
		if s.loadEnd.IsZero() {
			cancel()
			s.loadEnd = time.Now()
			wg.Wait()
		}
	}
	defer stopLoad()
	// Runs first: when the test fails, the callers stop retrying too.
	defer abort()
	progress := time.NewTicker(15 * time.Second)
	defer progress.Stop()

	s.logf("load started: %d callers, %g dispatches/s through both replicas; faults for %v", len(s.callers), s.cfg.rate, s.cfg.duration)
	// A stall under way when the test fails still ends before the processes stop.
	t.Cleanup(s.stalls.Wait)
	rng := rand.New(rand.NewPCG(s.cfg.seed, 1))
	end := time.Now().Add(s.cfg.duration)
	for {
		// The draws come in the same order whatever the timing, so that a seed
		// always gives the same faults; how many fit depends on the machine.
		gap := s.cfg.interval/2 + time.Duration(rng.Int64N(int64(s.cfg.interval)))
		kind := s.drawKind(rng)
		target := rng.IntN(1 << 30)
		stall := time.Second + time.Duration(rng.Int64N(int64(max(s.cfg.stallMax-time.Second, 1))))
		next := time.Now().Add(gap)
		if next.After(end) {
			break
		}
		for wait := time.Until(next); wait > 0; wait = time.Until(next) {
			select {
			case <-progress.C:
				s.logProgress()
			case <-time.After(wait):
			}
		}
		s.inject(t, kind, target, stall)
	}
	time.Sleep(time.Until(end))
	stopLoad()
	s.logf("load stopped; %d faults injected", len(s.faults))
	s.stalls.Wait()
	s.logProgress()
}

// drawKind draws a kind of fault among those configured, by weight.
func (s *faultSuite) drawKind(rng *rand.Rand) string {
	total := 0
	for _, k := range faultKinds {
		if slices.Contains(s.cfg.kinds, k.name) {
			total += k.weight
		}
	}
	n := rng.IntN(total)
	for _, k := range faultKinds {
		if !slices.Contains(s.cfg.kinds, k.name) {
			continue
		}
		if n < k.weight {
			return k.name
		}
		n -= k.weight
	}
	panic("unreachable")
}

// inject injects one fault. A kill returns when its target is back: a replica ready
// again (the restart is recorded), a node agent started again, PostgreSQL accepting
// connections again. A stall returns at once, and the target is continued later by a
// goroutine of its own, so that other faults can strike meanwhile; a target stalled
// already is not stalled again (but may be killed).
func (s *faultSuite) inject(t *testing.T, kind string, target int, stall time.Duration) {
	t.Helper()
	f := &fault{kind: kind, node: -1, at: time.Now()}
	var freeze func() (thaw func())
	switch kind {
	case "replica-kill":
		i := target % len(s.reps)
		r := s.reps[i]
		f.target = "replica " + r.name
		r.d.kill()
		r.start(t, s.dbURL)
		s.restarts = append(s.restarts, restart{replica: i, killed: f.at, ready: time.Now()})
	case "replica-stall":
		r := s.reps[target%len(s.reps)]
		f.target = "replica " + r.name
		freeze = func() func() { return freezeProcess(r.d.cmd.Process) }
	case "node-kill":
		f.node = target % len(s.agents)
		a := s.agents[f.node]
		f.target = "node " + a.name
		a.kill()
		a.start(t)
	case "node-stall":
		f.node = target % len(s.agents)
		a := s.agents[f.node]
		f.target = "node " + a.name
		freeze = func() func() { return freezeProcess(a.cmd.Process) }
	case "pg-kill":
		f.target = "PostgreSQL"
		s.pg.kill()
		if err := s.pg.start(2 * time.Minute); err != nil {
			t.Fatal(err)
		}
	case "pg-stall":
		f.target = "PostgreSQL"
		freeze = s.pg.freeze
	}
	if freeze == nil {
		f.end = time.Now()
		s.faults = append(s.faults, f)
		s.logAt(f.at, "fault %d: %s of %s (back after %.1f s)", len(s.faults), kind, f.target, f.end.Sub(f.at).Seconds())
		return
	}
	s.mu.Lock()
	busy := s.stalled[f.target]
	s.stalled[f.target] = true
	s.mu.Unlock()
	if busy {
		s.logf("(%s of %s drawn, but it is stalled already)", kind, f.target)
		return
	}
	f.stall = stall
	thaw := freeze()
	s.faults = append(s.faults, f)
	s.logAt(f.at, "fault %d: %s of %s for %.1f s", len(s.faults), kind, f.target, stall.Seconds())
	s.stalls.Go(func() {
		time.Sleep(stall)
		thaw()
		s.mu.Lock()
		defer s.mu.Unlock()
		f.end = time.Now()
		delete(s.stalled, f.target)
	})
}

// freezeProcess stops p (SIGSTOP) and returns the function that continues it. A
// process killed meanwhile stays dead: os.Process does not signal a process it
// has waited for.
func freezeProcess(p *os.Process) (thaw func()) {
	_ = p.Signal(syscall.SIGSTOP)
	return func() { _ = p.Signal(syscall.SIGCONT) }
}

// logProgress prints how far the callers got.
func (s *faultSuite) logProgress() {
	var intents, answered, retried int
	for _, c := range s.callers {
		i, a, r := c.counts()
		intents, answered, retried = intents+i, answered+a, retried+r
	}
	s.logf("dispatches asked for %d, answered %d, calls retried %d", intents, answered, retried)
}

// quiesce waits until no dispatch is queued, sent or running, at most until the last
// deadline has passed by two minutes (a dispatch ends by its deadline, whatever
// happens), and records when.
func (s *faultSuite) quiesce(t *testing.T) {
	t.Helper()
	hc := s.reps[0].d.apiClient(s.admin)
	defer hc.CloseIdleConnections()
	dc := controlplanev1connect.NewDispatchServiceClient(hc, s.reps[0].d.baseURL)
	deadline := s.loadEnd.Add(s.cfg.dispatchTimeout + 2*time.Minute)
	last := time.Time{}
	for {
		open, err := openDispatches(dc)
		if err == nil && open == 0 {
			s.quiet = time.Now()
			s.logf("quiescent: every dispatch has ended")
			return
		}
		if time.Now().After(deadline) {
			s.logf("NOT quiescent %v after the load stopped: %d dispatches have not ended (%v)", time.Since(s.loadEnd).Round(time.Second), open, err)
			return
		}
		if time.Since(last) > 10*time.Second {
			s.logf("waiting for %d dispatches to end (%v)", open, err)
			last = time.Now()
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// openDispatches counts the dispatches that are queued, sent or running.
func openDispatches(dc controlplanev1connect.DispatchServiceClient) (int, error) {
	n := 0
	for _, st := range []controlplanev1.DispatchState{
		controlplanev1.DispatchState_DISPATCH_STATE_QUEUED, controlplanev1.DispatchState_DISPATCH_STATE_SENT,
		controlplanev1.DispatchState_DISPATCH_STATE_RUNNING,
	} {
		ds, err := listDispatches(dc, st)
		if err != nil {
			return 0, err
		}
		n += len(ds)
	}
	return n, nil
}

// listDispatches lists every dispatch in state st (all of them when unspecified).
func listDispatches(dc controlplanev1connect.DispatchServiceClient, st controlplanev1.DispatchState) ([]*controlplanev1.Dispatch, error) {
	var all []*controlplanev1.Dispatch
	token := ""
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		res, err := dc.ListDispatches(ctx, connect.NewRequest(&controlplanev1.ListDispatchesRequest{
			State: st, PageSize: 500, PageToken: token,
		}))
		cancel()
		if err != nil {
			return nil, err
		}
		all = append(all, res.Msg.GetDispatches()...)
		if token = res.Msg.GetNextPageToken(); token == "" {
			return all, nil
		}
	}
}

// apiClients returns, for each replica, a client on connections of its own with token.
func (s *faultSuite) apiClients(token string) []*http.Client {
	var hcs []*http.Client
	for _, r := range s.reps {
		hcs = append(hcs, r.d.apiClient(token))
	}
	return hcs
}
