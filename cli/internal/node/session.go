package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/palyra/palyra/cli/internal/node/capability"
	nodev1 "github.com/palyra/palyra/gen/go/palyra/node/v1"
	"github.com/palyra/palyra/gen/go/palyra/node/v1/nodev1connect"
)

// ProtocolError is a message from palyrad that breaks the Attach protocol; it ends the
// session.
type ProtocolError struct {
	// Reason says what was wrong.
	Reason string
}

// Error implements error.
func (e *ProtocolError) Error() string { return "protocol error: " + e.Reason }

// errWelcomeTimeout ends an attempt whose Welcome did not come in time.
var errWelcomeTimeout = errors.New("palyrad did not answer the hello in time")

// newNodeClient returns a NodeService client that speaks HTTP/2 only, over mutual TLS:
// it trusts the pinned CA alone and presents the current device certificate, or
// resumes a TLS session made with it (credentials), so that a renewed certificate
// serves the next client. Each call of newNodeClient has connections of its own;
// closeIdle closes them once its calls are over.
func (a *Agent) newNodeClient() (nodes nodev1connect.NodeServiceClient, closeIdle func(), err error) {
	u, err := url.Parse(a.host.URL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, nil, fmt.Errorf("%s: palyrad's URL %q is not https://host:port", a.dir.File(HostFile), a.host.URL)
	}
	roots := x509.NewCertPool()
	roots.AddCert(a.ca)
	creds := a.creds.Load()
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{
			MinVersion: tls.VersionTLS12,
			RootCAs:    roots,
			ServerName: u.Hostname(),
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
				return creds.cert, nil
			},
			ClientSessionCache: creds.sessions,
		},
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout: 10 * time.Second,
		// Pings find a dead connection that TCP would take minutes to notice.
		HTTP2: &http.HTTP2Config{SendPingTimeout: 30 * time.Second, PingTimeout: 15 * time.Second},
	}
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetHTTP2(true)
	return nodev1connect.NewNodeServiceClient(&http.Client{Transport: tr}, u.String()), tr.CloseIdleConnections, nil
}

// hello is the node's first message, announcing the capabilities of reg.
func (a *Agent) hello(reg *capability.Registry) *nodev1.AttachRequest {
	return &nodev1.AttachRequest{Message: &nodev1.AttachRequest_Hello{Hello: &nodev1.Hello{
		DeviceId: a.host.DeviceID, Platform: a.platform, AgentVersion: a.version,
		ProtocolVersions: []uint32{ProtocolVersion}, Labels: a.labels, Capabilities: capabilityProtos(reg),
	}}}
}

// capabilitiesChanged is the message that announces the capabilities of reg (step 9).
func capabilitiesChanged(reg *capability.Registry) *nodev1.AttachRequest {
	return &nodev1.AttachRequest{Message: &nodev1.AttachRequest_CapabilitiesChanged{
		CapabilitiesChanged: &nodev1.CapabilitiesChanged{Capabilities: capabilityProtos(reg)},
	}}
}

// capabilityProtos describes the capabilities of reg for palyrad.
func capabilityProtos(reg *capability.Registry) []*nodev1.Capability {
	var caps []*nodev1.Capability
	for _, d := range reg.Descriptors() {
		caps = append(caps, &nodev1.Capability{
			Name: d.Name, Description: d.Description, InputSchema: string(d.InputSchema), Available: d.Available,
			Models: d.Models,
		})
	}
	return caps
}

