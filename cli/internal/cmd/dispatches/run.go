package dispatches

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/oklog/ulid/v2"

	"github.com/palyra/palyra/cli/internal/cmd/deps"
	"github.com/palyra/palyra/cli/internal/output"
	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	"github.com/palyra/palyra/gen/go/palyra/controlplane/v1/controlplanev1connect"
	nodev1 "github.com/palyra/palyra/gen/go/palyra/node/v1"
	"github.com/palyra/palyra/internal/retry"
)

// This file is what `palyra nodes invoke` and `palyra dispatches watch` share: following
// a dispatch's watch stream, writing its output, cancelling it on Ctrl-C, and turning
// its end into palyra's exit code.

const (
	// InterruptReason is the reason palyra gives palyrad when it cancels a dispatch
	// because the user pressed Ctrl-C.
	InterruptReason = "interrupted by the user"
	// CancelWait is how long palyra waits, after Ctrl-C, for palyrad to cancel a
	// dispatch and for the dispatch to end.
	CancelWait = 5 * time.Second
	// QueuedNotice is how long a followed dispatch may stay queued before palyra says
	// that it waits for its node.
	QueuedNotice = 2 * time.Second
	// maxResumes is how many times in a row a watch is resumed after a transport error
	// without receiving anything in between.
	maxResumes = 3
	// resumeDelay is the ceiling of the pause before the first resumption; each further
	// one doubles it (retry.Backoff).
	resumeDelay = 250 * time.Millisecond
	// drainWait is how long a watch waits, after the terminal state, for the next
	// event or the end of the stream before it leaves a silent server.
	drainWait = 2 * time.Second
)

// processCapabilities are the capabilities whose result is the exit of a process: its
// output is what they produce and the exit code says how it went, so their result is
// not printed.
var processCapabilities = []string{"shell.execute"}

// isProcess reports whether a capability's result is the exit of a process.
func isProcess(capability string) bool { return slices.Contains(processCapabilities, capability) }

// NewIdempotencyKey returns a fresh idempotency key for a dispatch that palyra creates,
// so that a retry of the creation after a transport error does not run it twice.
func NewIdempotencyKey() string { return "palyra-cli:" + ulid.Make().String() }

// ExitCodeError ends palyra with Code and without a message of palyra's own: the exit
// code of a remote process, passed on as ssh passes it on. The process's own error
// output has already been written.
type ExitCodeError struct {
	// DispatchID is the dispatch whose process exited.
	DispatchID string
	// Code is the process's exit code, 1 to 255.
	Code int
}

// Error implements error; palyra does not print it (see cmd.Execute).
func (e *ExitCodeError) Error() string {
	return fmt.Sprintf("dispatch %s exited with code %d", e.DispatchID, e.Code)
}

// ExitCode is the exit code palyra ends with.
func (e *ExitCodeError) ExitCode() int { return e.Code }

// Terminal reports whether a dispatch state is one that a dispatch ends in.
func Terminal(s controlplanev1.DispatchState) bool {
	switch s {
	case controlplanev1.DispatchState_DISPATCH_STATE_SUCCEEDED, controlplanev1.DispatchState_DISPATCH_STATE_FAILED,
		controlplanev1.DispatchState_DISPATCH_STATE_TIMED_OUT, controlplanev1.DispatchState_DISPATCH_STATE_CANCELLED:
		return true
	}
	return false
}

// stateWords says how a dispatch ended, in a sentence: "dispatch X failed".
var stateWords = map[controlplanev1.DispatchState]string{
	controlplanev1.DispatchState_DISPATCH_STATE_SUCCEEDED: "succeeded",
	controlplanev1.DispatchState_DISPATCH_STATE_FAILED:    "failed",
	controlplanev1.DispatchState_DISPATCH_STATE_TIMED_OUT: "timed out",
	controlplanev1.DispatchState_DISPATCH_STATE_CANCELLED: "was cancelled",
}

