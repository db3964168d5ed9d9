package node

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"regexp"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/palyra/palyra/cli/internal/client"
	"github.com/palyra/palyra/cli/internal/node/capability"
	nodev1 "github.com/palyra/palyra/gen/go/palyra/node/v1"
	"github.com/palyra/palyra/internal/buildinfo"
	"github.com/palyra/palyra/internal/retry"
)

// ProtocolVersion is the version of the Attach protocol the agent speaks (see
// AttachRequest in proto/palyra/node/v1/node.proto).
const ProtocolVersion = 1

// DefaultDrainTimeout is how long a stopping agent lets running dispatches finish
// before it cancels them.
const DefaultDrainTimeout = 30 * time.Second

// ulidPattern is the form of device and dispatch ids (ULIDs). Dispatch ids name spool
// files, so an id of another form is refused before it reaches the file system.
var ulidPattern = regexp.MustCompile(`^[0-9A-HJKMNP-TV-Z]{26}$`)

// agentVersionPattern is the form of an agent version that Hello accepts.
var agentVersionPattern = regexp.MustCompile(`^[A-Za-z0-9._+-]{0,64}$`)

// AgentOptions configure an Agent.
type AgentOptions struct {
	// Dir is the node's state directory; it must hold a certificate (the node is
	// paired).
	Dir *StateDir
	// Registry holds the capabilities the node offers; nil offers none.
	Registry *capability.Registry
	// Labels describe the node to palyrad, e.g. {"region": "eu-west"}.
	Labels map[string]string
	// Platform is the node's operating system and architecture; empty means
	// runtime.GOOS/runtime.GOARCH.
	Platform string
	// AgentVersion is the agent's version; empty means buildinfo.Version() when it
	// has a form palyrad accepts.
	AgentVersion string
	// DrainTimeout is how long running dispatches may go on once Run's context ends,
	// before they are cancelled; 0 means DefaultDrainTimeout.
	DrainTimeout time.Duration
	// Log receives the agent's log; nil discards it.
	Log *slog.Logger
	// Now is the clock; nil means time.Now. It dates results and the ran log and
	// decides when the certificate is renewed.
	Now func() time.Time
	// Rand returns a uniformly random number in [0, n) (n > 0); nil means
	// math/rand/v2. It jitters reconnections and renewals.
	Rand func(n int64) int64

	// tune holds the agent's timings; a zero chunk means defaultTuning. Tests
	// shorten them.
	tune tuning
}

// tuning are the timings of an Agent.
type tuning struct {
	// attach paces attach attempts (its Rand is the agent's); its Initial is also the
	// first ceiling between failed renewals.
	attach          retry.Backoff
	welcomeTimeout  time.Duration // from the hello to the welcome
	renewBackoffMax time.Duration // between failed renewals
	renewCheck      time.Duration // the longest wait before looking at the clock again
	ackWait         time.Duration // a stopping agent's wait for the acks of its last results
	killGrace       time.Duration // how long cancelled dispatches may take to return
	closeWait       time.Duration // a closing session's wait for the daemon to end the stream
	coalesce        time.Duration // the longest a chunk of output waits for more
	chunk           int           // the largest chunk of output
	callTimeout     time.Duration // of RenewCertificate
	// after is the timer of the renewal loop; nil means time.After.
	after func(time.Duration) <-chan time.Time
}

var defaultTuning = tuning{
	attach:          *retry.AttachBackoff(nil),
	welcomeTimeout:  10 * time.Second,
	renewBackoffMax: 5 * time.Minute,
	renewCheck:      time.Hour,
	ackWait:         3 * time.Second,
	killGrace:       15 * time.Second,
	closeWait:       2 * time.Second,
	coalesce:        50 * time.Millisecond,
	chunk:           32 << 10,
	callTimeout:     30 * time.Second,
}

