package nodes

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/palyra/palyra/cli/internal/client"
	"github.com/palyra/palyra/cli/internal/cliflag"
	"github.com/palyra/palyra/cli/internal/cmd/deps"
	"github.com/palyra/palyra/cli/internal/cmd/dispatches"
	"github.com/palyra/palyra/cli/internal/output"
	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	"github.com/palyra/palyra/internal/cliusage"
	"github.com/palyra/palyra/internal/retry"
)

// Limits of invoke's flags, as palyrad checks them.
const (
	maxTimeout        = 24 * time.Hour
	maxInputBytes     = 1 << 20
	maxOutputWait     = 16 << 20 // ExecuteCapability returns the output in one message
	maxOutputFollow   = 64 << 20 // a followed dispatch streams it
	maxIdempotencyLen = 128
)

var (
	capabilityPattern  = regexp.MustCompile(`^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$`)
	idempotencyPattern = regexp.MustCompile(`^[A-Za-z0-9._:-]*$`)
)

// invokeFlags are the flags of `nodes invoke`.
type invokeFlags struct {
	input      string
	timeout    cliflag.Duration
	follow     bool
	maxOutput  size
	key        string
	verbose    bool
	screenshot string
}

func newInvokeCommand(d *deps.Deps) *cobra.Command {
	var f invokeFlags
	c := &cobra.Command{
		Use:   "invoke ID CAPABILITY [--input JSON|@FILE|-]",
		Short: "Run a capability on a node; print its output; exit with its exit code",
		Long: `invoke runs a capability on a node (nodes.dispatch) and waits for its end: it prints
the output on stdout and stderr as the node produced it, and exits with the remote
process's exit code (shell.execute), else 0 when the dispatch succeeded and 1 when it
failed, timed out or was cancelled, saying why on stderr. A capability that returns
a JSON result and no output (system.info) has its result printed. --input is the
capability's input, JSON given as is, read from a file (@FILE) or from stdin (-);
{} by default. The dispatch waits in palyrad's queue while the node is offline, until
--timeout ends. The output of browser.navigate and browser.screenshot is a PNG
screenshot, never written to the terminal: it goes to the file --screenshot
(<dispatch id>.png in the current directory by default), said on stderr, and the
result is printed.

--follow creates the dispatch and streams its output as it comes, resuming after a
transport error; Ctrl-C then cancels the dispatch (and exits 130). Without it palyra
gets all the output at the end. With -o json the dispatch and its output are printed
as one object instead.`,
		Example: `  palyra nodes invoke 01JD5ZJ8Q0W1X2Y3Z4A5B6C7D8 shell.execute --input '{"argv":["uname","-a"]}'
  palyra nodes invoke 01JD5ZJ8Q0W1X2Y3Z4A5B6C7D8 system.info
  palyra nodes invoke 01JD5ZJ8Q0W1X2Y3Z4A5B6C7D8 shell.execute --input @job.json --timeout 10m --follow
  palyra nodes invoke 01JD5ZJ8Q0W1X2Y3Z4A5B6C7D8 browser.navigate --input '{"url":"https://shop.example.com/","profile":"shop","screenshot":true}' --screenshot shop.png`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error { return invoke(cmd, d, args[0], args[1], f) },
	}
	c.Flags().StringVar(&f.input, "input", "", "the capability's input: JSON, @FILE to read it from a file, or - to read it from stdin (default {})")
	c.Flags().Var(&f.timeout, "timeout", "how long the dispatch may take, queued or running, up to 24h (default: palyrad's, 60s)")
	c.Flags().BoolVarP(&f.follow, "follow", "f", false, "stream the output as it comes; Ctrl-C cancels the dispatch")
	c.Flags().Var(&f.maxOutput, "max-output", "the most output to keep, e.g. 64K or 4M (1K = 1024 bytes); up to 16M, 64M with --follow (default: palyrad's, 1M)")
	c.Flags().StringVar(&f.key, "idempotency-key", "", "a key that makes a repeat of this command return the first dispatch instead of running again (default: a new one)")
	c.Flags().BoolVarP(&f.verbose, "verbose", "v", false, "with --follow, also write the dispatch's id and every change of state on stderr")
	c.Flags().StringVar(&f.screenshot, "screenshot", "", dispatches.ScreenshotFlagUsage)
	return c
}