// attach opens an Attach stream, sends the hello, waits for the welcome and runs the
// session until it ends. attached says whether a welcome came. When ctx ends during
// the session, the session drains (see Agent.stop) before it closes the stream; a nil
// error is a stream that palyrad or the drain ended.
func (a *Agent) attach(ctx context.Context) (attached bool, err error) {
	nodes, closeIdle, err := a.newNodeClient()
	if err != nil {
		return false, err
	}
	defer closeIdle()
	// The stream outlives ctx, to drain; cancel ends it.
	sctx, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
	stream := nodes.Attach(sctx)
	defer func() {
		// HTTP/2 notices a cancelled request only once its body is closed; and
		// CloseResponse drains what palyrad still sends, which needs the cancel first.
		cancel(nil)
		stream.CloseRequest()
		stream.CloseResponse()
	}()
	announced := a.currentRegistry()
	if err := stream.Send(a.hello(announced)); err != nil && !errors.Is(err, io.EOF) {
		return false, err
	}
	type received struct {
		msg *nodev1.AttachResponse
		err error
	}
	got := make(chan received, 1)
	go func() {
		msg, err := stream.Receive()
		got <- received{msg, err}
	}()
	abort := func(cause error) error {
		cancel(cause)
		stream.CloseRequest()
		<-got
		return cause
	}
	var msg *nodev1.AttachResponse
	welcomeTimer := time.NewTimer(a.tune.welcomeTimeout)
	defer welcomeTimer.Stop()
	select {
	case r := <-got:
		if r.err != nil {
			return false, r.err
		}
		msg = r.msg
	case <-welcomeTimer.C:
		return false, abort(errWelcomeTimeout)
	case <-ctx.Done():
		return false, abort(ctx.Err())
	}
	w := msg.GetWelcome()
	switch {
	case w == nil:
		return false, &ProtocolError{Reason: fmt.Sprintf("palyrad answered the hello with %T, not a welcome", msg.GetMessage())}
	case w.GetProtocolVersion() != ProtocolVersion:
		return false, &ProtocolError{Reason: fmt.Sprintf("palyrad chose protocol version %d; this agent speaks %d only",
			w.GetProtocolVersion(), ProtocolVersion)}
	}
	interval := w.GetHeartbeatInterval().AsDuration()
	switch {
	case w.GetHeartbeatInterval() == nil || interval <= 0:
		interval = 15 * time.Second
	case interval < 100*time.Millisecond:
		interval = 100 * time.Millisecond
	}
	s := &session{
		a: a, id: w.GetSessionId(), stream: stream, interval: interval, announced: announced,
		queued: map[string]bool{}, wake: make(chan struct{}, 1),
	}
	a.log.Info("attached to palyrad", "session_id", s.id, "url", a.host.URL, "heartbeat_interval", interval)
	if st := w.GetServerTime(); st != nil {
		if skew := a.now().Sub(st.AsTime()); skew > time.Minute || skew < -time.Minute {
			a.log.Warn("this node's clock differs from palyrad's", "skew", skew.Round(time.Second))
		}
	}
	return true, s.run(ctx, sctx, cancel)
}

// session is one attached Attach stream.
type session struct {
	a        *Agent
	id       string
	stream   *connect.BidiStreamForClient[nodev1.AttachRequest, nodev1.AttachResponse]
	interval time.Duration
	// announced is the registry the hello announced; set before the session runs.
	announced *capability.Registry

	mu      sync.Mutex // guards the following
	queue   []*nodev1.AttachRequest
	queued  map[string]bool // results queued by this session and not acknowledged
	closing bool            // the sender closes the stream once the queue is empty
	ended   bool            // the session is over: enqueue drops

	wake chan struct{} // wakes the sender; 1-buffered
}

// enqueue queues msg for the sender. The queue is unbounded: dispatches never block on
// a slow connection, and their output caps bound it.
func (s *session) enqueue(msg *nodev1.AttachRequest) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.enqueueLocked(msg)
}

// enqueueLocked is enqueue with s.mu held.
func (s *session) enqueueLocked(msg *nodev1.AttachRequest) {
	if s.ended {
		return
	}
	s.queue = append(s.queue, msg)
	s.wakeSender()
}

// wakeSender makes the sender look at the queue again.
func (s *session) wakeSender() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// enqueueResult queues a result unless this session queued it already and it was not
// acknowledged.
func (s *session) enqueueResult(r *nodev1.DispatchResult) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.enqueueResultLocked(r)
}