// Exit returns what the end of a dispatch means for palyra's exit code:
//   - a process exit code from 1 to 255 (shell.execute) is passed on as an
//     ExitCodeError, without a message;
//   - otherwise a dispatch that succeeded is nil (exit 0);
//   - a dispatch that failed, timed out or was cancelled is an error that says so with
//     the dispatch's error (exit 1), as is one that has not ended.
func Exit(d *controlplanev1.Dispatch) error {
	state, code := d.GetState(), d.GetExitCode()
	switch {
	case !Terminal(state):
		return fmt.Errorf("dispatch %s is still %s; `palyra dispatches watch %s` follows it", d.GetId(), output.Enum(state), d.GetId())
	case code >= 1 && code <= 255 && (state == controlplanev1.DispatchState_DISPATCH_STATE_SUCCEEDED ||
		state == controlplanev1.DispatchState_DISPATCH_STATE_FAILED):
		return &ExitCodeError{DispatchID: d.GetId(), Code: int(code)}
	case state == controlplanev1.DispatchState_DISPATCH_STATE_SUCCEEDED:
		return nil
	}
	msg := fmt.Sprintf("dispatch %s %s", d.GetId(), stateWords[state])
	if d.GetError() != "" {
		msg += ": " + d.GetError()
	}
	return errors.New(msg)
}

// WriteOutput writes output chunks, raw, to stdout or stderr by the stream each came
// from (stdout when unspecified).
func WriteOutput(stdout, stderr io.Writer, chunks []*controlplanev1.OutputChunk) error {
	for _, c := range chunks {
		if err := writeChunk(stdout, stderr, c.GetStream(), c.GetData()); err != nil {
			return err
		}
	}
	return nil
}

func writeChunk(stdout, stderr io.Writer, stream nodev1.OutputStream, data []byte) error {
	w := stdout
	if stream == nodev1.OutputStream_OUTPUT_STREAM_STDERR {
		w = stderr
	}
	if _, err := w.Write(data); err != nil {
		return fmt.Errorf("write the output: %w", err)
	}
	return nil
}

// ReadOutput reads the output of dispatch id from offset from with GetDispatch, page by
// page (palyrad returns as much as fits one response), and hands each page to each,
// until it has read all that is stored.
func ReadOutput(ctx context.Context, c controlplanev1connect.DispatchServiceClient, id string, from uint64, each func([]*controlplanev1.OutputChunk) error) error {
	for {
		res, err := c.GetDispatch(ctx, connect.NewRequest(&controlplanev1.GetDispatchRequest{Id: id, IncludeOutput: true, OutputOffset: from}))
		if err != nil {
			return err
		}
		if err := each(res.Msg.GetOutput()); err != nil {
			return err
		}
		next := res.Msg.GetNextOutputOffset()
		if !res.Msg.GetMoreOutput() || next <= from {
			return nil
		}
		from = next
	}
}

// PageEnd returns the offset after a page of output, or from for an empty page.
func PageEnd(page []*controlplanev1.OutputChunk, from uint64) uint64 {
	if len(page) == 0 {
		return from
	}
	last := page[len(page)-1]
	return last.GetOffset() + uint64(len(last.GetData()))
}

