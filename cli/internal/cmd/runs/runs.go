// Package runs is `palyra runs`: the runs of agents (palyra agents run starts one). It
// lists and shows them with their steps, follows one until it ends (watch), and cancels
// one. It also holds what `palyra agents run` shares with watch: the line a step makes
// on stderr, and the exit status of a run.
package runs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	"github.com/palyra/palyra/cli/internal/client"
	"github.com/palyra/palyra/cli/internal/cliflag"
	"github.com/palyra/palyra/cli/internal/cmd/deps"
	"github.com/palyra/palyra/cli/internal/output"
	agentsv1 "github.com/palyra/palyra/gen/go/palyra/agents/v1"
	"github.com/palyra/palyra/internal/cliusage"
)

// states maps the --state names to the API's run states.
var states = map[string]agentsv1.RunState{
	"running":          agentsv1.RunState_RUN_STATE_RUNNING,
	"waiting_approval": agentsv1.RunState_RUN_STATE_WAITING_APPROVAL,
	"succeeded":        agentsv1.RunState_RUN_STATE_SUCCEEDED,
	"failed":           agentsv1.RunState_RUN_STATE_FAILED,
	"cancelled":        agentsv1.RunState_RUN_STATE_CANCELLED,
}

// NewCommand returns `palyra runs` and its subcommands.
func NewCommand(d *deps.Deps) *cobra.Command {
	c := &cobra.Command{
		Use:   "runs",
		Short: "List, show, follow and cancel the runs of agents",
		Long: `runs shows the runs of agents (palyra agents run, or the model agent:NAME of the
OpenAI-compatible API, starts them): each model call, tool call (with its node,
dispatch and approval) and the answer. A run is running or waiting_approval, then
succeeded, failed (a limit, an error, or its palyrad stopped) or cancelled. Listing,
showing and watching need agents.read; cancelling needs agents.run for one's own runs
and agents.write for another's.`,
		Example: `  palyra runs list --agent helper --state failed
  palyra runs watch 01JD60000000000000000000R1
  palyra runs cancel 01JD60000000000000000000R1 --reason "wrong question"`,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	c.AddCommand(newListCommand(d), newShowCommand(d), newWatchCommand(d), newCancelCommand(d))
	return c
}

// parseRunID parses the ID argument of a run.
func parseRunID(arg string) (string, error) { return cliflag.ParseID(arg, "run", "palyra runs list") }

func newListCommand(d *deps.Deps) *cobra.Command {
	var (
		agent  string
		paging cliflag.Paging
		state  = cliflag.NewChoice("running", "waiting_approval", "succeeded", "failed", "cancelled")
	)
	c := &cobra.Command{
		Use:     "list",
		Short:   "List runs, newest first",
		Example: "  palyra runs list --agent helper --state failed",
		Args:    cobra.NoArgs,
		RunE: deps.List[*agentsv1.Run, *agentsv1.ListRunsResponse]{
			Paging: &paging,
			Noun:   "runs",
			Check: func() error {
				if len(agent) > 63 {
					return cliusage.Wrap(fmt.Errorf("--agent is %d bytes long; an agent's name has at most 63", len(agent)))
				}
				return nil
			},
			Page: func(ctx context.Context, c *client.Client, page string) (*agentsv1.ListRunsResponse, error) {
				return deps.Msg(c.Agents.ListRuns(ctx, connect.NewRequest(&agentsv1.ListRunsRequest{
					AgentName: agent, State: states[state.Value], PageSize: paging.Limit, PageToken: page,
				})))
			},
			Items: (*agentsv1.ListRunsResponse).GetRuns,
			Response: func(list []*agentsv1.Run, next string) *agentsv1.ListRunsResponse {
				return &agentsv1.ListRunsResponse{Runs: list, NextPageToken: next}
			},
			Table: listTable,
		}.RunE(d),
	}
	c.Flags().StringVar(&agent, "agent", "", "list only the runs of the agent of this `NAME` (when the run started)")
	c.Flags().Var(state, "state", "list only the runs in this state")
	paging.Bind(c.Flags(), "runs", "every run")
	return c
}

func newShowCommand(d *deps.Deps) *cobra.Command {
	return &cobra.Command{
		Use:     "show ID",
		Short:   "Show a run and its steps",
		Example: "  palyra runs show 01JD60000000000000000000R1 -o json",
		Args:    cobra.ExactArgs(1),
		RunE: deps.ByID[*agentsv1.GetRunResponse]{
			ParseID: parseRunID,
			Call: func(ctx context.Context, c *client.Client, id string) (*agentsv1.GetRunResponse, error) {
				return deps.Msg(c.Agents.GetRun(ctx, connect.NewRequest(&agentsv1.GetRunRequest{Id: id})))
			},
			Table: func(w io.Writer, m *agentsv1.GetRunResponse) {
				runTable(w, m.GetRun())
				stepsTable(w, m.GetSteps())
			},
		}.RunE(d),
	}
}

func newWatchCommand(d *deps.Deps) *cobra.Command {
	return &cobra.Command{
		Use:   "watch ID",
		Short: "Follow a run until it ends: a line per step on stderr, the answer on stdout",
		Long: `watch follows a run from any replica: a line on stderr for each step as it starts
and ends (model calls with their tokens, tool calls with their node, dispatch and
outcome), then the answer on stdout. palyra exits 0 when the run succeeded, else 1
with its reason. Ctrl-C stops watching; the run goes on (palyra runs cancel stops it).
With -o json the final run is printed instead.`,
		Example: "  palyra runs watch 01JD60000000000000000000R1",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseRunID(args[0])
			if err != nil {
				return err
			}
			c, err := d.Client()
			if err != nil {
				return err
			}
			stream, err := c.Agents.WatchRun(cmd.Context(), connect.NewRequest(&agentsv1.WatchRunRequest{Id: id}))
			if err != nil {
				return err
			}
			defer stream.Close()
			var last *agentsv1.Run
			for stream.Receive() {
				switch e := stream.Msg().GetEvent().(type) {
				case *agentsv1.WatchRunResponse_Run:
					last = e.Run
				case *agentsv1.WatchRunResponse_Step:
					if d.Output != output.JSON {
						output.Fprintf(d.Stderr, "%s\n", StepLine(e.Step))
					}
				}
			}
			if err := stream.Err(); err != nil {
				return err
			}
			if last == nil {
				return errors.New("the watch ended before the run was sent")
			}
			return Finish(d, last)
		},
	}
}

