// Package cmd assembles the palyra command tree. Each command lives in its own package
// under cmd/ with one constructor taking *deps.Deps.
package cmd

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/palyra/palyra/cli/internal/cmd/agents"
	"github.com/palyra/palyra/cli/internal/cmd/approvals"
	"github.com/palyra/palyra/cli/internal/cmd/audit"
	"github.com/palyra/palyra/cli/internal/cmd/auth"
	"github.com/palyra/palyra/cli/internal/cmd/browser"
	"github.com/palyra/palyra/cli/internal/cmd/compat"
	"github.com/palyra/palyra/cli/internal/cmd/config"
	"github.com/palyra/palyra/cli/internal/cmd/console"
	"github.com/palyra/palyra/cli/internal/cmd/deps"
	"github.com/palyra/palyra/cli/internal/cmd/dispatches"
	"github.com/palyra/palyra/cli/internal/cmd/flags"
	"github.com/palyra/palyra/cli/internal/cmd/masterkey"
	"github.com/palyra/palyra/cli/internal/cmd/node"
	"github.com/palyra/palyra/cli/internal/cmd/nodes"
	"github.com/palyra/palyra/cli/internal/cmd/pairing"
	"github.com/palyra/palyra/cli/internal/cmd/runs"
	"github.com/palyra/palyra/cli/internal/cmd/secrets"
	"github.com/palyra/palyra/cli/internal/cmd/status"
	"github.com/palyra/palyra/cli/internal/cmd/version"
	"github.com/palyra/palyra/cli/internal/output"
	"github.com/palyra/palyra/internal/cliusage"
)

// Exit codes of palyra.
const (
	// ExitOK is success.
	ExitOK = 0
	// ExitFailure is a failed call or failed work.
	ExitFailure = 1
	// ExitUsage is a mistake in the command line.
	ExitUsage = 2
	// ExitInterrupted is a command stopped by Ctrl-C or SIGTERM (128 + SIGINT, as shells
	// report it).
	ExitInterrupted = 130
)

// Execute runs palyra with args and the dependencies d, prints the error of a failed
// command on d.Stderr, and returns the exit code. ctx ends when the user interrupts;
// a command that fails after that exits with ExitInterrupted. A command that passes on
// an exit code of its own (palyra nodes invoke, that of a remote process) fails with
// an error that has an ExitCode method; palyra exits with that code and prints nothing.
func Execute(ctx context.Context, args []string, d *deps.Deps) int {
	root := NewRootCommand(d)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	var coded interface{ ExitCode() int }
	switch {
	case err == nil:
		return ExitOK
	case ctx.Err() == nil && errors.As(err, &coded):
		return coded.ExitCode()
	case ctx.Err() != nil:
		// A command that has more to say (what was left undone) says it in its own
		// error; a call cut short says only that its context ended.
		if errors.Is(err, context.Canceled) {
			err = errors.New("interrupted")
		}
		output.Fprintf(d.Stderr, "palyra: %v\n", err)
		return ExitInterrupted
	case cliusage.Is(err):
		output.Fprintf(d.Stderr, "palyra: %v\n", err)
		fmt.Fprintln(d.Stderr, "Run 'palyra --help' for usage.")
		return ExitUsage
	}
	// The error may hold a server's or a node's text (a dispatch's error, say).
	output.Fprintf(d.Stderr, "palyra: %v\n", err)
	return ExitFailure
}

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
		agents.NewCommand(d),
		approvals.NewCommand(d),
		auth.NewCommand(d),
		audit.NewCommand(d),
		browser.NewCommand(d),
		compat.NewCommand(d),
		config.NewCommand(d),
		console.NewCommand(d),
		dispatches.NewCommand(d),
		flags.NewCommand(d),
		masterkey.NewCommand(d),
		node.NewCommand(d),
		nodes.NewCommand(d),
		pairing.NewCommand(d),
		runs.NewCommand(d),
		secrets.NewCommand(d),
		status.NewCommand(d),
		version.NewCommand(d),
	)
	cliusage.Mark(root)
	return root
}
