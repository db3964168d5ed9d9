// Package approvals is `palyra approvals`: the tool calls of agents' ask tools that wait
// for a human (list, show), and their decision (approve, deny).
//
// A pending approval names the agent, the run, the tool, the capability, the node it
// would run on and the exact input the node would be given; show prints that input
// whole. A decision is final; denying needs a reason, which the model is told. An
// approval nobody decides expires after agents.approval_timeout and the call is denied.
package approvals

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	"github.com/palyra/palyra/cli/internal/client"
	"github.com/palyra/palyra/cli/internal/cliflag"
	"github.com/palyra/palyra/cli/internal/cmd/deps"
	"github.com/palyra/palyra/cli/internal/output"
	agentsv1 "github.com/palyra/palyra/gen/go/palyra/agents/v1"
)

// NewCommand returns `palyra approvals` and its subcommands.
func NewCommand(d *deps.Deps) *cobra.Command {
	c := &cobra.Command{
		Use:   "approvals",
		Short: "List, show, approve and deny the tool calls of agents that wait for a human",
		Long: `approvals shows the tool calls of agents' ask tools that wait for a human
(approvals.read) and decides them (approvals.decide: admin and owner). Each names the
agent, the run, the tool, the node it would run on and the exact input the node would
be given. A decision is final: approve runs the call (--scope run also approves every
later call of the same tool in the same run), deny refuses it with a reason the model is
told. An approval nobody decides expires after agents.approval_timeout (10m unless
configured) and the call is denied.`,
		Example: `  palyra approvals list
  palyra approvals show 01JD5ZJ8Q0W1X2Y3Z4A5B6C7D8
  palyra approvals approve 01JD5ZJ8Q0W1X2Y3Z4A5B6C7D8 --scope run
  palyra approvals deny 01JD5ZJ8Q0W1X2Y3Z4A5B6C7D8 --reason "not on the database host"`,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	c.AddCommand(newListCommand(d), newShowCommand(d), newApproveCommand(d), newDenyCommand(d))
	return c
}

// states maps the --state names to the API's approval states; "all" is no filter.
var states = map[string]agentsv1.ApprovalState{
	"pending":  agentsv1.ApprovalState_APPROVAL_STATE_PENDING,
	"approved": agentsv1.ApprovalState_APPROVAL_STATE_APPROVED,
	"denied":   agentsv1.ApprovalState_APPROVAL_STATE_DENIED,
	"expired":  agentsv1.ApprovalState_APPROVAL_STATE_EXPIRED,
	"all":      agentsv1.ApprovalState_APPROVAL_STATE_UNSPECIFIED,
}

// parseID parses the ID argument of an approval.
func parseID(arg string) (string, error) {
	return cliflag.ParseID(arg, "approval", "palyra approvals list")
}

func newListCommand(d *deps.Deps) *cobra.Command {
	var (
		paging cliflag.Paging
		state  = cliflag.NewChoice("pending", "approved", "denied", "expired", "all")
		run    string
	)
	state.Value = "pending"
	c := &cobra.Command{
		Use:   "list",
		Short: "List approvals, newest first: the pending ones unless --state says otherwise",
		Example: `  palyra approvals list
  palyra approvals list --state all --run 01JD5ZJ8Q0W1X2Y3Z4A5B6C7R1
  palyra approvals list --state denied --all -o json`,
		Args: cobra.NoArgs,
		RunE: deps.List[*agentsv1.Approval, *agentsv1.ListApprovalsResponse]{
			Paging: &paging,
			Noun:   "approvals",
			Check: func() (err error) {
				if run != "" {
					run, err = cliflag.ParseID(run, "run", "palyra approvals list --state all")
				}
				return err
			},
			Page: func(ctx context.Context, c *client.Client, page string) (*agentsv1.ListApprovalsResponse, error) {
				return deps.Msg(c.Approvals.ListApprovals(ctx, connect.NewRequest(&agentsv1.ListApprovalsRequest{
					State: states[state.Value], RunId: run, PageSize: paging.Limit, PageToken: page,
				})))
			},
			Items: (*agentsv1.ListApprovalsResponse).GetApprovals,
			Response: func(items []*agentsv1.Approval, next string) *agentsv1.ListApprovalsResponse {
				return &agentsv1.ListApprovalsResponse{Approvals: items, NextPageToken: next}
			},
			Table: func(w io.Writer, items []*agentsv1.Approval) { listTable(w, items, d.Clock()) },
		}.RunE(d),
	}
	c.Flags().Var(state, "state", "list only the approvals in this state: pending, approved, denied, expired or all")
	c.Flags().StringVar(&run, "run", "", "list only the approvals of this run")
	paging.Bind(c.Flags(), "approvals", "every approval")
	return c
}

// listTable writes approvals as a table, one row each; WHEN is how long ago a pending
// one was asked for and when it expires, or how long ago it was decided.
func listTable(w io.Writer, items []*agentsv1.Approval, now time.Time) {
	fmt.Fprintln(w, "ID\tSTATE\tAGENT\tTOOL\tCAPABILITY\tNODE\tRUN\tWHEN")
	for _, a := range items {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", a.GetId(), output.Enum(a.GetState()), output.Cell(a.GetAgentName()),
			output.Cell(a.GetTool()), output.Cell(a.GetCapability()), output.Cell(a.GetNodeId()), output.Cell(a.GetRunId()), when(a, now))
	}
}

