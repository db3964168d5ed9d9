package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/palyra/palyra/cli/internal/node/capability"
	nodev1 "github.com/palyra/palyra/gen/go/palyra/node/v1"
)

// Limits of a DispatchResult, as palyrad validates them.
const (
	maxResultJSON  = 1 << 20
	maxResultError = 4096
)

// errAgentStopping cancels the dispatches still running at the drain timeout.
var errAgentStopping = errors.New("the node agent was stopped before the dispatch finished")

// cancelledError is the cause of a dispatch cancelled by palyrad.
type cancelledError struct{ reason string }

// Error says the dispatch was cancelled, and palyrad's reason if it gave one.
func (e *cancelledError) Error() string {
	if e.reason == "" {
		return "cancelled"
	}
	return "cancelled: " + e.reason
}

// execution is one running dispatch.
type execution struct {
	id    string
	cap   capability.Capability
	input json.RawMessage
	// profile is the dispatch's browser profile (Dispatch.browser_profile), for a
	// capability.BrowserCapability; nil for others.
	profile *nodev1.BrowserProfile
	ctx     context.Context // ends at the dispatch's deadline or when cancelled
	cancel  context.CancelCauseFunc
	out     *outputPump
}

// execute runs a dispatch in its own goroutine, then spools its result with its output,
// records it as finished and sends it.
func (a *Agent) execute(e *execution) {
	defer a.execs.Done()
	defer e.cancel(nil)
	start := time.Now()
	res, state, err := runCapability(e.ctx, e.cap, e.input, e.profile, e.out)
	e.out.close()
	r := a.result(e, res, err)
	r.BrowserState = state // spooled with the result: a resend carries it too
	log := a.log.With("dispatch_id", e.id, "capability", e.cap.Describe().Name, "outcome", outcomeName(r.GetOutcome()),
		"duration", time.Since(start).Round(time.Millisecond))
	if r.GetError() != "" {
		log = log.With("error", r.GetError())
	}
	log.Info("dispatch finished")
	if err := a.spool.put(r, e.out.sent()); err != nil {
		// The result is still sent; only a crash before its ack loses it.
		a.log.Error("cannot spool a result", "dispatch_id", e.id, "err", err)
	} else if err := a.ran.append(ranFinished, e.id, a.now()); err != nil {
		a.log.Error("cannot record a finished dispatch", "dispatch_id", e.id, "err", err)
	}
	a.mu.Lock()
	delete(a.running, e.id)
	a.unacked[e.id] = e.out
	a.mu.Unlock()
	a.emitResult(r)
}

// runCapability runs c, with profile when it is a capability.BrowserCapability, turning
// a panic into an error. state is the browser profile's state at the end, if any.
func runCapability(ctx context.Context, c capability.Capability, input json.RawMessage, profile *nodev1.BrowserProfile,
	out capability.Output,
) (res capability.Result, state *nodev1.BrowserState, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("the capability panicked: %v", p)
		}
	}()
	if bc, ok := c.(capability.BrowserCapability); ok {
		return bc.RunBrowser(ctx, input, profile, out)
	}
	res, err = c.Run(ctx, input, out)
	return res, nil, err
}

// result builds the DispatchResult of a finished dispatch: a refusal or an error is
// FAILED, a dispatch stopped at its deadline TIMED_OUT, one cancelled (by palyrad or
// at the drain timeout) CANCELLED, else SUCCEEDED unless the capability says it failed.
func (a *Agent) result(e *execution, res capability.Result, err error) *nodev1.DispatchResult {
	total, truncated := e.out.counts()
	r := &nodev1.DispatchResult{
		DispatchId: e.id, ExitCode: int32(res.ExitCode), OutputBytes: total, OutputTruncated: truncated,
		FinishTime: timestamppb.New(a.now()),
	}
	var refused *capability.RefusedError
	switch {
	case errors.As(err, &refused):
		r.Outcome, r.Error = nodev1.DispatchOutcome_DISPATCH_OUTCOME_FAILED, refused.Reason
	case err != nil && e.ctx.Err() != nil:
		cause := context.Cause(e.ctx)
		switch {
		case errors.Is(cause, context.DeadlineExceeded):
			r.Outcome, r.Error = nodev1.DispatchOutcome_DISPATCH_OUTCOME_TIMED_OUT, "stopped at its deadline"
		default:
			r.Outcome, r.Error = nodev1.DispatchOutcome_DISPATCH_OUTCOME_CANCELLED, cause.Error()
		}
	case err != nil:
		r.Outcome, r.Error = nodev1.DispatchOutcome_DISPATCH_OUTCOME_FAILED, err.Error()
	case res.Failed:
		r.Outcome, r.Error = nodev1.DispatchOutcome_DISPATCH_OUTCOME_FAILED, res.Error
		if r.Error == "" {
			r.Error = "the capability reported a failure"
		}
	default:
		r.Outcome = nodev1.DispatchOutcome_DISPATCH_OUTCOME_SUCCEEDED
	}
	if len(res.JSON) > maxResultJSON {
		r.Outcome = nodev1.DispatchOutcome_DISPATCH_OUTCOME_FAILED
		r.Error = fmt.Sprintf("the result is %d bytes of JSON, more than the %d a result may hold", len(res.JSON), maxResultJSON)
	} else {
		r.ResultJson = string(res.JSON)
	}
	r.Error = truncateUTF8(r.Error, maxResultError)
	return r
}