// Report ends a command that ran or followed a dispatch whose output has been written
// (in the table format) or collected in res (with -o json), and that ended with err
// (from Follow; nil for a dispatch that ended). With -o json it prints res, even after
// an error when there is one; otherwise it prints the capability's JSON result when
// the dispatch produced no output (system.info, say), indented, on stdout. It warns on
// stderr when output was cut at the dispatch's cap or lost, and returns err, else Exit
// of the dispatch. The output of a browser.* dispatch, collected in res in either
// format, is its screenshot: it goes to the file screenshot (<dispatch id>.png when
// empty), never to stdout, and the result is printed.
func Report(d *deps.Deps, res *controlplanev1.ExecuteCapabilityResponse, err error, screenshot string) error {
	if err != nil {
		if res != nil && d.Output == output.JSON {
			if perr := output.Print(d.Stdout, d.Output, res, nil); perr != nil {
				return errors.Join(err, perr)
			}
		}
		return err
	}
	disp := res.GetDispatch()
	image := HasImageOutput(disp.GetCapability())
	if image {
		if err := saveScreenshot(d.Stderr, res, screenshot); err != nil {
			return err
		}
	}
	if d.Output == output.JSON {
		if err := output.Print(d.Stdout, d.Output, res, nil); err != nil {
			return err
		}
	} else if disp.GetResultJson() != "" && (image || disp.GetOutputBytes() == 0 && len(res.GetOutput()) == 0) &&
		!isProcess(disp.GetCapability()) {
		if err := writeResult(d.Stdout, disp.GetResultJson()); err != nil {
			return err
		}
	}
	if disp.GetOutputTruncated() {
		output.Fprintf(d.Stderr, "palyra: warning: dispatch %s produced %s of output, beyond its cap of %s; the rest was not kept\n",
			disp.GetId(), Bytes(disp.GetOutputBytes()), Bytes(disp.GetMaxOutputBytes()))
	}
	if disp.GetOutputLost() {
		output.Fprintf(d.Stderr, "palyra: warning: dispatch %s lost output: %s\n", disp.GetId(), disp.GetOutputLostReason())
	}
	return Exit(disp)
}

// writeResult writes a JSON result indented, or as it is when it is not JSON; escaped
// (output.Escape), since a node wrote it.
func writeResult(w io.Writer, result string) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, []byte(result), "", "  "); err != nil {
		buf.Reset()
		buf.WriteString(result)
	}
	if !bytes.HasSuffix(buf.Bytes(), []byte("\n")) {
		buf.WriteByte('\n')
	}
	_, err := io.WriteString(w, output.Escape(buf.String()))
	return err
}

// Bytes formats a byte count for people: "512 B", "1.5 KiB", "16 MiB".
func Bytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, suffix := float64(n)/unit, "KiB"
	for _, s := range []string{"MiB", "GiB", "TiB"} {
		if v < unit {
			break
		}
		v, suffix = v/unit, s
	}
	if v == float64(uint64(v)) {
		return fmt.Sprintf("%d %s", uint64(v), suffix)
	}
	return fmt.Sprintf("%.1f %s", v, suffix)
}

// FollowOptions say how Follow follows a dispatch.
type FollowOptions struct {
	// FromOffset skips the output before this offset.
	FromOffset uint64
	// Stdout and Stderr receive the output as it comes, by its stream, when Print is
	// set; Stderr also receives the notices.
	Stdout, Stderr io.Writer
	// Print writes the output as it comes; Collect keeps it in the response (for
	// -o json). The output of a browser.* dispatch, an image, is always kept and
	// never written.
	Print, Collect bool
	// Verbose writes every change of state on Stderr.
	Verbose bool
	// CancelOnInterrupt cancels the dispatch when ctx ends (Ctrl-C), and waits up to
	// CancelWait for its end; otherwise Ctrl-C only stops following.
	CancelOnInterrupt bool
	// QueuedNotice, when not zero, says on Stderr that the dispatch waits for its node
	// when it is still queued that long after Follow began.
	QueuedNotice time.Duration
}

// Follow follows dispatch id until it ends: it watches it, writes or collects its
// output in order without repeating any of it, and resumes the watch from the last
// offset after a transport error (maxResumes times in a row at most). It returns the
// final dispatch and the collected output. When ctx ends first (Ctrl-C) it returns an
// error that says what became of the dispatch, with what it has seen so far; with
// CancelOnInterrupt it cancels the dispatch first and waits for its end.
func Follow(ctx context.Context, c controlplanev1connect.DispatchServiceClient, id string, o FollowOptions) (*controlplanev1.ExecuteCapabilityResponse, error) {
	f := &follower{c: c, id: id, o: o, offset: o.FromOffset}
	if o.QueuedNotice > 0 {
		t := time.AfterFunc(o.QueuedNotice, f.queuedNotice)
		defer t.Stop()
	}
	err := f.follow(ctx)
	switch {
	case err == nil:
		return f.response(), nil
	case ctx.Err() == nil:
		return f.response(), err
	case !o.CancelOnInterrupt:
		return f.response(), fmt.Errorf("interrupted: stopped following dispatch %s, which goes on; `palyra dispatches cancel %s` stops it", id, id)
	}
	f.mu.Lock()
	f.interrupted = true
	f.mu.Unlock()
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), CancelWait)
	defer cancel()
	err = f.cancel(cctx)
	return f.response(), err
}

