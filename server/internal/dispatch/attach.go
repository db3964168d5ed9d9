package dispatch

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/oklog/ulid/v2"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	nodev1 "github.com/palyra/palyra/gen/go/palyra/node/v1"
	"github.com/palyra/palyra/server/internal/access"
	"github.com/palyra/palyra/server/internal/audit"
	"github.com/palyra/palyra/server/internal/errdefs"
	"github.com/palyra/palyra/server/internal/requestctx"
	"github.com/palyra/palyra/server/internal/store"
)

// ProtocolVersion is the version of the Attach protocol this daemon speaks.
const ProtocolVersion = 1

// claimBatch is how many dispatches one delivery claims; more wait for the next round,
// so that a long queue does not hold up what the node sends meanwhile.
const claimBatch = 64

// NodeHandler serves NodeService.Attach; the daemon composes it with the other parts
// of NodeService.
type NodeHandler struct {
	s *Service
}

// NodeHandler returns the handler of the nodes' Attach streams.
func (s *Service) NodeHandler() *NodeHandler { return &NodeHandler{s: s} }

// Attach runs a node's stream: the protocol is on nodev1.AttachRequest.
//
// The handler's goroutine reads the stream itself and handles what it reads; what
// comes from elsewhere (dispatches to deliver, the acceptances due, the liveness
// check) is handled on a goroutine of its own while it lasts, one at a time with the
// node's messages (attachment.mu). An idle node thus costs the goroutines of its
// connection and this one. What must end the stream (a newer session, shutdown,
// silence, a failure outside the handler's goroutine) closes the request body, which
// ends the read in progress at once.
func (h *NodeHandler) Attach(ctx context.Context, stream *connect.BidiStream[nodev1.AttachRequest, nodev1.AttachResponse]) error {
	dev, ok := access.DeviceFrom(ctx)
	if !ok {
		return errdefs.New(errdefs.Unauthenticated, "no calling device")
	}
	body := requestctx.Body(ctx)
	if body == nil {
		return errdefs.New(errdefs.Internal, "attach: the request body is not in the context (requestctx.Middleware)")
	}
	audit.SetTarget(ctx, "device:"+dev.ID)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	a := &attachment{s: h.s, stream: stream, deviceID: dev.ID, body: body,
		known: map[string]*tracked{}, cancelsSent: map[string]bool{}, starting: map[string]bool{}}
	if ahead, ok := body.(interface{ Buffered() int }); ok {
		a.ahead = ahead
	}
	defer context.AfterFunc(ctx, func() { a.interrupt(ctx.Err()) })()
	defer a.stop()
	hello, err := a.hello()
	if err != nil {
		return err
	}
	if err := a.open(ctx, hello); err != nil {
		return err
	}
	defer a.close(ctx)
	return a.run(ctx)
}

// attachment is one Attach stream being served.
type attachment struct {
	s        *Service
	stream   *connect.BidiStream[nodev1.AttachRequest, nodev1.AttachResponse]
	deviceID string
	sess     *session
	// body is the request body, closed to end the handler's read (interrupt); ahead,
	// when the body reads ahead, says whether the next message has begun to arrive.
	body  io.Closer
	ahead interface{ Buffered() int }
	// endMu guards cause: why the stream must end, when something other than the
	// stream itself ended it.
	endMu sync.Mutex
	cause error
	// liveness checks, every heartbeat interval, that the node was heard from.
	liveness *time.Timer

	// mu serialises the handling of the node's messages, deliveries and the recording
	// of acceptances: it guards what follows, and is held while sending (but for the
	// welcome, sent before run).
	mu sync.Mutex
	// live is set while run serves the session: out of it, nothing but run's own
	// goroutine handles or sends anything (what a wake brings before, run's first
	// delivery sends).
	live bool
	// known are the dispatches of this device the session dealt with.
	known map[string]*tracked
	// cancelsSent are the dispatches this session asked the node to stop.
	cancelsSent map[string]bool
	// starting are the dispatches the node accepted that are not recorded as running
	// yet; startDue records them once due (nil when none waits).
	starting map[string]bool
	startDue *time.Timer
	// heartbeat is the interval the welcome told the node.
	heartbeat time.Duration
}