// enqueueResultLocked is enqueueResult with s.mu held.
func (s *session) enqueueResultLocked(r *nodev1.DispatchResult) {
	if s.queued[r.GetDispatchId()] {
		return
	}
	s.queued[r.GetDispatchId()] = true
	s.enqueueLocked(&nodev1.AttachRequest{Message: &nodev1.AttachRequest_Result{Result: r}})
}

// replay queues, at the start of a session, the output of the running dispatches, then
// the spooled results, each after its output: a lost session may have dropped any of
// them, and palyrad ignores what it has already (output it stored, results of ended
// dispatches). The output of a result comes from memory, or from the spool after a
// restart of the agent. The caller holds a.mu and s.mu.
func (s *session) replay(results []*spooled) {
	a := s.a
	for _, id := range slices.Sorted(maps.Keys(a.running)) {
		s.enqueueAllLocked(a.running[id].out.sent())
	}
	for _, sp := range results {
		s.enqueueAllLocked(a.outputOf(sp))
		s.enqueueResultLocked(sp.result)
	}
}

// enqueueAllLocked queues msgs in order; the caller holds s.mu.
func (s *session) enqueueAllLocked(msgs []*nodev1.AttachRequest) {
	for _, m := range msgs {
		s.enqueueLocked(m)
	}
}

// resendResult queues a spooled result that palyrad asked for again, whether or not
// this session sent it already, after its output. The caller holds a.mu.
func (s *session) resendResult(sp *spooled) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.enqueueAllLocked(s.a.outputOf(sp))
	delete(s.queued, sp.result.GetDispatchId())
	s.enqueueResultLocked(sp.result)
}

// outputOf returns the output sent before a spooled result: the agent's own, or the
// spool's after a restart. The caller holds a.mu.
func (a *Agent) outputOf(sp *spooled) []*nodev1.AttachRequest {
	if out := a.unacked[sp.result.GetDispatchId()]; out != nil {
		return out.sent()
	}
	return sp.output
}

// acked forgets an acknowledged result.
func (s *session) acked(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.queued, id)
}

// unacked returns how many results this session sent without an ack.
func (s *session) unacked() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queued)
}

// run runs an attached session on the attach loop's goroutine: it re-sends the
// spooled results, then handles palyrad's messages until the stream ends. When ctx
// ends it stops taking dispatches, drains, waits briefly for the last acks and closes
// the stream. cancel ends the stream (sctx).
func (s *session) run(ctx, sctx context.Context, cancel context.CancelCauseFunc) error {
	a := s.a
	// Step 3: the output and results palyrad may have missed go first. They are
	// queued while the session becomes the agent's, so that what comes meanwhile is
	// either among them or emitted to this session after them.
	a.mu.Lock()
	results, bad, err := a.spool.all()
	if err == nil {
		s.mu.Lock()
		s.replay(results)
		if a.registry != s.announced {
			// SetRegistry ran between the hello and now.
			s.enqueueLocked(capabilitiesChanged(a.registry))
		}
		s.mu.Unlock()
		a.sess = s
	}
	a.mu.Unlock()
	if err != nil {
		return fmt.Errorf("read the result spool: %w", err)
	}
	for _, e := range bad {
		a.log.Error("cannot read a spooled result; it is left in place", "err", e)
	}
	if len(results) > 0 {
		a.log.Info("re-sending unacknowledged results", "results", len(results))
	}
	since := a.now().UTC()
	a.updateStatus(func(st *AgentStatus) {
		st.Attached, st.SessionID, st.AttachedSince, st.LastError = true, s.id, since, ""
	})

	var wg sync.WaitGroup
	senderErr := make(chan error, 1)
	wg.Go(func() { senderErr <- s.sender(sctx) })
	msgs := make(chan *nodev1.AttachResponse)
	readErr := make(chan error, 1)
	wg.Go(func() {
		for {
			m, err := s.stream.Receive()
			if err != nil {
				readErr <- err
				return
			}
			select {
			case msgs <- m:
			case <-sctx.Done():
				readErr <- context.Cause(sctx)
				return
			}
		}
	})
	defer func() {
		a.mu.Lock()
		if a.sess == s {
			a.sess = nil
		}
		a.mu.Unlock()
		s.mu.Lock()
		s.ended = true
		s.mu.Unlock()
		cancel(nil)
		wg.Wait()
	}()

	stopping := ctx.Done()
	var drained chan struct{}
	var closeTimeout <-chan time.Time
	for {
		select {
		case m := <-msgs:
			if err := s.handle(m); err != nil {
				a.log.Warn("ending the session", "err", err)
				return err
			}
		case err := <-readErr:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case err := <-senderErr:
			if err == nil || errors.Is(err, io.EOF) {
				// The stream's real end comes from Receive: wait for it.
				senderErr = nil
				continue
			}
			return err
		case <-stopping:
			stopping = nil
			a.stop()
			drained = make(chan struct{})
			go func() {
				a.waitDrained()
				s.waitAcks(a.tune.ackWait)
				close(drained)
			}()
		case <-drained:
			drained = nil
			s.mu.Lock()
			s.closing = true
			s.mu.Unlock()
			s.wakeSender()
			closeTimeout = time.After(a.tune.closeWait)
		case <-closeTimeout:
			return nil
		}
	}
}