// invoke runs `nodes invoke`.
func invoke(cmd *cobra.Command, d *deps.Deps, nodeArg, capability string, f invokeFlags) error {
	node, err := cliflag.ParseID(nodeArg, "node", "palyra nodes list")
	if err != nil {
		return err
	}
	if len(capability) > 128 || !capabilityPattern.MatchString(capability) {
		return cliusage.Wrap(fmt.Errorf("invalid capability %q: give a name such as shell.execute, as `palyra nodes show %s` lists them", capability, node))
	}
	input, err := readInput(cmd, d.Stdin, f.input)
	if err != nil {
		return err
	}
	maxOut, maxOutNote := uint64(maxOutputWait), " (64 MiB with --follow)"
	if f.follow {
		maxOut, maxOutNote = maxOutputFollow, ""
	}
	switch {
	case f.timeout.Value > maxTimeout:
		return cliusage.Wrap(fmt.Errorf("--timeout is at most 24h, got %s", f.timeout.Value))
	case uint64(f.maxOutput) > maxOut:
		return cliusage.Wrap(fmt.Errorf("--max-output is at most %s%s, got %s", dispatches.Bytes(maxOut), maxOutNote,
			dispatches.Bytes(uint64(f.maxOutput))))
	case len(f.key) > maxIdempotencyLen || !idempotencyPattern.MatchString(f.key):
		return cliusage.Wrap(fmt.Errorf("--idempotency-key must be at most %d letters, digits, '.', '_', ':' or '-'", maxIdempotencyLen))
	}
	key := f.key
	if key == "" {
		// Also without --follow, so that an interrupted call can find its dispatch.
		key = dispatches.NewIdempotencyKey()
	}
	var timeout *durationpb.Duration
	if f.timeout.Value != 0 {
		timeout = durationpb.New(f.timeout.Value)
	}
	c, err := d.Client()
	if err != nil {
		return err
	}
	if f.follow {
		return invokeFollow(cmd.Context(), d, c, &controlplanev1.CreateDispatchRequest{
			NodeId: node, Capability: capability, InputJson: input, Timeout: timeout, MaxOutputBytes: uint64(f.maxOutput), IdempotencyKey: key,
		}, f.verbose, f.screenshot)
	}
	return invokeWait(cmd.Context(), d, c, &controlplanev1.ExecuteCapabilityRequest{
		NodeId: node, Capability: capability, InputJson: input, Timeout: timeout, MaxOutputBytes: uint64(f.maxOutput), IdempotencyKey: key,
	}, f.screenshot)
}

// invokeWait runs a capability with ExecuteCapability, which returns when the dispatch
// has ended, and prints its output and result. A transport error repeats the call (the
// idempotency key makes palyrad return the same dispatch); Ctrl-C cancels the dispatch.
func invokeWait(ctx context.Context, d *deps.Deps, c *client.Client, req *controlplanev1.ExecuteCapabilityRequest, screenshot string) error {
	var res *connect.Response[controlplanev1.ExecuteCapabilityResponse]
	err := repeat(ctx, func() (err error) {
		res, err = c.Dispatch.ExecuteCapability(ctx, connect.NewRequest(req))
		return err
	})
	if err != nil {
		if ctx.Err() != nil {
			return cancelByKey(ctx, c, req.GetNodeId(), req.GetCapability(), req.GetIdempotencyKey())
		}
		return err
	}
	msg := res.Msg
	each := func(page []*controlplanev1.OutputChunk) error {
		return dispatches.WriteOutput(d.Stdout, d.Stderr, page)
	}
	// A browser.* dispatch's output, an image, is kept for Report to write to a file.
	if d.Output == output.JSON || dispatches.HasImageOutput(req.GetCapability()) {
		each = func(page []*controlplanev1.OutputChunk) error {
			msg.Output, msg.NextOutputOffset = append(msg.Output, page...), dispatches.PageEnd(page, msg.GetNextOutputOffset())
			return nil
		}
	} else if err := each(msg.GetOutput()); err != nil {
		return err
	}
	// What did not fit the response is read page by page.
	if msg.GetMoreOutput() {
		if err := dispatches.ReadOutput(ctx, c.Dispatch, msg.GetDispatch().GetId(), msg.GetNextOutputOffset(), each); err != nil {
			return err
		}
		msg.MoreOutput = false
	}
	return dispatches.Report(d, msg, nil, screenshot)
}

// invokeFollow creates a dispatch and follows it to its end (dispatches.Follow).
func invokeFollow(ctx context.Context, d *deps.Deps, c *client.Client, req *controlplanev1.CreateDispatchRequest, verbose bool, screenshot string) error {
	var res *connect.Response[controlplanev1.CreateDispatchResponse]
	err := repeat(ctx, func() (err error) {
		res, err = c.Dispatch.CreateDispatch(ctx, connect.NewRequest(req))
		return err
	})
	if err != nil {
		if ctx.Err() != nil {
			return cancelByKey(ctx, c, req.GetNodeId(), req.GetCapability(), req.GetIdempotencyKey())
		}
		return err
	}
	id := res.Msg.GetDispatch().GetId()
	if verbose {
		what := "created"
		if !res.Msg.GetCreated() {
			what = "already created with this idempotency key"
		}
		output.Fprintf(d.Stderr, "dispatch %s %s\n", id, what)
	}
	asJSON := d.Output == output.JSON
	out, err := dispatches.Follow(ctx, c.Dispatch, id, dispatches.FollowOptions{
		Stdout: d.Stdout, Stderr: d.Stderr, Print: !asJSON, Collect: asJSON, Verbose: verbose,
		CancelOnInterrupt: true, QueuedNotice: dispatches.QueuedNotice,
	})
	return dispatches.Report(d, out, err, screenshot)
}