// tracked is what a session keeps of a dispatch of its device.
type tracked struct {
	createdAt time.Time
	maxOutput int64
	// stored is how much of its output is stored (output_stored) as the session last
	// read or wrote it; next is where the node's next chunk must begin: stored, and
	// what the round being handled gathered after it.
	stored, next int64
	// capped is true once the node sent output beyond the cap (dropped).
	capped bool
	// ended is true once the dispatch ended.
	ended bool
	// browserInput is the input of a dispatch of a browser capability; "" for others.
	browserInput string
}

// receive reads the node's next message. When the stream must end for a reason of
// its own (interrupt), the read ends at once and the reason is returned.
func (a *attachment) receive() (*nodev1.AttachRequest, error) {
	m, err := a.stream.Receive()
	if err == nil {
		return m, nil
	}
	if cause := a.ended(); cause != nil {
		return nil, cause
	}
	if errors.Is(err, io.EOF) {
		return nil, nil // the node closed its side
	}
	return nil, err
}

// interrupt ends the stream with cause (the first cause wins): the handler's read in
// progress, or its next one, returns it.
func (a *attachment) interrupt(cause error) {
	a.endMu.Lock()
	first := a.cause == nil
	if first {
		a.cause = cause
	}
	a.endMu.Unlock()
	if first {
		_ = a.body.Close()
	}
}

// ended returns why the stream was interrupted, or nil.
func (a *attachment) ended() error {
	a.endMu.Lock()
	defer a.endMu.Unlock()
	return a.cause
}

// hello waits for the node's hello and checks it.
func (a *attachment) hello() (*nodev1.Hello, error) {
	late := errdefs.New(errdefs.DeadlineExceeded, "attach protocol: no hello within %s", helloTimeout)
	timer := time.AfterFunc(helloTimeout, func() { a.interrupt(late) })
	m, err := a.receive()
	if !timer.Stop() {
		return nil, late
	}
	if err != nil || m == nil {
		return nil, err
	}
	hello := m.GetHello()
	if hello == nil {
		return nil, errProtocol("the first message must be a hello")
	}
	if hello.GetDeviceId() != a.deviceID {
		return nil, errdefs.New(errdefs.PermissionDenied,
			"the hello names device %s but the caller is device %s", hello.GetDeviceId(), a.deviceID)
	}
	if !slices.Contains(hello.GetProtocolVersions(), ProtocolVersion) {
		return nil, errFailedPrecondition("the node speaks Attach protocol versions %v and this daemon speaks %d: upgrade the older of the two",
			hello.GetProtocolVersions(), ProtocolVersion)
	}
	if err := a.s.checkCapabilities(hello.GetCapabilities()); err != nil {
		return nil, err
	}
	for k, v := range hello.GetLabels() {
		if strings.Contains(v, "\x00") {
			return nil, errProtocol("label %q holds a NUL character", k)
		}
	}
	return hello, nil
}

// checkCapabilities refuses duplicate names and input schemas that do not compile.
func (s *Service) checkCapabilities(caps []*nodev1.Capability) error {
	seen := map[string]bool{}
	for _, c := range caps {
		if seen[c.GetName()] {
			return errProtocol("capability %q is announced twice", c.GetName())
		}
		seen[c.GetName()] = true
		if strings.Contains(c.GetDescription()+c.GetInputSchema(), "\x00") {
			return errProtocol("capability %q holds a NUL character", c.GetName())
		}
		if c.GetInputSchema() == "" {
			continue
		}
		if _, err := s.schemas.compile(c.GetInputSchema()); err != nil {
			return errProtocol("capability %q: %v", c.GetName(), err)
		}
	}
	return nil
}

