// Command palyrad is the Palyra daemon: it manages paired nodes and serves the control
// plane, the node API, access control and the OpenAI-compatible API on one TLS listener,
// with its state in PostgreSQL.
//
// main is thin: flags and environment → config → daemon → exit code.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/palyra/palyra/internal/buildinfo"
	"github.com/palyra/palyra/internal/cliusage"
	"github.com/palyra/palyra/server/internal/config"
	"github.com/palyra/palyra/server/internal/daemon"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

// run executes palyrad with the given arguments and returns the exit code: 0 on a clean
// stop, 1 on failure, 2 on a usage error.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	root := newRootCommand(getenv, stdout, stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	switch {
	case err == nil:
		return 0
	case cliusage.Is(err):
		fmt.Fprintf(stderr, "palyrad: %v\nRun 'palyrad --help' for usage.\n", err)
		return 2
	default:
		fmt.Fprintf(stderr, "palyrad: %v\n", err)
		return 1
	}
}

func newRootCommand(getenv func(string) string, stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "palyrad",
		Short: "Palyra daemon: node pairing, dispatch and the control plane",
		Long: `palyrad runs the Palyra daemon. Without a database URL it starts a private PostgreSQL
cluster under <data_dir>/pg; on its first start it creates the internal CA and writes
its certificate to <data_dir>/ca.pem for clients.

Every setting can be given as a flag, as a PALYRA_* environment variable or in a TOML
file (--config); flags override the environment, which overrides the file, which
overrides the defaults. The flag help below names each setting's variable and file key.

Settings without a flag:
` + config.EnvironmentOnly(),
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.Load(cmd.Flags(), getenv)
			if err != nil {
				return err
			}
			log := daemon.NewLogger(cfg.Log, stderr)
			d, err := daemon.Start(cmd.Context(), cfg, log)
			if err != nil && cmd.Context().Err() != nil {
				// Interrupted while starting: Start has undone what it started.
				log.Info("palyrad interrupted while starting", "err", err)
				return nil
			}
			if err != nil {
				return err
			}
			var serveErr error
			select {
			case <-cmd.Context().Done():
			case serveErr = <-d.Failed():
			}
			return errors.Join(serveErr, d.Stop(context.Background()))
		},
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	config.RegisterFlags(root.PersistentFlags(), getenv)
	root.AddCommand(newMigrateCommand(getenv, stdout, stderr), newVersionCommand(stdout))
	cliusage.Mark(root)
	return root
}

func newMigrateCommand(getenv func(string) string, stdout, stderr io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "migrate",
		Short: "Apply pending database migrations and exit",
		Long: `migrate applies the pending migrations of the database schema and exits. palyrad
also does this at every start; run it on its own to migrate before rolling out replicas.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.Load(cmd.Flags(), getenv)
			if err != nil {
				return err
			}
			res, err := daemon.Migrate(cmd.Context(), cfg, daemon.NewLogger(cfg.Log, stderr))
			if err != nil {
				return err
			}
			if len(res.Applied) == 0 {
				fmt.Fprintf(stdout, "schema is current at version %d\n", res.Version)
				return nil
			}
			fmt.Fprintf(stdout, "applied migrations %v; schema is at version %d\n", res.Applied, res.Version)
			return nil
		},
	}
}

func newVersionCommand(stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version of palyrad",
		Args:  cobra.NoArgs,
		Run: func(*cobra.Command, []string) {
			fmt.Fprintln(stdout, "palyrad", buildinfo.Version())
		},
	}
}