// failedResult is the result of a dispatch the node refuses without running it.
func (a *Agent) failedResult(id, msg string) *nodev1.DispatchResult {
	return &nodev1.DispatchResult{
		DispatchId: id, Outcome: nodev1.DispatchOutcome_DISPATCH_OUTCOME_FAILED,
		Error: truncateUTF8(msg, maxResultError), FinishTime: timestamppb.New(a.now()),
	}
}

// truncateUTF8 cuts s to at most n bytes without splitting a character.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	// s[n] is the first byte cut: back up to the start of its character.
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// outcomeName names an outcome for the log: "succeeded", "timed_out"...
func outcomeName(o nodev1.DispatchOutcome) string {
	switch o {
	case nodev1.DispatchOutcome_DISPATCH_OUTCOME_SUCCEEDED:
		return "succeeded"
	case nodev1.DispatchOutcome_DISPATCH_OUTCOME_FAILED:
		return "failed"
	case nodev1.DispatchOutcome_DISPATCH_OUTCOME_TIMED_OUT:
		return "timed_out"
	case nodev1.DispatchOutcome_DISPATCH_OUTCOME_CANCELLED:
		return "cancelled"
	}
	return o.String()
}

// outputPump is the capability.Output of a dispatch: it coalesces writes into
// DispatchOutput chunks of up to chunk bytes, sent when full, when the stream
// changes, after delay, or at the end. Offsets count the bytes of both streams
// together. Bytes beyond max are counted but not sent, and mark the output truncated.
type outputPump struct {
	id    string
	max   uint64
	chunk int
	delay time.Duration
	emit  func(*nodev1.AttachRequest)

	// history holds every chunk the pump sent (within the cap), so that a session that
	// replaces a lost one can send them again (palyrad does not store a chunk twice),
	// and the spool keeps them with the result. It has a lock of its own, taken after
	// mu and never while taking another, so that a session can read it while holding
	// its queue.
	histMu  sync.Mutex
	history []*nodev1.AttachRequest

	mu        sync.Mutex // guards the following
	total     uint64     // bytes written by the capability
	buf       []byte     // bytes not sent yet, all of one stream
	bufStream capability.Stream
	bufOffset uint64      // the offset of buf[0]
	timer     *time.Timer // flushes buf after delay; nil when not armed
	closed    bool
}

var (
	_ capability.Output  = (*outputPump)(nil)
	_ capability.Flusher = (*outputPump)(nil)
)

// Flush implements capability.Flusher: what is buffered is sent now.
func (p *outputPump) Flush() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.closed {
		p.flushLocked()
	}
}

// Write implements capability.Output.
func (p *outputPump) Write(stream capability.Stream, b []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	pos := p.total
	p.total += uint64(len(b))
	if pos >= p.max {
		return
	}
	if rest := p.max - pos; uint64(len(b)) > rest {
		b = b[:rest]
	}
	if len(p.buf) > 0 && p.bufStream != stream {
		p.flushLocked()
	}
	for len(b) > 0 {
		if len(p.buf) == 0 {
			p.bufStream, p.bufOffset = stream, pos
		}
		n := min(len(b), p.chunk-len(p.buf))
		p.buf = append(p.buf, b[:n]...)
		b, pos = b[n:], pos+uint64(n)
		if len(p.buf) >= p.chunk {
			p.flushLocked()
		}
	}
	if len(p.buf) > 0 && p.timer == nil {
		p.timer = time.AfterFunc(p.delay, p.flushLater)
	}
}

// flushLater is the timer's flush.
func (p *outputPump) flushLater() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.timer = nil
	if !p.closed {
		p.flushLocked()
	}
}

// flushLocked sends the buffered bytes as one chunk.
func (p *outputPump) flushLocked() {
	if p.timer != nil {
		p.timer.Stop()
		p.timer = nil
	}
	if len(p.buf) == 0 {
		return
	}
	s := nodev1.OutputStream_OUTPUT_STREAM_STDOUT
	if p.bufStream == capability.Stderr {
		s = nodev1.OutputStream_OUTPUT_STREAM_STDERR
	}
	msg := &nodev1.AttachRequest{Message: &nodev1.AttachRequest_Output{Output: &nodev1.DispatchOutput{
		DispatchId: p.id, Stream: s, Offset: p.bufOffset, Data: p.buf,
	}}}
	p.histMu.Lock()
	p.history = append(p.history, msg)
	p.histMu.Unlock()
	p.emit(msg)
	p.buf = nil
}

// close sends what is buffered; later writes are ignored.
func (p *outputPump) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.closed {
		p.flushLocked()
		p.closed = true
	}
}

// sent returns the chunks sent so far.
func (p *outputPump) sent() []*nodev1.AttachRequest {
	p.histMu.Lock()
	defer p.histMu.Unlock()
	return slices.Clone(p.history)
}

// counts returns how many bytes the capability wrote and whether some were not sent.
func (p *outputPump) counts() (total uint64, truncated bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.total, p.total > p.max
}
