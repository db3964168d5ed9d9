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
	"time"

	"github.com/spf13/cobra"

	"github.com/palyra/palyra/internal/buildinfo"
	"github.com/palyra/palyra/internal/cliusage"
	"github.com/palyra/palyra/server/internal/access"
	"github.com/palyra/palyra/server/internal/config"
	"github.com/palyra/palyra/server/internal/daemon"
)

func main() {
	ctx, cancel := context.WithCancel(context.Background())
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, os.Interrupt, syscall.SIGTERM)
	go stopOnSignals(signals, cancel)
	os.Exit(run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

// stopOnSignals runs in its own goroutine for the life of the process. The first
// signal starts a graceful stop (cancel); a second one, during a stop that is taking
// too long, exits at once with status 1 and says so on stderr.
func stopOnSignals(signals <-chan os.Signal, cancel context.CancelFunc) {
	<-signals
	cancel()
	sig := <-signals
	fmt.Fprintf(os.Stderr, "palyrad: %v again: stopping at once, without finishing the graceful stop\n", sig)
	os.Exit(1)
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
	root.AddCommand(newMigrateCommand(getenv, stdout, stderr), newTokenCommand(getenv, stdout, stderr), newVersionCommand(stdout),
		newMasterKeyCommand(getenv, stdout, stderr))
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

func newTokenCommand(getenv func(string) string, stdout, stderr io.Writer) *cobra.Command {
	tok := &cobra.Command{
		Use:   "token",
		Short: "Create API tokens locally, without the API (recovery)",
	}
	var (
		role, label string
		scopes      []string
		expiresIn   time.Duration
		rateLimit   int
	)
	create := &cobra.Command{
		Use:   "create",
		Short: "Create an owner's API token directly in the database and print it",
		Long: `create makes an API token directly in the database, without calling palyrad: the way
back in when the bootstrap token is lost. It needs what palyrad needs to open its
database (the data directory of the embedded one, or --database-url), so only the
machine's administrators can run it. The token is printed once on stdout.`,
		Example: "  palyrad token create --data-dir ./var --role owner --label recovery --expires-in 24h",
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.Load(cmd.Flags(), getenv)
			if err != nil {
				return err
			}
			r, err := access.ParseRole(role)
			if err != nil {
				return cliusage.Wrap(fmt.Errorf("--role: %w", err))
			}
			p := access.CreateParams{Label: label, Role: r, RateLimit: rateLimit}
			for _, s := range scopes {
				if !access.Known(access.Permission(s)) {
					return cliusage.Wrap(fmt.Errorf("--scope: %q is not a permission in the catalog", s))
				}
				p.Scopes = append(p.Scopes, access.Permission(s))
			}
			if rateLimit < 0 || rateLimit > 100000 {
				return cliusage.Wrap(fmt.Errorf("--rate-limit must be between 1 and 100000 (0 for the default, %d)", access.DefaultRateLimit))
			}
			if expiresIn < 0 {
				return cliusage.Wrap(fmt.Errorf("--expires-in must be positive"))
			}
			if expiresIn > 0 {
				at := time.Now().Add(expiresIn)
				p.ExpiresAt = &at
			}
			t, secret, err := daemon.CreateLocalToken(cmd.Context(), cfg, daemon.NewLogger(cfg.Log, stderr), p)
			if err != nil {
				return err
			}
			fmt.Fprintln(stdout, secret)
			fmt.Fprintf(stderr, "created token %s (%s, %q); it is shown only this once\n", t.ID, t.Role, t.Label)
			return nil
		},
	}
	create.Flags().StringVar(&role, "role", string(access.Owner), "role of the token: owner, admin or operator")
	create.Flags().StringVar(&label, "label", "recovery", "what the token is for")
	create.Flags().StringArrayVar(&scopes, "scope", nil, "narrow the role to this permission (repeatable)")
	create.Flags().DurationVar(&expiresIn, "expires-in", 0, "lifetime of the token, e.g. 24h (default: no expiry)")
	create.Flags().IntVar(&rateLimit, "rate-limit", 0, "calls a minute (default 120)")
	tok.AddCommand(create)
	return tok
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
