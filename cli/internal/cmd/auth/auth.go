// Package auth is `palyra auth`: logging in to palyrad and out of it, who you are,
// the profiles that remember servers and tokens, and the API tokens themselves
// (`palyra auth tokens`, from package tokens).
package auth

import (
	"github.com/spf13/cobra"

	"github.com/palyra/palyra/cli/internal/cmd/deps"
	"github.com/palyra/palyra/cli/internal/cmd/tokens"
)

// NewCommand returns `palyra auth` and its subcommands.
func NewCommand(d *deps.Deps) *cobra.Command {
	c := &cobra.Command{
		Use:   "auth",
		Short: "Log in to palyrad, show who you are, manage profiles and API tokens",
		Long: `auth logs in to palyrad with an API token and remembers the server, its pinned CA and
the token in a profile ($XDG_CONFIG_HOME/palyra/profiles.toml, mode 0600), so that
later commands need no flags. Select a profile with --profile or PALYRA_PROFILE;
PALYRA_TOKEN overrides the profile's token, for scripts.`,
		// Runnable, so that an unknown subcommand is an error rather than the help text.
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	c.AddCommand(
		newLoginCommand(d),
		newLogoutCommand(d),
		newWhoAmICommand(d),
		newProfilesCommand(d),
		tokens.NewCommand(d),
	)
	return c
}