// Agent is the node agent: it keeps a session with palyrad (Attach), runs the
// dispatches it receives with the capabilities of its registry, spools their results
// until palyrad acknowledges them, and renews its certificate. Build it with NewAgent
// and call Run once.
//
// Goroutines: Run's goroutine runs the attach loop and, within it, each session's
// receive loop, which handles every message from palyrad; each session has a sender
// goroutine that owns stream.Send and a reader goroutine that owns stream.Receive;
// each dispatch runs in a goroutine of its own; the renewal loop runs in another.
type Agent struct {
	dir      *StateDir
	labels   map[string]string
	platform string
	version  string
	drain    time.Duration
	log      *slog.Logger
	now      func() time.Time
	rand     func(n int64) int64
	tune     tuning

	// Set by load before anything runs, then only read.
	host  *Host
	ca    *x509.Certificate
	spool spool
	ran   *ranLog

	// creds are the current device certificate with its key, what new connections
	// present, and the TLS sessions they resume. Renewal replaces them.
	creds atomic.Pointer[credentials]

	// execs counts the running dispatch goroutines.
	execs sync.WaitGroup
	// execBase is the parent context of dispatches: it outlives Run's context, so
	// that a stopping agent lets them finish.
	execBase context.Context

	mu       sync.Mutex           // guards the following
	registry *capability.Registry // the capabilities offered; SetRegistry replaces it
	sess     *session             // the attached session; nil between sessions
	running  map[string]*execution
	unacked  map[string]*outputPump // the output of finished dispatches whose result palyrad has not acknowledged
	ranIDs   map[string]time.Time   // dispatch ids the node has run, with when
	stopping bool                   // Run's context ended: no new dispatch
	drainAt  *time.Timer            // cancels what still runs at the drain timeout
	drained  chan struct{}          // closed when no dispatch runs after stopping

	// statusMu guards status and orders the writes of agent.json. It is not mu: the
	// heartbeat's synced write must not hold up dispatches and their output.
	statusMu sync.Mutex
	status   AgentStatus // what agent.json says
}