// waitAcks waits up to d for palyrad to acknowledge the results this session sent.
func (s *session) waitAcks(d time.Duration) {
	deadline := time.Now().Add(d)
	for s.unacked() > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
}

// sender runs in its own goroutine and owns stream.Send: it sends what is queued, and a
// heartbeat every interval; once the session is closing and the queue empty it closes
// its side of the stream.
func (s *session) sender(ctx context.Context) error {
	// However the sender ends, it closes the request: HTTP/2 notices a cancelled
	// stream only once the request body is closed, and the reader waits for that.
	defer s.stream.CloseRequest()
	hb := time.NewTicker(s.interval)
	defer hb.Stop()
	for {
		s.mu.Lock()
		batch, closing := s.queue, s.closing
		s.queue = nil
		s.mu.Unlock()
		for _, m := range batch {
			if err := s.stream.Send(m); err != nil {
				return err
			}
		}
		if closing && len(batch) == 0 {
			return s.stream.CloseRequest()
		}
		if len(batch) > 0 {
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.wake:
		case <-hb.C:
			running := s.a.runningCount()
			if err := s.stream.Send(&nodev1.AttachRequest{Message: &nodev1.AttachRequest_Heartbeat{
				Heartbeat: &nodev1.Heartbeat{Running: uint32(running)},
			}}); err != nil {
				return err
			}
			now := s.a.now().UTC()
			s.a.updateStatus(func(st *AgentStatus) { st.LastHeartbeat, st.Running = now, running })
		}
	}
}

// handle handles one message from palyrad on the session's goroutine. An error ends
// the session.
func (s *session) handle(m *nodev1.AttachResponse) error {
	switch m := m.GetMessage().(type) {
	case *nodev1.AttachResponse_Dispatch:
		return s.dispatch(m.Dispatch)
	case *nodev1.AttachResponse_Cancel:
		s.a.cancelDispatch(m.Cancel.GetDispatchId(), m.Cancel.GetReason())
		return nil
	case *nodev1.AttachResponse_ResultAck:
		id := m.ResultAck.GetDispatchId()
		s.acked(id)
		s.a.mu.Lock()
		delete(s.a.unacked, id)
		s.a.mu.Unlock()
		if err := s.a.spool.remove(id); err != nil {
			s.a.log.Error("cannot remove an acknowledged result from the spool", "dispatch_id", id, "err", err)
		}
		return nil
	case *nodev1.AttachResponse_Welcome:
		return &ProtocolError{Reason: "a second welcome"}
	case nil:
		return &ProtocolError{Reason: "a message of a kind this agent does not know"}
	default:
		return &ProtocolError{Reason: fmt.Sprintf("unexpected message %T", m)}
	}
}