// CancelAndWait cancels dispatch id because the user interrupted palyra, and waits up
// to CancelWait for its end without printing its output. The error says what became
// of the dispatch; it is never nil, since the command was interrupted.
func CancelAndWait(ctx context.Context, c controlplanev1connect.DispatchServiceClient, id string) error {
	f := &follower{c: c, id: id, interrupted: true}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), CancelWait)
	defer cancel()
	return f.cancel(cctx)
}

// follower follows one dispatch. Its methods run on the command's goroutine, but for
// queuedNotice, which a timer runs.
type follower struct {
	c  controlplanev1connect.DispatchServiceClient
	id string
	o  FollowOptions

	offset uint64                        // the output before it has been handled
	output []*controlplanev1.OutputChunk // collected, with Collect

	mu          sync.Mutex // guards the following, and writes to o.Stderr
	last        *controlplanev1.Dispatch
	interrupted bool // Ctrl-C was pressed: no more notices
}

// response is the dispatch as last seen, with the collected output.
func (f *follower) response() *controlplanev1.ExecuteCapabilityResponse {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.last == nil {
		return nil
	}
	return &controlplanev1.ExecuteCapabilityResponse{Dispatch: f.last, Output: f.output}
}

// queuedNotice says that the dispatch waits for its node, when it still does.
func (f *follower) queuedNotice() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.last == nil || f.interrupted || f.last.GetState() != controlplanev1.DispatchState_DISPATCH_STATE_QUEUED {
		return
	}
	ctrlC := "Ctrl-C stops following"
	if f.o.CancelOnInterrupt {
		ctrlC = "Ctrl-C cancels it"
	}
	output.Fprintf(f.o.Stderr, "waiting for node %s: dispatch %s is queued until the node attaches, at the latest until %s (%s)\n",
		f.last.GetNodeId(), f.id, output.Time(f.last.GetDeadline(), "its deadline"), ctrlC)
}

// cancel cancels the dispatch after an interruption and follows it to its end, for as
// long as ctx lasts. It returns the interruption's error.
func (f *follower) cancel(ctx context.Context) error {
	_, err := f.c.CancelDispatch(ctx, connect.NewRequest(&controlplanev1.CancelDispatchRequest{Id: f.id, Reason: InterruptReason}))
	if err != nil && connect.CodeOf(err) != connect.CodeFailedPrecondition {
		return fmt.Errorf("interrupted, but cancelling dispatch %s failed (it may go on; `palyra dispatches cancel %s` retries): %w", f.id, f.id, err)
	}
	if err := f.follow(ctx); err != nil {
		return fmt.Errorf("interrupted: asked to cancel dispatch %s, which had not ended %s later; `palyra dispatches show %s` shows it",
			f.id, CancelWait, f.id)
	}
	f.mu.Lock()
	last := f.last
	f.mu.Unlock()
	if last.GetState() == controlplanev1.DispatchState_DISPATCH_STATE_CANCELLED {
		return fmt.Errorf("interrupted: dispatch %s was cancelled", f.id)
	}
	return fmt.Errorf("interrupted: dispatch %s %s before it could be cancelled", f.id, stateWords[last.GetState()])
}

