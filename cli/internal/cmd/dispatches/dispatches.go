// Package dispatches is `palyra dispatches`: the capability runs on nodes that palyrad
// keeps (DESIGN §4). It lists and shows them, follows one as it runs (watch), and
// cancels one. It also holds what `palyra nodes invoke`, which creates dispatches,
// shares with watch (run.go): following a dispatch with resumption after transport
// errors, writing its output by stream, cancelling it on Ctrl-C, and the exit codes:
// the remote process's exit code when there was one, else 0 for a dispatch that
// succeeded and 1 for one that did not.
package dispatches

import (
	"context"
	"fmt"
	"io"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/palyra/palyra/cli/internal/client"
	"github.com/palyra/palyra/cli/internal/cliflag"
	"github.com/palyra/palyra/cli/internal/cmd/deps"
	"github.com/palyra/palyra/cli/internal/output"
	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	"github.com/palyra/palyra/internal/cliusage"
)

// states maps the --state names to the API's dispatch states.
var states = map[string]controlplanev1.DispatchState{
	"queued":    controlplanev1.DispatchState_DISPATCH_STATE_QUEUED,
	"sent":      controlplanev1.DispatchState_DISPATCH_STATE_SENT,
	"running":   controlplanev1.DispatchState_DISPATCH_STATE_RUNNING,
	"succeeded": controlplanev1.DispatchState_DISPATCH_STATE_SUCCEEDED,
	"failed":    controlplanev1.DispatchState_DISPATCH_STATE_FAILED,
	"timed_out": controlplanev1.DispatchState_DISPATCH_STATE_TIMED_OUT,
	"cancelled": controlplanev1.DispatchState_DISPATCH_STATE_CANCELLED,
}