// repeat makes call until it succeeds, fails with an error that is not transient
// (retry.Transient), ctx ends, or it has failed three times; it waits with backoff
// between tries.
func repeat(ctx context.Context, call func() error) error {
	const tries = 3
	b := &retry.Backoff{Initial: 250 * time.Millisecond, Max: time.Second}
	for i := 1; ; i++ {
		err := call()
		if err == nil || i == tries || ctx.Err() != nil || !retry.Transient(err) {
			return err
		}
		if retry.Sleep(ctx, b.Next()) != nil {
			return err
		}
	}
}

// cancelByKey cancels the dispatch that an interrupted call created, found by its
// idempotency key among the newest dispatches of its node and capability, and returns
// the interruption's error.
func cancelByKey(ctx context.Context, c *client.Client, node, capability, key string) error {
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), dispatches.CancelWait)
	defer cancel()
	res, err := c.Dispatch.ListDispatches(lctx, connect.NewRequest(&controlplanev1.ListDispatchesRequest{
		NodeId: node, Capability: capability, PageSize: 50,
	}))
	if err != nil {
		return fmt.Errorf("interrupted; the dispatch may go on (`palyra dispatches list --node %s` shows it): %w", node, err)
	}
	for _, disp := range res.Msg.GetDispatches() {
		if disp.GetIdempotencyKey() != key {
			continue
		}
		if dispatches.Terminal(disp.GetState()) {
			return fmt.Errorf("interrupted: dispatch %s had already ended (%s)", disp.GetId(), output.Enum(disp.GetState()))
		}
		return dispatches.CancelAndWait(ctx, c.Dispatch, disp.GetId())
	}
	return errors.New("interrupted before palyrad created the dispatch")
}

// readInput reads --input: JSON as given, @FILE, or - for stdin; {} when not given.
// Input that is not JSON is a usage error.
func readInput(cmd *cobra.Command, stdin io.Reader, in string) (string, error) {
	var (
		b      []byte
		source = "--input"
	)
	switch {
	case !cmd.Flags().Changed("input"):
		return "{}", nil
	case in == "-":
		var err error
		if b, err = io.ReadAll(io.LimitReader(stdin, maxInputBytes+1)); err != nil {
			return "", fmt.Errorf("read the input from stdin: %w", err)
		}
		source = "the input on stdin"
	case strings.HasPrefix(in, "@"):
		file, err := os.Open(in[1:])
		if err != nil {
			return "", fmt.Errorf("read the input: %w", err)
		}
		defer file.Close()
		if b, err = io.ReadAll(io.LimitReader(file, maxInputBytes+1)); err != nil {
			return "", fmt.Errorf("read the input: %w", err)
		}
		source = "the input in " + in[1:]
	default:
		b = []byte(in)
	}
	if len(b) > maxInputBytes {
		return "", cliusage.Wrap(fmt.Errorf("%s is longer than %s", source, dispatches.Bytes(maxInputBytes)))
	}
	if err := json.Unmarshal(b, new(json.RawMessage)); err != nil {
		return "", cliusage.Wrap(fmt.Errorf("%s is not valid JSON: %v", source, err))
	}
	return string(b), nil
}

// size is a pflag.Value holding a number of bytes written with an optional binary
// unit: "1048576", "64K", "4M", "4MiB" (K, KB and KiB are all 1024 bytes).
type size uint64

var _ pflag.Value = (*size)(nil)

var sizePattern = regexp.MustCompile(`^([0-9]+)\s*(|b|k|kb|kib|m|mb|mib)$`)

// String implements pflag.Value.
func (s *size) String() string {
	if *s == 0 {
		return ""
	}
	return dispatches.Bytes(uint64(*s))
}

// Set implements pflag.Value.
func (s *size) Set(v string) error {
	m := sizePattern.FindStringSubmatch(strings.ToLower(strings.TrimSpace(v)))
	if m == nil {
		return fmt.Errorf("invalid size %q: give bytes, or a number with K or M, e.g. 64K or 4M", v)
	}
	n, err := strconv.ParseUint(m[1], 10, 64)
	unit := map[string]uint64{"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mb": 1 << 20, "mib": 1 << 20}[m[2]]
	if err != nil || n > (1<<40)/unit {
		return fmt.Errorf("size %q is too large", v)
	}
	if n == 0 {
		return fmt.Errorf("size %q must be larger than zero", v)
	}
	*s = size(n * unit)
	return nil
}

// Type implements pflag.Value.
func (s *size) Type() string { return "size" }