// open records the session, makes it the device's, and welcomes the node.
func (a *attachment) open(ctx context.Context, hello *nodev1.Hello) error {
	s := a.s
	caps := capabilitiesOf(hello.GetCapabilities())
	capsJSON, err := json.Marshal(caps)
	if err != nil {
		return fmt.Errorf("dispatch: capabilities: %w", err)
	}
	labels, err := labelsJSON(hello.GetLabels())
	if err != nil {
		return fmt.Errorf("dispatch: labels: %w", err)
	}
	now := s.opts.Now()
	id := ulid.Make().String()
	err = s.db.attach(ctx, attach{
		deviceID: a.deviceID, sessionID: id, replicaID: s.opts.ReplicaID, now: now,
		platform: hello.GetPlatform(), agentVersion: hello.GetAgentVersion(), protocolVersion: ProtocolVersion,
		capabilities: capsJSON, reportedLabels: labels,
	})
	if errors.Is(err, store.ErrNotFound) {
		return errFailedPrecondition("device %s is revoked or does not exist", a.deviceID)
	}
	if err != nil {
		return fmt.Errorf("dispatch: attach %s: %w", a.deviceID, err)
	}
	a.sess = newSession(a.deviceID, id, now)
	a.sess.capabilities.Store(&caps)
	a.sess.onWake = func() { go a.woken(ctx) }
	a.sess.onEnd = func() { a.interrupt(errSessionEnded(a.sess.cause)) }
	if err := s.sessions.add(a.sess); err != nil {
		a.detach(ctx)
		return errSessionEnded(err)
	}
	a.heartbeat = s.heartbeat()
	s.log.Info("node attached", "device_id", a.deviceID, "session_id", id, "platform", hello.GetPlatform(),
		"agent_version", hello.GetAgentVersion(), "capabilities", len(hello.GetCapabilities()))
	return a.stream.Send(&nodev1.AttachResponse{Message: &nodev1.AttachResponse_Welcome{Welcome: &nodev1.Welcome{
		SessionId:         id,
		ProtocolVersion:   ProtocolVersion,
		HeartbeatInterval: durationpb.New(a.heartbeat),
		MaxMessageBytes:   uint32(s.opts.MaxMessageBytes),
		ServerTime:        timestamppb.New(now),
	}}})
}

// close forgets the session and records that the node detached (unless a newer session
// replaced it, or the daemon is stopping: Service.DetachAll records it then).
func (a *attachment) close(ctx context.Context) {
	a.s.sessions.remove(a.sess)
	if !a.s.stopped() {
		a.detach(ctx)
	}
	a.s.log.Info("node detached", "device_id", a.deviceID, "session_id", a.sess.id)
}

// detach records that the session ended, even when ctx was cancelled (the stream's end
// usually cancels it).
func (a *attachment) detach(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := a.s.db.detach(ctx, a.deviceID, a.sess.id, a.s.opts.Now()); err != nil {
		a.s.log.Error("node detach not recorded; its presence turns offline by its silence", "device_id", a.deviceID, "err", err)
	}
}

// run serves the session until it ends: it reads the node's messages and handles
// them, a batch at a time.
func (a *attachment) run(ctx context.Context) error {
	a.mu.Lock()
	a.live = true
	a.liveness = time.AfterFunc(a.heartbeat, a.checkLiveness)
	err := a.deliver(ctx)
	a.mu.Unlock()
	if err != nil {
		return err
	}
	for {
		msgs, err := a.batch()
		if len(msgs) > 0 {
			a.sess.seen(a.s.opts.Now())
			a.mu.Lock()
			herr := a.handleBatch(ctx, msgs)
			a.mu.Unlock()
			if herr != nil {
				return herr
			}
		}
		if err != nil || msgs == nil {
			return err
		}
	}
}

// stop ends the handling of anything more: the handler returns.
func (a *attachment) stop() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.live = false
	if a.liveness != nil {
		a.liveness.Stop()
	}
	if a.startDue != nil {
		a.startDue.Stop()
	}
}

// woken delivers what the session was woken for, unless a delivery already took the
// wake.
func (a *attachment) woken(ctx context.Context) {
	a.mu.Lock()
	defer a.mu.Unlock()
	select {
	case <-a.sess.wake:
	default:
		return
	}
	if !a.live {
		return
	}
	if err := a.deliver(ctx); err != nil {
		a.interrupt(err)
	}
}