func newCancelCommand(d *deps.Deps) *cobra.Command {
	var reason string
	c := &cobra.Command{
		Use:   "cancel ID",
		Short: "Cancel a run: the replica running it cancels its running dispatch and ends it",
		Long: `cancel asks for a run's cancellation; the replica running it stops it, cancels its
running dispatch on the node, and ends it cancelled with the reason. A run that has
ended cannot be cancelled (exit 1).`,
		Example: `  palyra runs cancel 01JD60000000000000000000R1 --reason "wrong question"`,
		Args:    cobra.ExactArgs(1),
		RunE: deps.ByID[*agentsv1.CancelRunResponse]{
			ParseID: parseRunID,
			Check:   func() error { return cliflag.CheckReasonLength(reason) },
			Call: func(ctx context.Context, c *client.Client, id string) (*agentsv1.CancelRunResponse, error) {
				return deps.Msg(c.Agents.CancelRun(ctx, connect.NewRequest(&agentsv1.CancelRunRequest{Id: id, Reason: reason})))
			},
			Table: func(w io.Writer, m *agentsv1.CancelRunResponse) { runTable(w, m.GetRun()) },
		}.RunE(d),
	}
	c.Flags().StringVar(&reason, "reason", "", "why, recorded as the run's reason (at most 256 bytes)")
	return c
}

// Finish prints a run that ended: with -o json the run, else its answer on stdout; a
// run that did not succeed is an error naming its state and reason (exit 1).
func Finish(d *deps.Deps, run *agentsv1.Run) error {
	if d.Output == output.JSON {
		if err := output.Print(d.Stdout, d.Output, run, nil); err != nil {
			return err
		}
	} else if run.GetState() == agentsv1.RunState_RUN_STATE_SUCCEEDED {
		output.Fprintf(d.Stdout, "%s\n", run.GetAnswer())
	}
	return Failed(run)
}

// Failed is the error of a run that did not succeed, naming its state and reason; nil
// for one that succeeded.
func Failed(run *agentsv1.Run) error {
	if run.GetState() != agentsv1.RunState_RUN_STATE_SUCCEEDED {
		return fmt.Errorf("run %s %s: %s", run.GetId(), output.Enum(run.GetState()), output.Escape(run.GetReason()))
	}
	return nil
}