// dispatch handles a Dispatch (step 5): it runs a dispatch it has not run, once, and
// answers a repeated one with its spooled result.
func (s *session) dispatch(d *nodev1.Dispatch) error {
	a := s.a
	id, name := d.GetDispatchId(), d.GetCapability()
	if !ulidPattern.MatchString(id) {
		return &ProtocolError{Reason: fmt.Sprintf("malformed dispatch id %q", id)}
	}
	log := a.log.With("dispatch_id", id, "capability", name)
	a.mu.Lock()
	_, running := a.running[id]
	_, ran := a.ranIDs[id]
	stopping := a.stopping
	a.mu.Unlock()
	switch {
	case running:
		log.Debug("dispatch received again while it runs")
		return nil
	case ran:
		r, ok, err := a.spool.get(id)
		switch {
		case err != nil:
			log.Error("dispatch ran already, but its spooled result is unreadable", "err", err)
		case ok:
			log.Info("dispatch ran already: re-sending its result")
			a.mu.Lock()
			s.resendResult(r)
			a.mu.Unlock()
		default:
			log.Info("dispatch ran already and its result was acknowledged: ignoring it")
		}
		return nil
	case stopping:
		log.Info("stopping: not taking the dispatch")
		return nil
	}
	c, ok := a.currentRegistry().Lookup(name)
	if !ok || !c.Describe().Available {
		log.Warn("dispatch of a capability this node does not offer")
		s.enqueueResult(a.failedResult(id, fmt.Sprintf("capability %s is not available on this node", name)))
		return nil
	}
	// Never twice: the id is on disk before the dispatch runs.
	now := a.now()
	if err := a.ran.append(ranStarted, id, now); err != nil {
		log.Error("cannot record the dispatch; refusing it", "err", err)
		s.enqueueResult(a.failedResult(id, "the node cannot record the dispatch: "+err.Error()))
		return nil
	}
	input := json.RawMessage(d.GetInputJson())
	if len(input) == 0 {
		input = json.RawMessage("{}")
	}
	base, cancel := context.WithCancelCause(a.execBase)
	ctx, release := base, context.CancelFunc(func() {})
	if dl := d.GetDeadline(); dl != nil {
		ctx, release = context.WithDeadline(base, dl.AsTime())
	}
	e := &execution{id: id, cap: c, input: input, profile: d.GetBrowserProfile(), ctx: ctx, cancel: func(cause error) {
		cancel(cause)
		release()
	}}
	e.out = &outputPump{id: id, max: d.GetMaxOutputBytes(), chunk: a.tune.chunk, delay: a.tune.coalesce, emit: a.emit}
	a.mu.Lock()
	a.ranIDs[id] = now
	a.running[id] = e
	a.execs.Add(1)
	a.mu.Unlock()
	s.enqueue(&nodev1.AttachRequest{Message: &nodev1.AttachRequest_Accepted{Accepted: &nodev1.DispatchAccepted{DispatchId: id}}})
	log.Info("running dispatch", "deadline", d.GetDeadline().AsTime(), "max_output_bytes", d.GetMaxOutputBytes())
	go a.execute(e)
	return nil
}

// cancelDispatch cancels a running dispatch (step 8); one that does not run is left
// alone (it finished, or never came).
func (a *Agent) cancelDispatch(id, reason string) {
	a.mu.Lock()
	e := a.running[id]
	a.mu.Unlock()
	if e == nil {
		a.log.Debug("cancel of a dispatch that does not run", "dispatch_id", id)
		return
	}
	a.log.Info("cancelling dispatch", "dispatch_id", id, "reason", reason)
	e.cancel(&cancelledError{reason: reason})
}