// checkLiveness ends the stream of a node silent for offlineAfter heartbeat intervals;
// it runs every interval.
func (a *attachment) checkLiveness() {
	hb := a.heartbeat
	silent := a.s.opts.Now().Sub(time.Unix(0, a.sess.lastSeen.Load()))
	if silent > offlineAfter*hb {
		a.interrupt(errdefs.New(errdefs.DeadlineExceeded, "attach protocol: nothing received for %s", silent.Round(time.Second)))
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.live {
		a.liveness.Reset(hb)
	}
}

// deliver sends the node the dispatches it must run and the cancellations it must
// apply: those this replica created and handed to the session (stored as sent on it),
// then, when there may be some, those it claims from the database. A claim does not
// wait for the disk (store.Lossy): a claim a crash forgets is a dispatch queued again,
// which the node recognises by its id.
func (a *attachment) deliver(ctx context.Context) error {
	for _, d := range a.sess.takeDirect() {
		if err := a.send(ctx, d); err != nil {
			return err
		}
	}
	if a.sess.claim.Swap(false) {
		if err := a.claim(ctx); err != nil {
			return err
		}
	}
	if !a.sess.cancels.Swap(false) {
		return nil
	}
	cancels, err := a.s.db.cancelRequests(ctx, a.deviceID)
	if err != nil {
		return fmt.Errorf("dispatch: cancellations for %s: %w", a.deviceID, err)
	}
	for _, d := range cancels {
		if a.cancelsSent[d.ID] {
			continue
		}
		a.track(d)
		if err := a.stream.Send(&nodev1.AttachResponse{Message: &nodev1.AttachResponse_Cancel{Cancel: &nodev1.Cancel{
			DispatchId: d.ID, Reason: d.CancelReason,
		}}}); err != nil {
			return err
		}
		a.cancelsSent[d.ID] = true
	}
	return nil
}

// claim claims the dispatches waiting for the device and sends them.
func (a *attachment) claim(ctx context.Context) error {
	claims, err := a.s.db.claim(ctx, a.sess.id, a.deviceID, a.s.opts.Now(), claimBatch)
	if err != nil {
		return fmt.Errorf("dispatch: claim for %s: %w", a.deviceID, err)
	}
	// In creation order (UPDATE ... RETURNING keeps none).
	slices.SortFunc(claims, func(x, y Dispatch) int {
		if c := x.CreatedAt.Compare(y.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(x.ID, y.ID)
	})
	for _, d := range claims {
		if err := a.send(ctx, d); err != nil {
			return err
		}
	}
	if len(claims) == claimBatch {
		// More after what the node sent meanwhile.
		a.sess.claim.Store(true)
		a.sess.signal()
	}
	return nil
}

// send sends the node a dispatch stored as sent on this session. A dispatch of a
// browser capability goes with its profile, resolved now; when it cannot be (the
// profile was deleted, say), the dispatch fails with the reason, unsent.
func (a *attachment) send(ctx context.Context, d Dispatch) error {
	a.track(d)
	m := dispatchMessage(d)
	if IsBrowser(d.Capability) {
		if a.s.opts.Browser == nil { // created on a replica that serves profiles
			return a.failUnsent(ctx, d, errNoBrowserProfiles(d.Capability))
		}
		profile, err := a.s.opts.Browser.Profile(ctx, d.ID, d.Input)
		var k errdefs.Kinded
		if errors.As(err, &k) {
			return a.failUnsent(ctx, d, err)
		}
		if err != nil {
			return fmt.Errorf("dispatch: the browser profile of %s: %w", d.ID, err)
		}
		m.GetDispatch().BrowserProfile = profile
	}
	return a.stream.Send(m)
}

// failUnsent ends a dispatch that could not be sent as failed, with why as its error,
// as if the node had reported it.
func (a *attachment) failUnsent(ctx context.Context, d Dispatch, why error) error {
	a.s.log.Warn("dispatch failed before it was sent", "dispatch_id", d.ID, "device_id", a.deviceID,
		"capability", d.Capability, "err", why)
	r := newRound()
	msg := errdefs.KindOf(why).String()
	var e *errdefs.Error
	if errors.As(why, &e) {
		msg = e.Message
	}
	res := &nodev1.DispatchResult{DispatchId: d.ID, Outcome: nodev1.DispatchOutcome_DISPATCH_OUTCOME_FAILED,
		Error: "palyrad did not send it: " + msg}
	if err := a.result(ctx, res, &r); err != nil {
		return err
	}
	return a.finish(ctx, &r)
}

// track returns what the session keeps of d, as just read, starting to keep it if need
// be, and notes whether d ended. Within a round it is called only for a dispatch the
// session does not track yet (own): it resets where the next chunk must begin.
func (a *attachment) track(d Dispatch) *tracked {
	t := a.known[d.ID]
	if t == nil {
		t = &tracked{createdAt: d.CreatedAt, maxOutput: d.MaxOutputBytes}
		if IsBrowser(d.Capability) {
			t.browserInput = d.Input
		}
		a.known[d.ID] = t
	}
	t.storedAs(d.OutputStored)
	t.ended = t.ended || d.State.Terminal()
	return t
}

// storedAs notes that the database holds n bytes of the dispatch's output.
func (t *tracked) storedAs(n int64) { t.stored, t.next = n, n }

// maxBatch is the most node messages handled in one round (and one statement).
const maxBatch = 64

// batch reads the node's next message, and those after it that have begun to arrive
// already, up to maxBatch: a node's accepted, output and result usually come together.
// It returns what it read with the error that stopped it, and no message once the
// node closed its side.
func (a *attachment) batch() ([]*nodev1.AttachRequest, error) {
	var msgs []*nodev1.AttachRequest
	for len(msgs) == 0 || len(msgs) < maxBatch && a.ahead != nil && a.ahead.Buffered() > 0 {
		m, err := a.receive()
		if err != nil || m == nil {
			return msgs, err
		}
		msgs = append(msgs, m)
	}
	return msgs, nil
}

// round gathers what one batch of node messages reports, to be written with one
// statement (RecordReports), and what is left to do once it is committed.
type round struct {
	reports reports
	// ending are the dispatches ended in this round.
	ending map[string]*tracked
	// gathered are the chunks of output to store, by dispatch, each beginning where
	// the one before ends; repeats are the chunks (or parts) the node sent again, to
	// compare with what is stored.
	gathered map[string][]OutputChunk
	repeats  []repeat
	acks     []string   // results to acknowledge once committed
	ended    []Dispatch // dispatches the round ended, as stored
}

// repeat is a chunk of output (or its first part) that the node sent again.
type repeat struct {
	OutputChunk
	// stored is how much output was stored when the round began: the repeat is
	// compared with the stored output before it, and with what the round gathered
	// after it.
	stored int64
}

// handleBatch handles messages from the node, writing what they report with one
// statement, then acknowledges the results: an ack promises the result is durable.
// A dispatch accepted and ended in the same round goes straight to its end.
func (a *attachment) handleBatch(ctx context.Context, msgs []*nodev1.AttachRequest) error {
	r := newRound()
	for _, m := range msgs {
		if err := a.handle(ctx, m, &r); err != nil {
			return err
		}
	}
	if err := a.finish(ctx, &r); err != nil {
		return err
	}
	for _, id := range r.acks {
		if err := a.stream.Send(&nodev1.AttachResponse{Message: &nodev1.AttachResponse_ResultAck{ResultAck: &nodev1.ResultAck{DispatchId: id}}}); err != nil {
			return err
		}
	}
	return nil
}

// newRound returns an empty round.
func newRound() round {
	return round{ending: map[string]*tracked{}, gathered: map[string][]OutputChunk{}}
}

// finish records what the round gathered and wakes the waiters of the dispatches it
// ended.
func (a *attachment) finish(ctx context.Context, r *round) error {
	// Waiters on this replica get the ended rows from here, not by the notification.
	a.s.hub.ends(r.reports.EndIds)
	err := a.record(ctx, r)
	now := a.s.opts.Now()
	for i := range r.ended {
		d := &r.ended[i]
		a.s.hub.end(d)
		a.forget(d.ID)
		a.s.metrics.reported(d.State, now.Sub(d.CreatedAt))
		a.s.log.Info("dispatch ended", "dispatch_id", d.ID, "device_id", a.deviceID, "state", d.State, "exit_code", d.ExitCode)
	}
	a.s.hub.done(r.reports.EndIds)
	return err
}

// startDelay is how long an acceptance may wait to be recorded, in case the node's
// result follows: most dispatches end within it, and their acceptance then costs no
// write of its own (the end records the start as well).
const startDelay = 50 * time.Millisecond

// record writes what the round gathered, with the acceptances waiting, and learns which
// ends took. A round of acceptances alone waits up to startDelay for more.
func (a *attachment) record(ctx context.Context, r *round) error {
	if err := a.compareRepeats(ctx, r); err != nil {
		return err
	}
	p := &r.reports
	if len(p.OutputIds)+len(p.EndIds) == 0 {
		if len(a.starting) > 0 && a.startDue == nil {
			a.startDue = time.AfterFunc(startDelay, func() { a.startsDue(ctx) })
		}
		return nil
	}
	p.StartIds = a.takeStarts(r.ending)
	p.DeviceID, p.Now = a.deviceID, a.s.opts.Now()
	rows, err := a.s.db.recordReports(ctx, *p)
	if err != nil {
		return fmt.Errorf("dispatch: record the reports of %s: %w", a.deviceID, err)
	}
	for _, d := range rows {
		ended := r.ending[d.ID] != nil && d.State.Terminal()
		if ended && a.s.hub.waited(d.ID) {
			d.output = whole(r.gathered[d.ID], d.OutputStored)
		}
		if t := a.known[d.ID]; t != nil {
			t.storedAs(d.OutputStored)
			delete(r.gathered, d.ID)
		}
		if ended {
			r.ending[d.ID].ended = true
			delete(r.ending, d.ID)
			r.ended = append(r.ended, d)
		}
	}
	// Output gathered for a dispatch that did not change: it ended meanwhile, or was
	// never sent. The next report about it reads it again.
	for id := range r.gathered {
		if r.ending[id] == nil {
			a.forget(id)
		}
	}
	// The ends that did not take: the dispatch ended already (the sweeper, an earlier
	// report), or was never sent to this node.
	for id, t := range r.ending {
		d, err := a.s.db.dispatch(ctx, id)
		if err != nil {
			return fmt.Errorf("dispatch: finish %s: %w", id, err)
		}
		if d.State == StateQueued {
			return errProtocol("dispatch %s was never sent to this node", id)
		}
		t.ended = true
		a.forget(id)
	}
	return nil
}

// maxHandedOutput bounds the output handed to the waiters with the ended row.
const maxHandedOutput = 64 << 10

// whole returns a copy of chunks, the output a round gathered for a dispatch, when they
// are all of its stored output (from offset 0 to stored, contiguous) and at most
// maxHandedOutput bytes; else nil.
func whole(chunks []OutputChunk, stored int64) []OutputChunk {
	if stored > maxHandedOutput {
		return nil
	}
	out, data := make([]OutputChunk, 0, len(chunks)), make([]byte, 0, stored)
	for _, c := range chunks {
		if c.Offset != int64(len(data)) || c.Offset+int64(len(c.Data)) > stored {
			return nil
		}
		data = append(data, c.Data...)
		c.Data = data[c.Offset:len(data):len(data)]
		out = append(out, c)
	}
	if int64(len(data)) != stored {
		return nil
	}
	return out
}

// forget drops what the session keeps of a dispatch that ended: a late message about it
// reads it from the database again (own).
func (a *attachment) forget(id string) {
	delete(a.known, id)
	delete(a.cancelsSent, id)
}

// takeStarts returns the acceptances waiting to be recorded, but those of dispatches
// the round ends, and forgets them.
func (a *attachment) takeStarts(ending map[string]*tracked) []string {
	var ids []string
	for id := range a.starting {
		if ending[id] == nil {
			ids = append(ids, id)
		}
	}
	clear(a.starting)
	return ids
}

// startsDue records the acceptances once startDelay passed.
func (a *attachment) startsDue(ctx context.Context) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.live {
		return
	}
	a.startDue = nil
	if err := a.recordStarts(ctx); err != nil {
		a.interrupt(err)
	}
}

// recordStarts records the acceptances that waited startDelay. A crash that forgets
// one leaves its dispatch sent, which the node's result ends as well, so the commit
// need not wait for the disk (store.Lossy).
func (a *attachment) recordStarts(ctx context.Context) error {
	ids := a.takeStarts(nil)
	if len(ids) == 0 {
		return nil
	}
	if err := a.s.db.recordStarts(ctx, a.deviceID, ids, a.s.opts.Now()); err != nil {
		return fmt.Errorf("dispatch: record the acceptances of %s: %w", a.deviceID, err)
	}
	return nil
}

// handle handles one message from the node, gathering what it reports into r.
func (a *attachment) handle(ctx context.Context, m *nodev1.AttachRequest, r *round) error {
	switch msg := m.GetMessage().(type) {
	case *nodev1.AttachRequest_Heartbeat:
		a.s.metrics.received(msgHeartbeat)
		return nil
	case *nodev1.AttachRequest_Accepted:
		a.s.metrics.received(msgAccepted)
		return a.accepted(ctx, msg.Accepted.GetDispatchId())
	case *nodev1.AttachRequest_Output:
		a.s.metrics.received(msgOutput)
		return a.output(ctx, msg.Output, r)
	case *nodev1.AttachRequest_Result:
		a.s.metrics.received(msgResult)
		return a.result(ctx, msg.Result, r)
	case *nodev1.AttachRequest_CapabilitiesChanged:
		a.s.metrics.received(msgCapabilitiesChanged)
		return a.capabilitiesChanged(ctx, msg.CapabilitiesChanged.GetCapabilities())
	case *nodev1.AttachRequest_Hello:
		return errProtocol("hello sent twice")
	}
	return errProtocol("unknown message")
}

// own returns what the session tracks of a dispatch of its device, refusing a dispatch
// that is not the device's: the refusal is audited (as the target of the Attach call's
// record) and ends the stream.
func (a *attachment) own(ctx context.Context, id string) (*tracked, error) {
	if t := a.known[id]; t != nil {
		return t, nil
	}
	d, err := a.s.db.dispatch(ctx, id)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("dispatch: %s: %w", id, err)
	}
	if err != nil || d.NodeID != a.deviceID {
		audit.SetTarget(ctx, "dispatch:"+id)
		a.s.log.Warn("node reported on a dispatch that is not its own; stream ended",
			"device_id", a.deviceID, "dispatch_id", id)
		return nil, errdefs.New(errdefs.PermissionDenied, "dispatch %s is not a dispatch of device %s", id, a.deviceID)
	}
	return a.track(d), nil
}