// StepLine is a step as one line: "[3] tool system_info on NODE: succeeded (dispatch D)".
func StepLine(s *agentsv1.RunStep) string {
	prefix := "[" + strconv.Itoa(int(s.GetSeq())) + "] "
	switch {
	case s.GetModelCall() != nil:
		m := s.GetModelCall()
		if s.GetFinishTime() == nil {
			return prefix + "model " + m.GetModel() + ": calling"
		}
		line := fmt.Sprintf("%smodel %s: %s (%d prompt + %d completion tokens)", prefix, m.GetModel(),
			output.Cell(m.GetFinishReason()), m.GetPromptTokens(), m.GetCompletionTokens())
		if m.GetError() != "" {
			line += ": " + m.GetError()
		}
		return line
	case s.GetToolCall() != nil:
		return prefix + ToolLine(s)
	case s.GetAnswer() != nil:
		return prefix + "answer"
	}
	return prefix + output.Enum(s.GetKind())
}

// ToolLine describes a tool-call step: its tool, node, and outcome once it ended.
func ToolLine(s *agentsv1.RunStep) string {
	tc := s.GetToolCall()
	line := "tool " + tc.GetTool()
	if tc.GetNodeId() != "" {
		line += " on " + tc.GetNodeId()
	}
	line += " " + tc.GetInputJson()
	if s.GetFinishTime() == nil {
		return line + ": started"
	}
	line += ": " + output.Enum(tc.GetOutcome())
	if tc.GetDispatchId() != "" {
		line += " (dispatch " + tc.GetDispatchId() + ")"
	}
	if tc.GetError() != "" {
		line += ": " + tc.GetError()
	}
	return line
}

// listTable writes runs as a table.
func listTable(w io.Writer, list []*agentsv1.Run) {
	fmt.Fprintln(w, "ID\tAGENT\tSTATE\tCREATED\tMODEL CALLS\tTOOL CALLS\tTOKENS\tSTARTED BY\tREASON")
	for _, r := range list {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\t%s\n", r.GetId(), r.GetAgentName(), output.Enum(r.GetState()),
			output.Time(r.GetCreateTime(), "-"), r.GetModelCalls(), r.GetToolCalls(), r.GetPromptTokens()+r.GetCompletionTokens(),
			output.Cell(r.GetStartedBy()), output.Cell(r.GetReason()))
	}
}

// runTable writes a run as rows of a name and a value.
func runTable(w io.Writer, r *agentsv1.Run) {
	row := func(k, v string) { fmt.Fprintf(w, "%s\t%s\n", k, v) }
	row("ID", r.GetId())
	row("Agent", fmt.Sprintf("%s (revision %d, %s)", r.GetAgentName(), r.GetAgentRevision(), r.GetAgentId()))
	row("Model", r.GetAgent().GetModel())
	row("State", output.Enum(r.GetState()))
	row("Reason", output.Cell(r.GetReason()))
	row("Started", fmt.Sprintf("%s by %s", output.Time(r.GetCreateTime(), "-"), output.Cell(r.GetStartedBy())))
	row("Replica", r.GetReplicaId())
	row("Deadline", output.Time(r.GetDeadline(), "-"))
	if r.GetCancelTime() != nil {
		row("Cancel asked", output.Time(r.GetCancelTime(), "-"))
	}
	row("Finished", output.Time(r.GetFinishTime(), "-"))
	row("Model calls", strconv.Itoa(int(r.GetModelCalls())))
	row("Tool calls", strconv.Itoa(int(r.GetToolCalls())))
	row("Tokens", fmt.Sprintf("%d prompt + %d completion", r.GetPromptTokens(), r.GetCompletionTokens()))
	row("Answer", output.Cell(strings.TrimSpace(r.GetAnswer())))
}

// stepsTable writes a run's steps after a blank line.
func stepsTable(w io.Writer, steps []*agentsv1.RunStep) {
	if len(steps) == 0 {
		return
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "STEP\tKIND\tSTARTED\tFINISHED\tDETAIL")
	for _, s := range steps {
		detail := StepLine(s)
		detail = detail[strings.IndexByte(detail, ']')+2:]
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\n", s.GetSeq(), output.Enum(s.GetKind()), output.Time(s.GetStartTime(), "-"),
			output.Time(s.GetFinishTime(), "-"), output.Cell(detail))
	}
}