// when says how long ago a pending approval was asked for and in how long it expires,
// or how long ago it was decided.
func when(a *agentsv1.Approval, now time.Time) string {
	if a.GetState() == agentsv1.ApprovalState_APPROVAL_STATE_PENDING {
		return fmt.Sprintf("asked %s ago, expires in %s", output.Age(now.Sub(a.GetCreateTime().AsTime())),
			output.Age(a.GetExpireTime().AsTime().Sub(now)))
	}
	if a.GetDecideTime() == nil {
		return "-"
	}
	return output.Age(now.Sub(a.GetDecideTime().AsTime())) + " ago"
}

// showTable writes every field of an approval as rows of a name and a value, then its
// input pretty-printed.
func showTable(w io.Writer, a *agentsv1.Approval, now time.Time) {
	row := func(k, v string) { fmt.Fprintf(w, "%s\t%s\n", k, v) }
	row("ID", a.GetId())
	row("State", output.Enum(a.GetState()))
	row("Agent", fmt.Sprintf("%s (%s)", output.Cell(a.GetAgentName()), output.Cell(a.GetAgentId())))
	row("Run", fmt.Sprintf("%s, step %d", output.Cell(a.GetRunId()), a.GetStepSeq()))
	row("Tool", output.Cell(a.GetTool()))
	row("Capability", output.Cell(a.GetCapability()))
	row("Node", output.Cell(a.GetNodeId()))
	row("Requested by", output.Cell(a.GetRequestedBy()))
	row("Created", fmt.Sprintf("%s (%s ago)", output.Time(a.GetCreateTime(), "-"), output.Age(now.Sub(a.GetCreateTime().AsTime()))))
	row("Expires", output.Time(a.GetExpireTime(), "-"))
	decided := "-"
	if a.GetDecideTime() != nil {
		decided = fmt.Sprintf("%s by %s", output.Time(a.GetDecideTime(), "-"), output.Cell(a.GetDecidedBy()))
	}
	row("Decided", decided)
	scope := "-"
	if a.GetScope() != agentsv1.ApprovalScope_APPROVAL_SCOPE_UNSPECIFIED {
		scope = output.Enum(a.GetScope())
	}
	row("Scope", scope)
	row("Reason", output.Cell(a.GetReason()))
	fmt.Fprintf(w, "Input:\n%s\n", pretty(a.GetInputJson()))
}

// pretty indents JSON text, or returns it as it is when it is not JSON.
func pretty(s string) string {
	var out bytes.Buffer
	if err := json.Indent(&out, []byte(s), "", "  "); err != nil {
		return s
	}
	return out.String()
}