// accepted notes that the node started a dispatch, to be recorded with the next
// round that writes, or after startDelay.
func (a *attachment) accepted(ctx context.Context, id string) error {
	t, err := a.own(ctx, id)
	if err != nil || t.ended {
		return err
	}
	a.starting[id] = true
	return nil
}

// output gathers a chunk of output within the dispatch's cap; what goes beyond is
// dropped and the dispatch marked truncated. Output is contiguous: a chunk begins where
// the output stored (and gathered) so far ends, or repeats part of it, which must be
// the same bytes (compareRepeats) and is not stored again; a gap ends the stream.
func (a *attachment) output(ctx context.Context, o *nodev1.DispatchOutput, r *round) error {
	id := o.GetDispatchId()
	t, err := a.own(ctx, id)
	if err != nil || t.ended || r.ending[id] != nil {
		return err
	}
	data := o.GetData()
	if o.GetOffset() >= uint64(t.maxOutput) {
		t.capped = t.capped || len(data) > 0
		return nil
	}
	off, stream := int64(o.GetOffset()), streamNames[o.GetStream()]
	if rest := t.maxOutput - off; int64(len(data)) > rest {
		data, t.capped = data[:rest], true
	}
	if off > t.next {
		return errProtocol("dispatch %s: output at offset %d leaves a gap: its output ends at %d", id, off, t.next)
	}
	if off < t.next {
		n := min(int64(len(data)), t.next-off)
		r.repeats = append(r.repeats, repeat{OutputChunk{DispatchID: id, Offset: off, Stream: stream, Data: data[:n]}, t.stored})
		off, data = off+n, data[n:]
	}
	if len(data) == 0 {
		return nil
	}
	chunk := OutputChunk{DispatchID: id, Offset: off, Stream: stream, Data: data}
	t.next += int64(len(data))
	r.gathered[id] = append(r.gathered[id], chunk)
	p := &r.reports
	p.OutputIds = append(p.OutputIds, id)
	p.OutputOffsets = append(p.OutputOffsets, off)
	p.OutputStreams = append(p.OutputStreams, stream)
	p.OutputData = append(p.OutputData, data)
	return nil
}