// NewAgent checks the options and returns an agent. It reads nothing yet: Run does.
func NewAgent(o AgentOptions) (*Agent, error) {
	if o.Dir == nil {
		return nil, errors.New("the agent needs a state directory")
	}
	if o.Registry == nil {
		var err error
		if o.Registry, err = capability.NewRegistry(); err != nil {
			return nil, err
		}
	}
	a := &Agent{
		dir: o.Dir, registry: o.Registry, labels: maps.Clone(o.Labels), platform: o.Platform, version: o.AgentVersion,
		drain: o.DrainTimeout, log: o.Log, now: o.Now, rand: o.Rand, tune: o.tune,
		running: map[string]*execution{}, unacked: map[string]*outputPump{}, ranIDs: map[string]time.Time{},
	}
	if a.platform == "" {
		a.platform = runtime.GOOS + "/" + runtime.GOARCH
	}
	if a.version == "" {
		if v := buildinfo.Version(); agentVersionPattern.MatchString(v) {
			a.version = v
		}
	}
	if a.drain <= 0 {
		a.drain = DefaultDrainTimeout
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if a.now == nil {
		a.now = time.Now
	}
	if a.rand == nil {
		a.rand = rand.Int64N
	}
	if a.tune.chunk == 0 {
		after := a.tune.after
		a.tune = defaultTuning
		a.tune.after = after
	}
	if a.tune.after == nil {
		a.tune.after = time.After
	}
	return a, nil
}

// Run runs the agent until ctx ends: it attaches to palyrad, reconnecting with backoff,
// runs dispatches and renews the certificate. Once ctx ends it accepts no more
// dispatches, lets running ones finish for the drain timeout, cancels the rest, sends
// their results and returns nil. It returns an error only when it cannot start: the
// node is not paired, its state is unreadable, or another agent runs on the state
// directory.
func (a *Agent) Run(ctx context.Context) error {
	unlock, err := lockStateDir(a.dir)
	if err != nil {
		return err
	}
	defer unlock()
	if err := a.load(); err != nil {
		return err
	}
	if err := a.recoverRan(); err != nil {
		return err
	}
	defer a.ran.close()
	a.execBase = context.WithoutCancel(ctx)
	a.updateStatus(func(s *AgentStatus) {
		*s = AgentStatus{PID: os.Getpid(), StartedAt: a.now().UTC(), URL: a.host.URL, DeviceID: a.host.DeviceID}
	})
	defer a.dir.remove(StatusFile)

	renewCtx, stopRenewal := context.WithCancel(ctx)
	var renewal sync.WaitGroup
	renewal.Go(func() { a.renewLoop(renewCtx) })
	defer func() {
		stopRenewal()
		renewal.Wait()
	}()

	a.log.Info("node agent starting", "device_id", a.host.DeviceID, "url", a.host.URL, "state_dir", a.dir.Path(),
		"capabilities", len(a.currentRegistry().Descriptors()), "version", a.version)
	a.attachLoop(ctx)
	// Between sessions, or after one that ended while draining: what still runs
	// finishes (or is cancelled) with its result spooled for the next start.
	a.stop()
	a.waitDrained()
	a.log.Info("node agent stopped")
	return nil
}

// load reads the state directory: the host record, the CA, the key and the
// certificate (completing a renewal that a crash interrupted), and the spool.
func (a *Agent) load() error {
	if err := a.dir.recoverCertificateSwap(); err != nil {
		return err
	}
	paired, err := a.dir.Paired()
	if err != nil {
		return err
	}
	if !paired {
		return fmt.Errorf("this node is not paired (no %s): pair it with `palyra node pair`, or give `palyra node run` a pairing code",
			a.dir.File(CertFile))
	}
	if a.host, err = a.dir.Host(); err != nil {
		return err
	}
	if a.host.URL == "" || a.host.DeviceID == "" {
		return fmt.Errorf("%s lacks palyrad's URL or the device id; pair again with `palyra node pair --force`", a.dir.File(HostFile))
	}
	if a.ca, err = a.dir.CA(); err != nil {
		return err
	}
	key, err := a.dir.Key()
	if err != nil {
		return err
	}
	if key == nil {
		return fmt.Errorf("%s is missing; pair again with `palyra node pair --force`", a.dir.File(KeyFile))
	}
	cert, err := a.dir.Certificate()
	if err != nil {
		return err
	}
	if err := a.setCertificate(key, cert); err != nil {
		return fmt.Errorf("%s: %w; pair again with `palyra node pair --force`", a.dir.File(CertFile), err)
	}
	// A crash between a renewal's swap and the host record's update leaves the
	// record behind: the certificate is the truth.
	if a.host.CertificateFingerprint != client.Fingerprint(cert) {
		h := *a.host
		if err := a.recordCertificate(&h, key, cert); err != nil {
			return err
		}
	}
	a.spool = newSpool(a.dir)
	return nil
}

// setCertificate checks that cert certifies key and names this node's device, and
// makes it the certificate of new connections.
func (a *Agent) setCertificate(key *ecdsa.PrivateKey, cert *x509.Certificate) error {
	if !certifies(cert, key) {
		return errors.New("the certificate does not certify the node's key")
	}
	id, err := deviceID(cert)
	if err != nil {
		return err
	}
	if id != a.host.DeviceID {
		return fmt.Errorf("the certificate names device %s, not %s", id, a.host.DeviceID)
	}
	a.useCertificate(key, cert)
	return nil
}

// credentials are a device certificate with its key, and the TLS sessions established
// with it (kept through failed handshakes: retry.SessionCache), which later connections resume (sparing palyrad and the node a full
// handshake; palyrad checks the certificate again at each resumption). Each
// certificate has sessions of its own: a session made with a certificate that was
// replaced is never resumed.
type credentials struct {
	cert     *tls.Certificate
	sessions *retry.SessionCache
}

// sessionsKept is how many TLS sessions the agent keeps, by server name: it talks to
// one palyrad URL.
const sessionsKept = 4

// useCertificate makes cert, with key, the certificate of new connections, with no TLS
// session to resume yet.
func (a *Agent) useCertificate(key *ecdsa.PrivateKey, cert *x509.Certificate) {
	a.creds.Store(&credentials{
		cert:     &tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert},
		sessions: retry.NewSessionCache(sessionsKept),
	})
}