func newShowCommand(d *deps.Deps) *cobra.Command {
	return &cobra.Command{
		Use:     "show ID",
		Short:   "Show an approval: the agent, run, tool, capability, node and the exact input",
		Example: "  palyra approvals show 01JD5ZJ8Q0W1X2Y3Z4A5B6C7D8",
		Args:    cobra.ExactArgs(1),
		RunE: deps.ByID[*agentsv1.GetApprovalResponse]{
			ParseID: parseID,
			Call: func(ctx context.Context, c *client.Client, id string) (*agentsv1.GetApprovalResponse, error) {
				return deps.Msg(c.Approvals.GetApproval(ctx, connect.NewRequest(&agentsv1.GetApprovalRequest{Id: id})))
			},
			Table: func(w io.Writer, m *agentsv1.GetApprovalResponse) { showTable(w, m.GetApproval(), d.Clock()) },
		}.RunE(d),
	}
}

func newApproveCommand(d *deps.Deps) *cobra.Command {
	var (
		scope  = cliflag.NewChoice("once", "run")
		reason string
	)
	scope.Value = "once"
	c := &cobra.Command{
		Use:   "approve ID",
		Short: "Approve a pending tool call: the run dispatches it",
		Long: `approve approves a pending tool call, which the run then dispatches to its node.
Check the input with 'palyra approvals show ID' first. --scope run also approves every
later call of the same tool in the same run; once (the default) approves this call only.`,
		Example: `  palyra approvals approve 01JD5ZJ8Q0W1X2Y3Z4A5B6C7D8
  palyra approvals approve 01JD5ZJ8Q0W1X2Y3Z4A5B6C7D8 --scope run --reason "read-only commands"`,
		Args: cobra.ExactArgs(1),
		RunE: deps.ByID[*agentsv1.DecideApprovalResponse]{
			ParseID: parseID,
			Check:   func() error { return cliflag.CheckReasonLength(reason) },
			Call: func(ctx context.Context, c *client.Client, id string) (*agentsv1.DecideApprovalResponse, error) {
				s := agentsv1.ApprovalScope_APPROVAL_SCOPE_ONCE
				if scope.Value == "run" {
					s = agentsv1.ApprovalScope_APPROVAL_SCOPE_RUN
				}
				return deps.Msg(c.Approvals.DecideApproval(ctx, connect.NewRequest(&agentsv1.DecideApprovalRequest{
					Id: id, Approve: true, Scope: s, Reason: reason})))
			},
			Table: func(w io.Writer, m *agentsv1.DecideApprovalResponse) { showTable(w, m.GetApproval(), d.Clock()) },
		}.RunE(d),
	}
	c.Flags().Var(scope, "scope", "once: this call only; run: also every later call of the same tool in this run")
	c.Flags().StringVar(&reason, "reason", "", "why, recorded and audited (optional, at most 256 bytes)")
	return c
}

func newDenyCommand(d *deps.Deps) *cobra.Command {
	var reason string
	c := &cobra.Command{
		Use:     "deny ID --reason R",
		Short:   "Deny a pending tool call; the model is told the reason",
		Example: `  palyra approvals deny 01JD5ZJ8Q0W1X2Y3Z4A5B6C7D8 --reason "not on the database host"`,
		Args:    cobra.ExactArgs(1),
		RunE: deps.ByID[*agentsv1.DecideApprovalResponse]{
			ParseID: parseID,
			Check:   func() error { return cliflag.CheckReason(reason) },
			Call: func(ctx context.Context, c *client.Client, id string) (*agentsv1.DecideApprovalResponse, error) {
				return deps.Msg(c.Approvals.DecideApproval(ctx, connect.NewRequest(&agentsv1.DecideApprovalRequest{Id: id, Reason: reason})))
			},
			Table: func(w io.Writer, m *agentsv1.DecideApprovalResponse) { showTable(w, m.GetApproval(), d.Clock()) },
		}.RunE(d),
	}
	c.Flags().StringVar(&reason, "reason", "", "why, told to the model (required, at most 256 bytes)")
	return c
}