// compareRepeats checks that the chunks the node sent again in round r are what is
// stored, or was gathered earlier in the round: another stream or other bytes at the
// same offset break the protocol. The stored output is read once per dispatch.
func (a *attachment) compareRepeats(ctx context.Context, r *round) error {
	if len(r.repeats) == 0 {
		return nil
	}
	spans := map[string][2]int64{} // by dispatch: the stored part the repeats cover
	for _, o := range r.repeats {
		end := min(o.Offset+int64(len(o.Data)), o.stored)
		if end <= o.Offset {
			continue // within what this round gathered
		}
		s, ok := spans[o.DispatchID]
		if !ok {
			s = [2]int64{o.Offset, end}
		}
		spans[o.DispatchID] = [2]int64{min(s[0], o.Offset), max(s[1], end)}
	}
	known := map[string][]OutputChunk{}
	for id, s := range spans {
		n := s[1] - s[0]
		rows, _, err := a.s.output(ctx, id, s[0], s[1], n+n*rowOverhead)
		if err != nil {
			return err
		}
		known[id] = rows
	}
	for id, chunks := range r.gathered {
		known[id] = append(known[id], chunks...)
	}
	for _, o := range r.repeats {
		if !covers(known[o.DispatchID], o.OutputChunk) {
			return errProtocol("dispatch %s: output sent again at offset %d differs from what was stored", o.DispatchID, o.Offset)
		}
	}
	return nil
}

