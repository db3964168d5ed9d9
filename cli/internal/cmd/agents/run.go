package agents

import (
	"errors"
	"fmt"
	"strings"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	"github.com/palyra/palyra/cli/internal/cmd/deps"
	"github.com/palyra/palyra/cli/internal/cmd/runs"
	"github.com/palyra/palyra/cli/internal/output"
	agentsv1 "github.com/palyra/palyra/gen/go/palyra/agents/v1"
	"github.com/palyra/palyra/internal/cliusage"
)

func newRunCommand(d *deps.Deps) *cobra.Command {
	var system string
	c := &cobra.Command{
		Use:   "run NAME|ID PROMPT",
		Short: "Run an agent on a prompt: its text on stdout as it comes, its tool calls on stderr",
		Long: `run starts a run of the agent (palyra runs shows it later) and follows it: the
model's text goes to stdout as it comes, and a line on stderr tells each tool call's
start and end (its node, dispatch and outcome) and each approval the run waits for
(palyra approvals approve decides it). palyra exits 0 when the run succeeded, else 1
with its reason. Ctrl-C stops following; the run goes on (palyra runs cancel stops
it). With -o json the finished run is printed instead of the text. Needs agents.run.`,
		Example: `  palyra agents run fleet "Which of my nodes has the least free disk?"
  palyra agents run fleet --system "Answer in one line." "What runs on db-1?"`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, name, err := ParseRef(args[0])
			if err != nil {
				return err
			}
			if strings.TrimSpace(args[1]) == "" {
				return cliusage.Wrap(errors.New("the prompt is empty"))
			}
			c, err := d.Client()
			if err != nil {
				return err
			}
			req := &agentsv1.RunRequest{Prompt: args[1]}
			if system != "" {
				req.Messages = []*agentsv1.RunMessage{{Role: "system", Content: system}}
			}
			if id != "" {
				req.Agent = &agentsv1.RunRequest_Id{Id: id}
			} else {
				req.Agent = &agentsv1.RunRequest_Name{Name: name}
			}
			stream, err := c.Agents.Run(cmd.Context(), connect.NewRequest(req))
			if err != nil {
				return err
			}
			defer stream.Close()
			text := d.Output != output.JSON
			wrote := false // text written and not yet ended by a line feed
			endLine := func() {
				if wrote {
					fmt.Fprintln(d.Stdout)
					wrote = false
				}
			}
			for stream.Receive() {
				switch e := stream.Msg().GetEvent().(type) {
				case *agentsv1.RunResponse_Started:
					if text {
						output.Fprintf(d.Stderr, "run %s of agent %s started\n", e.Started.GetId(), e.Started.GetAgentName())
					}
				case *agentsv1.RunResponse_TextDelta:
					if text && e.TextDelta.GetText() != "" {
						output.Fprintf(d.Stdout, "%s", e.TextDelta.GetText())
						wrote = true
					}
				case *agentsv1.RunResponse_ToolCallStarted:
					if text {
						endLine()
						output.Fprintf(d.Stderr, "%s\n", runs.ToolLine(e.ToolCallStarted))
					}
				case *agentsv1.RunResponse_ApprovalPending:
					if text {
						endLine()
						a := e.ApprovalPending
						output.Fprintf(d.Stderr, "waiting for approval %s of %s on %s (palyra approvals approve %s), until %s\n",
							a.GetId(), a.GetTool(), a.GetNodeId(), a.GetId(), output.Time(a.GetExpireTime(), "-"))
					}
				case *agentsv1.RunResponse_ToolCallFinished:
					if text {
						endLine()
						output.Fprintf(d.Stderr, "%s\n", runs.ToolLine(e.ToolCallFinished))
					}
				case *agentsv1.RunResponse_Finished:
					endLine()
					if text {
						return runs.Failed(e.Finished)
					}
					return runs.Finish(d, e.Finished)
				}
			}
			if err := stream.Err(); err != nil {
				return err
			}
			return errors.New("the run's stream ended before the run did: palyra runs watch follows it")
		},
	}
	c.Flags().StringVar(&system, "system", "", "a system message sent before the prompt (after the agent's own)")
	return c
}
