package auth

import (
	"fmt"
	"io"
	"strings"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	"github.com/palyra/palyra/cli/internal/cmd/deps"
	"github.com/palyra/palyra/cli/internal/output"
	accessv1 "github.com/palyra/palyra/gen/go/palyra/access/v1"
)

func newWhoAmICommand(d *deps.Deps) *cobra.Command {
	return &cobra.Command{
		Use:   "whoami",
		Short: "Show who the token authenticates: principal, user, role, expiry and permissions",
		Example: `  palyra auth whoami
  PALYRA_TOKEN=plr_... palyra auth whoami -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := d.Client()
			if err != nil {
				return err
			}
			res, err := c.Access.WhoAmI(cmd.Context(), connect.NewRequest(&accessv1.WhoAmIRequest{}))
			if err != nil {
				return err
			}
			return output.Print(d.Stdout, d.Output, res.Msg, func(w io.Writer) { whoAmITable(w, res.Msg.GetPrincipal()) })
		},
	}
}

func whoAmITable(w io.Writer, p *accessv1.Principal) {
	row := func(k, v string) { fmt.Fprintf(w, "%s\t%s\n", k, v) }
	row("Principal", p.GetId())
	row("User", output.Cell(p.GetUser()))
	row("Role", output.Enum(p.GetRole()))
	row("Token", output.Cell(p.GetTokenId()))
	row("Expires", output.Time(p.GetTokenExpireTime(), "never"))
	row("Method", strings.ReplaceAll(output.Enum(p.GetMethod()), "_", " "))
	if p.GetSessionId() != "" {
		row("Session", p.GetSessionId())
	}
	row("Permissions", output.List(p.GetPermissions()))
}