// covers reports whether the contiguous chunks hold o: the same bytes from the same
// stream at each offset of o.
func covers(chunks []OutputChunk, o OutputChunk) bool {
	pos, rest := o.Offset, o.Data
	for _, c := range chunks {
		end := c.Offset + int64(len(c.Data))
		if len(rest) == 0 || c.Offset > pos {
			break
		}
		if end <= pos {
			continue
		}
		n := min(int64(len(rest)), end-pos)
		if c.Stream != o.Stream || !bytes.Equal(c.Data[pos-c.Offset:pos-c.Offset+n], rest[:n]) {
			return false
		}
		pos, rest = pos+n, rest[n:]
	}
	return len(rest) == 0
}

// result gathers a dispatch's end, to be acknowledged once committed: only then may the
// node forget it. A result for a dispatch that ended already is acknowledged too; a
// dispatch that ended meanwhile (the sweeper) is left as it is.
func (a *attachment) result(ctx context.Context, res *nodev1.DispatchResult, r *round) error {
	id := res.GetDispatchId()
	t, err := a.own(ctx, id)
	if err != nil {
		return err
	}
	r.acks = append(r.acks, id)
	if t.ended {
		a.forget(id) // a result sent again: own read the dispatch back for it
		return nil
	}
	if r.ending[id] != nil {
		return nil
	}
	if err := a.saveBrowserState(ctx, id, t, res.GetBrowserState()); err != nil {
		return err
	}
	state, errText := outcomeStates[res.GetOutcome()], withoutNUL(res.GetError())
	result := res.GetResultJson()
	if result != "" && !json.Valid([]byte(result)) {
		state, errText, result = StateFailed, "the node's result is not valid JSON", ""
	} else if where, ok := nulString([]byte(result)); ok {
		state, errText, result = StateFailed, "the node's result holds \\u0000 (a NUL character) "+where+", which palyrad cannot store", ""
	}
	r.ending[id] = t
	p := &r.reports
	p.EndIds = append(p.EndIds, id)
	p.EndStates = append(p.EndStates, string(state))
	p.EndResults = append(p.EndResults, result)
	p.EndErrors = append(p.EndErrors, errText)
	p.EndExitCodes = append(p.EndExitCodes, res.GetExitCode())
	p.EndOutputBytes = append(p.EndOutputBytes, int64(min(res.GetOutputBytes(), 1<<62)))
	p.EndTruncated = append(p.EndTruncated, res.GetOutputTruncated() || t.capped)
	return nil
}