// follow watches the dispatch until it ends, resuming after transport errors.
func (f *follower) follow(ctx context.Context) error {
	b := &retry.Backoff{Initial: resumeDelay, Max: 4 * resumeDelay}
	failures := 0
	for {
		ended, progressed, err := f.watch(ctx)
		switch {
		case ended:
			return nil
		case ctx.Err() != nil:
			return ctx.Err()
		case err != nil && !retry.Transient(err):
			return err
		}
		if progressed {
			failures = 0
			b.Reset()
		}
		failures++
		if err == nil {
			err = errors.New("the watch ended before the dispatch did")
		}
		if failures > maxResumes {
			return fmt.Errorf("following dispatch %s: %w (gave up after %d attempts; `palyra dispatches watch %s --from-offset %d` resumes)",
				f.id, err, maxResumes+1, f.id, f.offset)
		}
		if f.o.Verbose {
			f.notice("following dispatch %s: %v; resuming from offset %d", f.id, err, f.offset)
		}
		if err := retry.Sleep(ctx, b.Next()); err != nil {
			return err
		}
	}
}

// watch watches the dispatch once from the current offset. ended is true once the
// stream ended after the dispatch was seen in a terminal state; progressed when
// anything was received.
func (f *follower) watch(ctx context.Context) (ended, progressed bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := f.c.WatchDispatch(ctx, connect.NewRequest(&controlplanev1.WatchDispatchRequest{Id: f.id, FromOffset: f.offset}))
	if err != nil {
		return false, false, err
	}
	defer stream.Close()
	// The terminal state comes after the output of a dispatch that ends while watched,
	// but before the output of one that had ended already; the server closes the stream
	// once it has sent both. A server that falls silent after the terminal state
	// instead is left after drainWait.
	var (
		terminal bool
		idle     *time.Timer
		idled    atomic.Bool
	)
	defer func() {
		if idle != nil {
			idle.Stop()
		}
	}()
	for stream.Receive() {
		progressed = true
		if idle != nil {
			idle.Reset(drainWait)
		}
		switch ev := stream.Msg().GetEvent().(type) {
		case *controlplanev1.WatchDispatchResponse_Dispatch:
			if f.state(ev.Dispatch) && !terminal {
				terminal = true
				idle = time.AfterFunc(drainWait, func() { idled.Store(true); cancel() })
			}
		case *controlplanev1.WatchDispatchResponse_Output:
			if err := f.chunk(ev.Output); err != nil {
				return false, progressed, err
			}
		}
	}
	err = stream.Err()
	if terminal && (err == nil || idled.Load()) {
		return true, progressed, nil
	}
	return false, progressed, err
}

// state records a state of the dispatch, and reports whether it is terminal.
func (f *follower) state(d *controlplanev1.Dispatch) bool {
	f.mu.Lock()
	changed := f.last == nil || f.last.GetState() != d.GetState()
	f.last = d
	f.mu.Unlock()
	if changed && f.o.Verbose {
		f.notice("dispatch %s: %s", f.id, output.Enum(d.GetState()))
	}
	return Terminal(d.GetState())
}

// chunk handles a chunk of output: the part after the offset already handled is
// written or collected, the rest (sent again after a resumption) dropped.
func (f *follower) chunk(c *controlplanev1.OutputChunk) error {
	data, end := c.GetData(), c.GetOffset()+uint64(len(c.GetData()))
	if end <= f.offset {
		return nil
	}
	if c.GetOffset() < f.offset {
		data = data[f.offset-c.GetOffset():]
	}
	f.offset = end
	// The output of a browser.* dispatch is an image, for Report to write to a file.
	// (The dispatch comes before its output, and f.last is written on this goroutine.)
	image := HasImageOutput(f.last.GetCapability())
	if f.o.Collect || image {
		f.output = append(f.output, &controlplanev1.OutputChunk{Stream: c.GetStream(), Offset: end - uint64(len(data)), Data: data})
	}
	if !f.o.Print || image {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return writeChunk(f.o.Stdout, f.o.Stderr, c.GetStream(), data)
}

// notice writes a line on Stderr.
func (f *follower) notice(format string, args ...any) {
	if f.o.Stderr == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	output.Fprintf(f.o.Stderr, format+"\n", args...)
}
