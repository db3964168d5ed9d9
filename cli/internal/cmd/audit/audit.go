// Package audit is `palyra audit`: list the daemon's audit log and verify its hash
// chain.
package audit

import (
	"errors"
	"fmt"
	"io"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	"github.com/palyra/palyra/cli/internal/client"
	"github.com/palyra/palyra/cli/internal/cliflag"
	"github.com/palyra/palyra/cli/internal/cmd/deps"
	"github.com/palyra/palyra/cli/internal/output"
	accessv1 "github.com/palyra/palyra/gen/go/palyra/access/v1"
	"github.com/palyra/palyra/internal/cliusage"
)

// NewCommand returns `palyra audit` and its subcommands.
func NewCommand(d *deps.Deps) *cobra.Command {
	c := &cobra.Command{
		Use:   "audit",
		Short: "List the audit log, verify its hash chain",
		Long: `audit reads palyrad's audit log (it needs the audit.read permission): every call that
changed state and every refused one, with who, what, when, from where and the outcome.
Calls a rate limit turned away, and TLS handshakes refused for their client certificate,
are counted in one summary per address per minute. A change always commits with its
record: code "committed" marks a record palyrad wrote for a call whose end it could not
record (a replica died, or the database went away). The log is hash-chained, so that
verify detects edited or deleted events.`,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	c.AddCommand(newListCommand(d), newVerifyCommand(d))
	return c
}

// outcomes maps the --outcome names to the API's outcomes.
var outcomes = map[string]accessv1.AuditOutcome{
	"success": accessv1.AuditOutcome_AUDIT_OUTCOME_SUCCESS,
	"failure": accessv1.AuditOutcome_AUDIT_OUTCOME_FAILURE,
}

func newListCommand(d *deps.Deps) *cobra.Command {
	var (
		principal, procedure string
		outcome              = cliflag.NewChoice("success", "failure")
		since, until         cliflag.Time
		paging               cliflag.Paging
	)
	c := &cobra.Command{
		Use:   "list",
		Short: "List audit events, newest first",
		Example: `  palyra audit list --since 1h
  palyra audit list --procedure /palyra.access.v1.AccessService/CreateToken --outcome failure
  palyra audit list --since 2025-01-01T00:00:00Z --until 2025-02-01T00:00:00Z --all -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := paging.Check(cmd.Flags()); err != nil {
				return err
			}
			if len(principal) > 128 || len(procedure) > 256 {
				return cliusage.Wrap(errors.New("--principal is at most 128 bytes long, --procedure at most 256"))
			}
			req := &accessv1.ListAuditEventsRequest{
				PageSize: paging.Limit, Principal: principal, Procedure: procedure, Outcome: outcomes[outcome.Value],
			}
			var err error
			if req.Since, req.Until, err = cliflag.Window(&since, &until, d.Clock()); err != nil {
				return err
			}
			c, err := d.Client()
			if err != nil {
				return err
			}
			events, next, err := client.Pages(paging.All, func(page string) ([]*accessv1.AuditEvent, string, error) {
				req.PageToken = page
				res, err := c.Audit.ListAuditEvents(cmd.Context(), connect.NewRequest(req))
				if err != nil {
					return nil, "", err
				}
				return res.Msg.GetEvents(), res.Msg.GetNextPageToken(), nil
			})
			if err != nil {
				return err
			}
			out := &accessv1.ListAuditEventsResponse{Events: events, NextPageToken: next}
			if out.NextPageToken != "" && d.Output != output.JSON {
				fmt.Fprintln(d.Stderr, "more events follow: pass --all to list them all, or narrow with --since")
			}
			return output.Print(d.Stdout, d.Output, out, func(w io.Writer) { listTable(w, out.GetEvents()) })
		},
	}
	c.Flags().StringVar(&principal, "principal", "", "only the events of this principal, e.g. token:01JD...")
	c.Flags().StringVar(&procedure, "procedure", "", "only the events of this RPC, e.g. /palyra.access.v1.AccessService/CreateToken")
	c.Flags().Var(outcome, "outcome", "only the events with this outcome")
	c.Flags().Var(&since, "since", "only the events at or after this time: RFC 3339, or a duration ago such as 1h or 7d")
	c.Flags().Var(&until, "until", "only the events before this time: RFC 3339, or a duration ago")
	paging.Bind(c.Flags(), "events", "every matching event")
	return c
}

// listTable prints events; a summary shows the procedures refused in PROCEDURE and how
// many refusals since when in TARGET.
func listTable(w io.Writer, events []*accessv1.AuditEvent) {
	fmt.Fprintln(w, "SEQ\tTIME\tPRINCIPAL\tPROCEDURE\tTARGET\tOUTCOME\tCODE\tREMOTE\tREPLICA")
	for _, e := range events {
		procedure, target := output.Cell(e.GetProcedure()), output.Cell(e.GetTarget())
		if s := e.GetSummary(); s != nil {
			procedure = output.Cell(output.List(s.GetProcedures()))
			target = fmt.Sprintf("%d refusals since %s", s.GetCount(), output.Time(s.GetFirstTime(), "-"))
		}
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.GetSequence(), output.Time(e.GetTime(), "-"),
			output.Cell(e.GetPrincipal()), procedure, target, output.Enum(e.GetOutcome()), output.Cell(e.GetCode()),
			output.Cell(e.GetRemoteAddress()), output.Cell(e.GetReplicaId()))
	}
}

func newVerifyCommand(d *deps.Deps) *cobra.Command {
	return &cobra.Command{
		Use:   "verify",
		Short: "Verify the audit log's hash chain; exit 1 when it is broken",
		Long: `verify asks palyrad to recompute the hash chain of the whole audit log. It prints the
head (newest event and its hash) of an intact log, and exits 1 naming the first broken
event otherwise. Record the head outside palyrad: no chain can show that its newest
events were deleted, but a recorded head can.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := d.Client()
			if err != nil {
				return err
			}
			res, err := c.Audit.VerifyAuditLog(cmd.Context(), connect.NewRequest(&accessv1.VerifyAuditLogRequest{}))
			if err != nil {
				return err
			}
			v := res.Msg
			if !v.GetIntact() {
				broken := errors.New(Verdict(v))
				if d.Output == output.JSON {
					if err := output.Print(d.Stdout, d.Output, v, nil); err != nil {
						return err
					}
				}
				return broken
			}
			return output.Print(d.Stdout, d.Output, v, func(w io.Writer) { fmt.Fprintln(w, Verdict(v)) })
		},
	}
}

// Verdict says in one line what VerifyAuditLog found.
func Verdict(v *accessv1.VerifyAuditLogResponse) string {
	if !v.GetIntact() {
		return fmt.Sprintf("audit log BROKEN at event #%d: %s", v.GetFirstBrokenSequence(), v.GetProblem())
	}
	if v.GetEventsChecked() == 0 {
		return "audit log intact: 0 events"
	}
	return fmt.Sprintf("audit log intact: %d events, head #%d %s", v.GetEventsChecked(), v.GetHeadSequence(), v.GetHeadHash())
}
