// Package console is `palyra console`: it opens the browser console signed in, through a
// single-use hand-off link that carries no API token.
package console

import (
	"fmt"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	"github.com/palyra/palyra/cli/internal/cmd/deps"
	"github.com/palyra/palyra/cli/internal/output"
	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
)

// NewCommand returns `palyra console`.
func NewCommand(d *deps.Deps) *cobra.Command {
	var noBrowser bool
	cmd := &cobra.Command{
		Use:   "console",
		Short: "Open the browser console, signed in with your token",
		Long: `console mints a single-use sign-in link with your API token (SessionService.CreateHandoff)
and opens it in your browser with xdg-open. The link carries a code, never the token: it works
once and only within a minute, and opens a console session of its own (sign out there to end
it). The link is printed too, for a machine without a browser: open it elsewhere in time.
The browser must trust palyrad's CA (its fingerprint is in palyra status).`,
		Example: `  palyra console                   # after palyra auth login
  palyra console --no-browser      # only print the link`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := d.Client()
			if err != nil {
				return err
			}
			res, err := c.Sessions.CreateHandoff(cmd.Context(), connect.NewRequest(&controlplanev1.CreateHandoffRequest{}))
			if err != nil {
				return err
			}
			// The code goes in the fragment: browsers never send it to a server, in the
			// request or in a Referer.
			link := strings.TrimRight(c.URL, "/") + "/handoff#code=" + res.Msg.GetCode()
			expires := res.Msg.GetExpireTime().AsTime()
			output.Fprintf(d.Stderr, "Sign-in link for the console (works once, until %s):\n", expires.Local().Format(time.TimeOnly))
			fmt.Fprintln(d.Stdout, link)
			switch {
			case noBrowser:
			case d.OpenBrowser == nil:
				output.Fprintf(d.Stderr, "No browser to open here (xdg-open and a graphical session): open the link yourself.\n")
			default:
				if err := d.OpenBrowser(cmd.Context(), link); err != nil {
					output.Fprintf(d.Stderr, "Could not open the browser (%v): open the link yourself.\n", err)
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&noBrowser, "no-browser", false, "only print the link, do not open a browser")
	return cmd
}