// saveBrowserState stores the browser state a result carries, before the result is
// recorded: whoever waits for the dispatch's end then finds the state saved. A state
// from a dispatch of another capability is dropped.
func (a *attachment) saveBrowserState(ctx context.Context, id string, t *tracked, st *nodev1.BrowserState) error {
	switch {
	case st == nil:
		return nil
	case t.browserInput == "" || a.s.opts.Browser == nil:
		a.s.log.Warn("browser state of a dispatch of another capability dropped", "dispatch_id", id, "device_id", a.deviceID)
		return nil
	}
	return a.s.opts.Browser.SaveState(ctx, a.deviceID, id, t.browserInput, st)
}

// capabilitiesChanged records the capabilities the node announced anew, ending the
// session when a newer one replaced it.
func (a *attachment) capabilitiesChanged(ctx context.Context, caps []*nodev1.Capability) error {
	if err := a.s.checkCapabilities(caps); err != nil {
		return err
	}
	kept := capabilitiesOf(caps)
	raw, err := json.Marshal(kept)
	if err != nil {
		return fmt.Errorf("dispatch: capabilities: %w", err)
	}
	current, err := a.s.db.updateCapabilities(ctx, a.deviceID, a.sess.id, raw, a.s.opts.Now())
	if err != nil {
		return fmt.Errorf("dispatch: capabilities of %s: %w", a.deviceID, err)
	}
	if !current {
		return errSessionEnded(errReplaced)
	}
	a.sess.capabilities.Store(&kept)
	return nil
}
