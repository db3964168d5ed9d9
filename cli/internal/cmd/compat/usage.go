package compat

import (
	"fmt"
	"io"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	"github.com/palyra/palyra/cli/internal/cliflag"
	"github.com/palyra/palyra/cli/internal/cmd/deps"
	"github.com/palyra/palyra/cli/internal/cmd/tokens"
	"github.com/palyra/palyra/cli/internal/output"
	compatv1 "github.com/palyra/palyra/gen/go/palyra/compat/v1"
	"github.com/palyra/palyra/internal/cliusage"
)

// ParseSince parses --since: a UTC day (2025-01-02), an RFC 3339 time or a duration
// ago (7d, 12h), as the UTC day it falls on.
func ParseSince(s string, now time.Time) (string, error) {
	if d, err := time.Parse(time.DateOnly, s); err == nil {
		return d.Format(time.DateOnly), nil
	}
	at, err := cliflag.ParseTime(s, now)
	if err != nil {
		return "", cliusage.Wrap(fmt.Errorf("--since: give a day (2025-01-02), a time (2025-01-02T15:04:05Z) or a duration ago (7d, 12h); got %q", s))
	}
	return at.UTC().Format(time.DateOnly), nil
}

func newUsageCommand(d *deps.Deps) *cobra.Command {
	var token, since string
	c := &cobra.Command{
		Use:   "usage",
		Short: "Show the tokens the API's calls used, per API token, day and model, and the budgets",
		Long: `usage shows the tokens the OpenAI-compatible API's calls used (compat.usage.read), as
their providers counted them, per API token, UTC day, model and provider, with the
totals; then each token's daily token budget and what it used today (UTC). --since takes
a day, a time or a duration ago and keeps the UTC days from the one it falls on.`,
		Example: `  palyra compat usage
  palyra compat usage --token 01JD5ZJ8Q0W1X2Y3Z4A5B6C7D8 --since 30d -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := &compatv1.GetUsageRequest{}
			if token != "" {
				id, err := tokens.ParseID(token)
				if err != nil {
					return err
				}
				req.TokenId = id
			}
			day, err := ParseSince(since, d.Clock())
			if err != nil {
				return err
			}
			req.SinceDay = day
			c, err := d.Client()
			if err != nil {
				return err
			}
			res, err := c.Compat.GetUsage(cmd.Context(), connect.NewRequest(req))
			if err != nil {
				return err
			}
			return output.Print(d.Stdout, d.Output, res.Msg, func(w io.Writer) { usageTable(w, res.Msg) })
		},
	}
	c.Flags().StringVar(&token, "token", "", "show only this API token's usage")
	c.Flags().StringVar(&since, "since", "7d", "show the UTC days from this one on: a day, a time or a duration ago")
	return c
}

// usageTable writes the usage rows and their totals, then the tokens' budgets.
func usageTable(w io.Writer, u *compatv1.GetUsageResponse) {
	fmt.Fprintln(w, "DAY\tTOKEN\tMODEL\tPROVIDER\tREQUESTS\tPROMPT\tCOMPLETION\tTOTAL")
	for _, r := range u.GetRows() {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\n", r.GetDay(), r.GetTokenId(), output.Cell(r.GetModel()), output.Cell(r.GetProvider()),
			r.GetRequests(), r.GetPromptTokens(), r.GetCompletionTokens(), r.GetTotalTokens())
	}
	t := u.GetTotals()
	fmt.Fprintf(w, "TOTAL\t\t\t\t%d\t%d\t%d\t%d\n", t.GetRequests(), t.GetPromptTokens(), t.GetCompletionTokens(), t.GetTotalTokens())
	if len(u.GetTokens()) == 0 {
		return
	}
	fmt.Fprintln(w, "")
	fmt.Fprintf(w, "TOKEN\tLABEL\tDAILY BUDGET\tUSED TODAY (%s)\n", u.GetToday())
	for _, tu := range u.GetTokens() {
		budget := "none"
		if tu.DailyTokenBudget != nil {
			budget = fmt.Sprint(tu.GetDailyTokenBudget())
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%d\n", tu.GetTokenId(), output.Cell(tu.GetLabel()), budget, tu.GetSpentToday())
	}
}
