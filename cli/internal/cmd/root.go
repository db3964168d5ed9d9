// Package cmd assembles the palyra command tree. Each command lives in its own package
// under cmd/ with one constructor taking *deps.Deps.
package cmd

import (
	"github.com/spf13/cobra"

	"github.com/palyra/palyra/cli/internal/cmd/audit"
	"github.com/palyra/palyra/cli/internal/cmd/auth"
	"github.com/palyra/palyra/cli/internal/cmd/deps"
	"github.com/palyra/palyra/cli/internal/cmd/flags"
	"github.com/palyra/palyra/cli/internal/cmd/status"
	"github.com/palyra/palyra/cli/internal/cmd/version"
	"github.com/palyra/palyra/internal/cliusage"
)

// NewRootCommand returns `palyra` with every subcommand.
func NewRootCommand(d *deps.Deps) *cobra.Command {
	root := &cobra.Command{
		Use:   "palyra",
		Short: "Palyra CLI: administer palyrad, and run a node",
		Long: `palyra is the command-line client of palyrad: it administers the daemon (status,
pairing, nodes, dispatch, access) and runs the node agent on machines that palyrad
manages.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		// Runnable, so that an unknown subcommand is an error rather than the help text.
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	root.SetOut(d.Stdout)
	root.SetErr(d.Stderr)
	d.BindGlobalFlags(root.PersistentFlags())
	root.AddCommand(
		auth.NewCommand(d),
		audit.NewCommand(d),
		flags.NewCommand(d),
		status.NewCommand(d),
		version.NewCommand(d),
	)
	cliusage.Mark(root)
	return root
}
