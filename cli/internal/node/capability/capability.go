// Package capability is what a Palyra node can run: the Capability interface, the one
// registry the agent looks capabilities up in, the node.toml configuration, and the
// built-in capabilities system.info, shell.execute, filesystem.read, llm.chat,
// llm.embed, browser.navigate and browser.screenshot.
//
// The agent (package node) announces Registry.Descriptors in its hello, looks each
// dispatch's capability up in the registry and calls Run with the dispatch's input, a
// context that ends at the dispatch's deadline or cancellation, and an Output that turns
// what the capability writes into DispatchOutput chunks. How a run ends maps onto the
// dispatch's outcome:
//
//   - Run returns a *RefusedError: the input was refused before anything ran (malformed
//     JSON, a program outside the allow-list, a working directory its program is not
//     pinned to, a path outside the roots, a capability that is not configured); the
//     dispatch fails with its reason.
//   - Run returns ctx.Err() (possibly wrapped): the dispatch was cancelled or reached its
//     deadline, and whatever the capability started has been stopped.
//   - Run returns a Result with Failed set: the capability ran and did not succeed (a
//     non-zero exit, a missing file, its own time limit).
//   - Run returns a Result without Failed: the dispatch succeeded.
//   - Run returns any other error: the node itself failed (say, it could not start a
//     process); the dispatch fails with that error.
//
// A BrowserCapability (browser.*) runs with the browser profile palyrad resolved for the
// dispatch (Dispatch.browser_profile): the agent calls RunBrowser instead of Run, and
// sends the profile state it returns as DispatchResult.browser_state, whatever the
// outcome. browser.go documents the browser and its guards (browserguard.go).
//
// Inputs are validated by the daemon against each capability's input schema before they
// reach the node; the capabilities still decode them strictly and refuse what does not
// fit, since a node trusts no input.
package capability

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Stream names an output stream.
type Stream int

// The output streams; the values match palyra.node.v1.OutputStream.
const (
	// Stdout is a process's standard output.
	Stdout Stream = iota + 1
	// Stderr is a process's standard error.
	Stderr
)

// String returns "stdout" or "stderr".
func (s Stream) String() string {
	switch s {
	case Stdout:
		return "stdout"
	case Stderr:
		return "stderr"
	}
	return fmt.Sprintf("Stream(%d)", int(s))
}

// Output receives a running capability's output as it comes; the agent turns it into
// DispatchOutput chunks within the dispatch's cap. It is safe for concurrent use by the
// capability (stdout and stderr copied by two goroutines).
type Output interface {
	// Write receives the next bytes of stream. p is only valid during the call: an
	// Output that keeps it must copy it.
	Write(stream Stream, p []byte)
}

// Descriptor is what the node announces in its hello.
type Descriptor struct {
	// Name identifies the capability, e.g. "shell.execute": dot-separated lower-case
	// words, ^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$, at most MaxNameLen bytes.
	Name string
	// Description says what it does, in at most MaxDescriptionLen bytes.
	Description string
	// InputSchema is the JSON Schema (draft 2020-12) of the input, or nil; at most
	// MaxSchemaLen bytes.
	InputSchema json.RawMessage
	// Available is false when the capability is known but not usable (not configured).
	Available bool
	// Models are the models the capability serves (llm.chat, llm.embed), announced so
	// that palyrad routes requests for them here; nil for other capabilities. At most
	// MaxModels, each matching modelNamePattern.
	Models []string
}

// Flusher is an Output that can send what it holds at once: a capability whose output
// is a stream of messages (llm.chat's chunks) calls Flush after each, so that none
// waits for more output to be coalesced with.
type Flusher interface {
	// Flush sends the output written so far.
	Flush()
}

// Result is how a run ended, when it ended by itself.
type Result struct {
	// JSON is the capability's result, or nil.
	JSON json.RawMessage
	// ExitCode is that of a process, when there was one.
	ExitCode int
	// Failed is true when the capability ran but did not succeed (non-zero exit, ...).
	Failed bool
	// Error says why, when Failed.
	Error string
}

// Capability is one thing a node can run. Its methods are safe for concurrent use: the
// agent may run one capability for several dispatches at once.
type Capability interface {
	// Describe returns what the node announces about the capability.
	Describe() Descriptor
	// Run runs the capability on input (a JSON value) until it ends or ctx is done. When
	// ctx is done (cancel or deadline) it stops promptly (processes: SIGTERM, then
	// SIGKILL after the configured grace) and returns ctx.Err() (wrapped or not; the agent
	// checks ctx). Invalid input (malformed JSON, a refused program or path, ...) is a
	// *RefusedError. Other errors are failures of the node.
	Run(ctx context.Context, input json.RawMessage, out Output) (Result, error)
}

// RefusedError refuses a dispatch's input: the agent reports it as a failed dispatch
// with this message, without running anything.
type RefusedError struct{ Reason string }

// Error returns the reason.
func (e *RefusedError) Error() string { return e.Reason }

// refusef returns a *RefusedError with a formatted reason.
func refusef(format string, args ...any) error {
	return &RefusedError{Reason: fmt.Sprintf(format, args...)}
}

// decodeInput decodes a dispatch's input into v strictly: one JSON object, no unknown
// fields, nothing after it. An empty input or null decodes as {}. Any problem is a
// *RefusedError naming the capability.
func decodeInput(name string, input json.RawMessage, v any) error {
	input = bytes.TrimSpace(input)
	if len(input) == 0 || bytes.Equal(input, []byte("null")) {
		input = []byte("{}")
	}
	if input[0] != '{' {
		return refusef("%s: the input must be a JSON object", name)
	}
	dec := json.NewDecoder(bytes.NewReader(input))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return refusef("%s: invalid input: %v", name, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return refusef("%s: invalid input: unexpected data after the JSON object", name)
	}
	return nil
}