// leaf returns the current device certificate.
func (a *Agent) leaf() *x509.Certificate { return a.creds.Load().cert.Leaf }

// recoverRan reads the ran log, reports as failed every dispatch a crash of the agent
// cut short (started, neither finished nor spooled), forgets ids older than
// ranLogRetention that have no spooled result, and opens the log for appending.
func (a *Agent) recoverRan() error {
	path := a.dir.File(RanLogFile)
	records, bad, err := readRanLog(path)
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	if bad > 0 {
		a.log.Warn("ignoring malformed lines of the ran log (a crash while writing one leaves it torn)", "path", path, "lines", bad)
	}
	ids, err := a.spool.ids()
	if err != nil {
		return fmt.Errorf("read the result spool: %w", err)
	}
	spooled := map[string]bool{}
	for _, id := range ids {
		spooled[id] = true
	}
	now := a.now()
	for id, r := range records {
		if r.finished || spooled[id] {
			continue
		}
		res := &nodev1.DispatchResult{
			DispatchId: id, Outcome: nodev1.DispatchOutcome_DISPATCH_OUTCOME_FAILED,
			Error: "the node agent restarted while running it", FinishTime: timestamppb.New(now),
		}
		if err := a.spool.put(res, nil); err != nil {
			return err
		}
		spooled[id] = true
		r.finished = true
		a.log.Warn("dispatch cut short by a restart of the agent: reporting it failed", "dispatch_id", id)
	}
	for id, r := range records {
		if now.Sub(r.started) > ranLogRetention && !spooled[id] {
			delete(records, id)
		}
	}
	if err := a.dir.mkdir(); err != nil {
		return err
	}
	if err := rewriteRanLog(path, records); err != nil {
		return fmt.Errorf("compact %s: %w", path, err)
	}
	if a.ran, err = openRanLog(path); err != nil {
		return err
	}
	for id, r := range records {
		a.ranIDs[id] = r.started
	}
	return nil
}

// attachLoop attaches to palyrad and runs sessions until ctx ends, waiting between
// attempts by tune.attach (retry.AttachBackoff): exponential with full jitter after a
// failure that may be palyrad's overload, so that an overloaded palyrad is not
// hammered; within a short ceiling after a refused dial (nothing listens: palyrad is
// restarting), so that the node is back soon after palyrad is. A stable attach resets
// the backoff: a session that was welcomed and held for tune.attach.Stable, so that a
// node whose replica comes back after failures returns at once, while a replica that
// welcomes and drops at once still sees the waits grow. It runs on Run's goroutine.
func (a *Agent) attachLoop(ctx context.Context) {
	b := a.tune.attach
	b.Rand = a.rand
	for ctx.Err() == nil {
		attached, err := a.attach(ctx)
		if ctx.Err() != nil {
			return
		}
		var since time.Time // when the session began: zero when none did
		a.updateStatus(func(s *AgentStatus) {
			since = s.AttachedSince
			s.Attached, s.SessionID, s.AttachedSince = false, "", time.Time{}
			if err != nil {
				s.LastError = err.Error()
			}
		})
		if attached && !since.IsZero() {
			b.Held(a.now().Sub(since))
		}
		if !attached && err != nil {
			a.creds.Load().sessions.Settle(err)
		}
		wait := b.After(err)
		a.logSessionEnd(attached, err, wait)
		if retry.Sleep(ctx, wait) != nil {
			return
		}
	}
}