// NewCommand returns `palyra dispatches` and its subcommands.
func NewCommand(d *deps.Deps) *cobra.Command {
	c := &cobra.Command{
		Use:   "dispatches",
		Short: "List, show, follow and cancel the capability runs on nodes",
		Long: `dispatches shows the capability runs that palyrad keeps (palyra nodes invoke creates
them; they need the nodes.dispatch permission). A dispatch goes queued → sent →
running → succeeded, failed, timed_out or cancelled; it waits in the queue while its
node is offline, until its deadline.`,
		Example: `  palyra dispatches list --node 01JD5ZJ8Q0W1X2Y3Z4A5B6C7D8 --state running
  palyra dispatches watch 01JD60000000000000000000D1
  palyra dispatches cancel 01JD60000000000000000000D1 --reason "wrong host"`,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	c.AddCommand(newListCommand(d), newShowCommand(d), newWatchCommand(d), newCancelCommand(d))
	return c
}

// parseDispatchID parses the ID argument of a dispatch.
func parseDispatchID(arg string) (string, error) {
	return cliflag.ParseID(arg, "dispatch", "palyra dispatches list")
}

func newListCommand(d *deps.Deps) *cobra.Command {
	var (
		node, capability string
		nodeID           string // node, parsed
		since, until     cliflag.Time
		after, before    *timestamppb.Timestamp // since and until, resolved
		paging           cliflag.Paging
		state            = cliflag.NewChoice("queued", "sent", "running", "succeeded", "failed", "timed_out", "cancelled")
	)
	c := &cobra.Command{
		Use:   "list",
		Short: "List dispatches, newest first",
		Example: `  palyra dispatches list --state failed --since 24h
  palyra dispatches list --since 2025-01-01T00:00:00Z --until 2025-02-01T00:00:00Z --all
  palyra dispatches list --node 01JD5ZJ8Q0W1X2Y3Z4A5B6C7D8 --capability shell.execute --all -o json`,
		Args: cobra.NoArgs,
		RunE: deps.List[*controlplanev1.Dispatch, *controlplanev1.ListDispatchesResponse]{
			Paging: &paging,
			Noun:   "dispatches",
			Check: func() error {
				if node != "" {
					id, err := cliflag.ParseID(node, "node", "palyra nodes list")
					if err != nil {
						return err
					}
					nodeID = id
				}
				if len(capability) > 128 {
					return cliusage.Wrap(fmt.Errorf("--capability is %d bytes long; at most 128", len(capability)))
				}
				var err error
				after, before, err = cliflag.Window(&since, &until, d.Clock())
				return err
			},
			Page: func(ctx context.Context, c *client.Client, page string) (*controlplanev1.ListDispatchesResponse, error) {
				return deps.Msg(c.Dispatch.ListDispatches(ctx, connect.NewRequest(&controlplanev1.ListDispatchesRequest{
					State: states[state.Value], NodeId: nodeID, Capability: capability, PageSize: paging.Limit, PageToken: page,
					CreateTimeAfter: after, CreateTimeBefore: before,
				})))
			},
			Items: (*controlplanev1.ListDispatchesResponse).GetDispatches,
			Response: func(list []*controlplanev1.Dispatch, next string) *controlplanev1.ListDispatchesResponse {
				return &controlplanev1.ListDispatchesResponse{Dispatches: list, NextPageToken: next}
			},
			Table: listTable,
		}.RunE(d),
	}
	c.Flags().StringVar(&node, "node", "", "list only the dispatches of this node `ID`")
	c.Flags().Var(state, "state", "list only the dispatches in this state")
	c.Flags().StringVar(&capability, "capability", "", "list only the dispatches of this capability, e.g. shell.execute")
	c.Flags().Var(&since, "since", "list only the dispatches created at or after this time: RFC 3339, or a duration ago such as 1h or 7d")
	c.Flags().Var(&until, "until", "list only the dispatches created before this time: RFC 3339, or a duration ago")
	paging.Bind(c.Flags(), "dispatches", "every dispatch")
	return c
}

func newShowCommand(d *deps.Deps) *cobra.Command {
	var (
		withOutput bool
		screenshot string
	)
	c := &cobra.Command{
		Use:   "show ID",
		Short: "Show a dispatch: its input, times, result and error",
		Example: `  palyra dispatches show 01JD60000000000000000000D1 --include-output
  palyra dispatches show 01JD60000000000000000000D1 -o json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseDispatchID(args[0])
			if err != nil {
				return err
			}
			c, err := d.Client()
			if err != nil {
				return err
			}
			res, err := c.Dispatch.GetDispatch(cmd.Context(), connect.NewRequest(&controlplanev1.GetDispatchRequest{Id: id, IncludeOutput: withOutput}))
			if err != nil {
				return err
			}
			msg := res.Msg
			// The output comes in pages: with -o json all of it goes in the one object.
			rest := func(each func([]*controlplanev1.OutputChunk) error) error {
				if !msg.GetMoreOutput() {
					return nil
				}
				return ReadOutput(cmd.Context(), c.Dispatch, id, msg.GetNextOutputOffset(), each)
			}
			// A browser.* dispatch's output is a screenshot, for a file.
			image := withOutput && HasImageOutput(msg.GetDispatch().GetCapability())
			if withOutput && (d.Output == output.JSON || image) {
				err := rest(func(page []*controlplanev1.OutputChunk) error {
					msg.Output, msg.NextOutputOffset = append(msg.Output, page...), PageEnd(page, msg.GetNextOutputOffset())
					return nil
				})
				if err != nil {
					return err
				}
				msg.MoreOutput = false
			}
			if image {
				if err := saveScreenshot(d.Stderr, &controlplanev1.ExecuteCapabilityResponse{Dispatch: msg.GetDispatch(), Output: msg.GetOutput()}, screenshot); err != nil {
					return err
				}
				msg.Output = nil
			}
			if err := output.Print(d.Stdout, d.Output, msg, func(w io.Writer) { dispatchTable(w, msg.GetDispatch()) }); err != nil {
				return err
			}
			if !withOutput || d.Output == output.JSON || image {
				return nil
			}
			// After the table, whose tab stops would rearrange the output.
			if len(msg.GetOutput()) == 0 && !msg.GetMoreOutput() {
				fmt.Fprintln(d.Stdout, "\nOutput: none")
				return nil
			}
			fmt.Fprintln(d.Stdout, "\nOutput:")
			if err := WriteOutput(d.Stdout, d.Stdout, msg.GetOutput()); err != nil {
				return err
			}
			return rest(func(page []*controlplanev1.OutputChunk) error { return WriteOutput(d.Stdout, d.Stdout, page) })
		},
	}
	// Not --output, which is the global -o.
	c.Flags().BoolVar(&withOutput, "include-output", false, "also show the output kept so far, both streams in order; a browser.* dispatch's screenshot goes to a file")
	c.Flags().StringVar(&screenshot, "screenshot", "", ScreenshotFlagUsage)
	return c
}

func newWatchCommand(d *deps.Deps) *cobra.Command {
	var (
		from       uint64
		verbose    bool
		screenshot string
	)
	c := &cobra.Command{
		Use:   "watch ID",
		Short: "Follow a dispatch: write its output as it comes; exit with its exit code",
		Long: `watch follows a dispatch until it ends, as palyra nodes invoke --follow does: its
output goes to stdout and stderr as the node produced it, and palyra exits with the
remote process's exit code, else 0 when the dispatch succeeded and 1 when it did not.
A watch cut by a transport error resumes where it stopped. Ctrl-C stops watching but
leaves the dispatch running (palyra dispatches cancel stops it). With -o json the
final dispatch and its output are printed instead, as one object.`,
		Example: `  palyra dispatches watch 01JD60000000000000000000D1
  palyra dispatches watch 01JD60000000000000000000D1 --from-offset 4096`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseDispatchID(args[0])
			if err != nil {
				return err
			}
			c, err := d.Client()
			if err != nil {
				return err
			}
			asJSON := d.Output == output.JSON
			res, err := Follow(cmd.Context(), c.Dispatch, id, FollowOptions{
				FromOffset: from, Stdout: d.Stdout, Stderr: d.Stderr, Print: !asJSON, Collect: asJSON,
				Verbose: verbose, QueuedNotice: QueuedNotice,
			})
			return Report(d, res, err, screenshot)
		},
	}
	c.Flags().Uint64Var(&from, "from-offset", 0, "skip the output before this byte offset (both streams together)")
	c.Flags().StringVar(&screenshot, "screenshot", "", ScreenshotFlagUsage)
	c.Flags().BoolVarP(&verbose, "verbose", "v", false, "also write every change of state on stderr")
	return c
}

func newCancelCommand(d *deps.Deps) *cobra.Command {
	var reason string
	c := &cobra.Command{
		Use:   "cancel ID",
		Short: "Cancel a dispatch: at once when queued, else by asking its node to stop it",
		Long: `cancel cancels a dispatch that has not ended: a queued one at once; a sent or
running one by asking its node to stop it (the dispatch shows its cancel time until
the node reports the end). A dispatch that has ended cannot be cancelled (exit 1).`,
		Example: `  palyra dispatches cancel 01JD60000000000000000000D1 --reason "wrong host"`,
		Args:    cobra.ExactArgs(1),
		RunE: deps.ByID[*controlplanev1.CancelDispatchResponse]{
			ParseID: parseDispatchID,
			Check:   func() error { return cliflag.CheckReasonLength(reason) },
			Call: func(ctx context.Context, c *client.Client, id string) (*controlplanev1.CancelDispatchResponse, error) {
				return deps.Msg(c.Dispatch.CancelDispatch(ctx, connect.NewRequest(&controlplanev1.CancelDispatchRequest{Id: id, Reason: reason})))
			},
			Table: func(w io.Writer, m *controlplanev1.CancelDispatchResponse) { dispatchTable(w, m.GetDispatch()) },
		}.RunE(d),
	}
	c.Flags().StringVar(&reason, "reason", "", "why, recorded and sent to the node (at most 256 bytes)")
	return c
}

// listTable writes dispatches as a table.
func listTable(w io.Writer, list []*controlplanev1.Dispatch) {
	fmt.Fprintln(w, "ID\tNODE\tCAPABILITY\tSTATE\tCREATED\tDURATION\tEXIT\tCREATED BY")
	for _, d := range list {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.GetId(), output.Cell(d.GetNodeId()), output.Cell(d.GetCapability()),
			output.Enum(d.GetState()), output.Time(d.GetCreateTime(), "-"), Duration(d), exitCell(d), output.Cell(d.GetCreatedBy()))
	}
}

// dispatchTable writes every field of a dispatch as rows of a name and a value.
func dispatchTable(w io.Writer, d *controlplanev1.Dispatch) {
	row := func(k, v string) { fmt.Fprintf(w, "%s\t%s\n", k, v) }
	row("ID", d.GetId())
	row("Node", output.Cell(d.GetNodeId()))
	row("Capability", output.Cell(d.GetCapability()))
	row("State", output.Enum(d.GetState()))
	row("Input", output.Cell(d.GetInputJson()))
	row("Created", fmt.Sprintf("%s by %s", output.Time(d.GetCreateTime(), "-"), output.Cell(d.GetCreatedBy())))
	row("Idempotency key", output.Cell(d.GetIdempotencyKey()))
	row("Deadline", output.Time(d.GetDeadline(), "-"))
	row("Sent", output.Time(d.GetSendTime(), "-"))
	row("Started", output.Time(d.GetStartTime(), "-"))
	row("Finished", output.Time(d.GetFinishTime(), "-"))
	row("Duration", Duration(d))
	if d.GetCancelTime() != nil {
		row("Cancel asked", output.Time(d.GetCancelTime(), "-"))
	}
	row("Exit code", exitCell(d))
	out := fmt.Sprintf("%s (cap %s)", Bytes(d.GetOutputBytes()), Bytes(d.GetMaxOutputBytes()))
	if d.GetOutputTruncated() {
		out += ", truncated at the cap"
	}
	row("Output", out)
	if d.GetOutputLost() {
		row("Output lost", output.Cell(d.GetOutputLostReason()))
	}
	row("Result", output.Cell(d.GetResultJson()))
	row("Error", output.Cell(d.GetError()))
}

// Duration formats how long a dispatch ran, from its start (else its creation) to its
// end, for a table cell: "-" until it has ended, milliseconds under a second.
func Duration(d *controlplanev1.Dispatch) string {
	from := d.GetStartTime()
	if from == nil {
		from = d.GetCreateTime()
	}
	if d.GetFinishTime() == nil || from == nil {
		return "-"
	}
	took := d.GetFinishTime().AsTime().Sub(from.AsTime())
	switch {
	case took < 0:
		return "0ms"
	case took < time.Second:
		return fmt.Sprintf("%dms", took.Milliseconds())
	case took < time.Minute:
		return fmt.Sprintf("%.1fs", took.Seconds())
	}
	return output.Age(took)
}

// exitCell formats a dispatch's exit code for a table cell: the code of a process once
// the dispatch has ended, 0 for a process that succeeded, "-" otherwise.
func exitCell(d *controlplanev1.Dispatch) string {
	switch {
	case !Terminal(d.GetState()):
		return "-"
	case d.GetExitCode() != 0:
		return fmt.Sprint(d.GetExitCode())
	case isProcess(d.GetCapability()) && d.GetState() == controlplanev1.DispatchState_DISPATCH_STATE_SUCCEEDED:
		return "0"
	}
	return "-"
}