// logSessionEnd logs why an attempt or a session ended, and when the next begins.
func (a *Agent) logSessionEnd(attached bool, err error, wait time.Duration) {
	url := a.host.URL
	if err == nil {
		a.log.Info("session ended by palyrad; reconnecting", "retry_in", wait.Round(time.Millisecond))
		return
	}
	msg := "cannot attach to palyrad"
	if attached {
		msg = "session lost"
	}
	code := connect.CodeOf(err)
	attrs := []any{"code", code.String(), "err", client.Explain(err, url).Error(), "retry_in", wait.Round(time.Millisecond)}
	if certificateRefused(err) {
		a.log.Error(msg+": palyrad refused this node's certificate. If it was revoked or has expired, the node must "+
			"pair again: palyra node pair --force --state-dir "+a.dir.Path(), attrs...)
		return
	}
	a.log.Warn(msg, attrs...)
}

// certificateRefused reports whether err says palyrad refused the node's certificate:
// an Unauthenticated or PermissionDenied answer, or a TLS alert from the server.
func certificateRefused(err error) bool {
	switch connect.CodeOf(err) {
	case connect.CodeUnauthenticated, connect.CodePermissionDenied:
		return true
	}
	return retry.TLSAlert(err)
}

// stop makes the agent accept no more dispatches and arms the drain timeout, at which
// the dispatches still running are cancelled. Calling it again does nothing.
func (a *Agent) stop() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.stopping {
		return
	}
	a.stopping = true
	a.drained = make(chan struct{})
	if n := len(a.running); n > 0 {
		a.log.Info("stopping: letting running dispatches finish", "running", n, "drain_timeout", a.drain)
	}
	a.drainAt = time.AfterFunc(a.drain, func() {
		a.mu.Lock()
		defer a.mu.Unlock()
		for id, e := range a.running {
			a.log.Warn("drain timeout: cancelling dispatch", "dispatch_id", id)
			e.cancel(errAgentStopping)
		}
	})
	go func() {
		a.execs.Wait()
		close(a.drained)
	}()
}

// waitDrained waits, after stop, until no dispatch runs, or until the drain timeout
// and the grace of cancelled dispatches have passed. It reports whether all ended.
func (a *Agent) waitDrained() bool {
	a.mu.Lock()
	drained := a.drained
	a.mu.Unlock()
	t := time.NewTimer(a.drain + a.tune.killGrace)
	defer t.Stop()
	select {
	case <-drained:
		a.mu.Lock()
		a.drainAt.Stop()
		a.mu.Unlock()
		return true
	case <-t.C:
		a.mu.Lock()
		defer a.mu.Unlock()
		for id := range a.running {
			a.log.Error("dispatch did not stop after it was cancelled; it will be reported failed at the next start", "dispatch_id", id)
		}
		return false
	}
}

// currentRegistry returns the capabilities the node offers now.
func (a *Agent) currentRegistry() *capability.Registry {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.registry
}

// SetRegistry replaces the capabilities the node offers (e.g. after node.toml was
// edited): new dispatches use reg, running ones finish with the capability they
// started with, and palyrad hears of the change at once (CapabilitiesChanged) or in
// the next hello. It may be called from any goroutine, while Run runs.
func (a *Agent) SetRegistry(reg *capability.Registry) {
	a.mu.Lock()
	a.registry = reg
	s := a.sess
	a.mu.Unlock()
	a.log.Info("capabilities changed", "capabilities", len(reg.Descriptors()))
	if s != nil {
		s.enqueue(capabilitiesChanged(reg))
	}
}

// runningCount returns how many dispatches run.
func (a *Agent) runningCount() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.running)
}

// session returns the attached session, or nil between sessions.
func (a *Agent) session() *session {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.sess
}

// emit queues msg on the attached session; without one it is dropped (results stay
// spooled and are sent by the next session).
func (a *Agent) emit(msg *nodev1.AttachRequest) {
	if s := a.session(); s != nil {
		s.enqueue(msg)
	}
}

// emitResult queues a result on the attached session, if any.
func (a *Agent) emitResult(r *nodev1.DispatchResult) {
	if s := a.session(); s != nil {
		s.enqueueResult(r)
	}
}

// randFraction returns a random number in [0, 1).
func (a *Agent) randFraction() float64 {
	const n = 1 << 30
	return float64(a.rand(n)) / n
}
