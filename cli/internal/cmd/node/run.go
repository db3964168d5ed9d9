package node

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/palyra/palyra/cli/internal/cmd/deps"
	"github.com/palyra/palyra/cli/internal/cmd/pairing"
	agent "github.com/palyra/palyra/cli/internal/node"
	"github.com/palyra/palyra/cli/internal/node/capability"
	"github.com/palyra/palyra/internal/cliusage"
)

// runFlags are the flags of `node run`: those of pair (without --force), and the
// agent's.
type runFlags struct {
	pairFlags
	labels   []string
	logLevel string
}

func newRunCommand(d *deps.Deps) *cobra.Command {
	var f runFlags
	c := &cobra.Command{
		Use:   "run",
		Short: "Run the node agent: attach to palyrad and run its dispatches, pairing first if needed",
		Long: fmt.Sprintf(`run runs the node agent until it receives SIGINT (Ctrl-C) or SIGTERM. It attaches to
palyrad over mutual TLS with the node's certificate, announces the node's capabilities
and labels, runs the dispatches it receives, keeps their results on disk until palyrad
acknowledges them, and renews the certificate before it expires. It reconnects with
backoff when the connection breaks. On SIGINT or SIGTERM it takes no more dispatches,
lets the running ones finish for %s (cancelling them then), sends their results and
exits 0. A second SIGINT or SIGTERM exits at once, with 130.

A node that is not paired yet pairs first, exactly as palyra node pair does: give it a
pairing code (--pin with --url and --ca-fingerprint or --ca-file, or --qr-uri). A
pending pairing request is resumed. A paired node ignores the pairing flags.

What the capabilities may do is configured in node.toml in the state directory;
without one, run writes a commented template (mode 0600) there first. SIGHUP makes
the agent read node.toml again and announce the capabilities it configures. Until it allows
executables ([shell] allow, or a [[shell.program]] table with the arguments each may take)
and directories ([filesystem] roots), shell.execute and filesystem.read refuse every
request; system.info always works. A program that can run other programs (find, make,
sed, env, an interpreter, a shell, ...) is refused unless its [[shell.program]] table
lists literal argument lists and pins where it runs (work_dirs), or marks it unsafe:
the template says why.

The log goes to stderr, in logfmt (key=value) lines; --log-level chooses how much.
Neither the pairing code nor any key is ever logged.`, agent.DefaultDrainTimeout),
		Example: `  palyra node run --url https://admin-host:7443 --pin 48213907 --ca-fingerprint sha256:...
  palyra node run                                   # a paired node, default state directory
  palyra node run --state-dir /var/lib/palyra/node --label region=eu-west --log-level debug`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runAgent(cmd.Context(), d, f) },
	}
	bindPairFlags(c, &f.pairFlags)
	c.Flags().StringArrayVar(&f.labels, "label", nil, "a label key=value that describes the node to palyrad, e.g. region=eu-west (repeatable)")
	c.Flags().StringVar(&f.logLevel, "log-level", "info", "the least severe log messages written on stderr: debug, info, warn or error")
	return c
}

// runAgent runs `palyra node run`: it pairs the node if needed, loads its
// capabilities and runs the agent until ctx ends (SIGINT or SIGTERM, see cli/main.go).
func runAgent(ctx context.Context, d *deps.Deps, f runFlags) error {
	level, err := parseLogLevel(f.logLevel)
	if err != nil {
		return err
	}
	labels, err := pairing.ParseLabels(f.labels)
	if err != nil {
		return err
	}
	dirPath, err := stateDirPath(d, f.stateDir)
	if err != nil {
		return err
	}
	dir := agent.NewStateDir(dirPath)
	paired, err := dir.Paired()
	if err != nil {
		return err
	}
	if paired {
		if f.pin != "" || f.qrURI != "" {
			fmt.Fprintln(d.Stderr, "this node is paired already: the pairing code given is not used (palyra node pair --force pairs again)")
		}
	} else {
		res, err := pairNode(ctx, d, f.pairFlags, "run")
		if err != nil {
			return err
		}
		printPaired(d.Stderr, res)
	}
	log := slog.New(slog.NewTextHandler(d.Stderr, &slog.HandlerOptions{Level: level}))
	reg, err := loadCapabilities(dir, log)
	if err != nil {
		return err
	}
	a, err := agent.NewAgent(agent.AgentOptions{Dir: dir, Registry: reg, Labels: labels, Log: log, Now: d.Now})
	if err != nil {
		return err
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	go reloadOnHangup(runCtx, hup, dir, a, log)
	return a.Run(runCtx)
}

// reloadOnHangup reads node.toml again at each SIGHUP and gives the agent the
// capabilities it configures; a node.toml with errors is logged and changes nothing.
func reloadOnHangup(ctx context.Context, hup <-chan os.Signal, dir *agent.StateDir, a *agent.Agent, log *slog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		reg, err := loadCapabilities(dir, log)
		if err != nil {
			log.Error("SIGHUP: cannot reload the node configuration; the capabilities stay as they were", "err", err)
			continue
		}
		a.SetRegistry(reg)
	}
}

// parseLogLevel parses --log-level.
func parseLogLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, cliusage.Wrap(fmt.Errorf("--log-level %q: use debug, info, warn or error", s))
}

// configSettings name, for each built-in capability that needs one, the node.toml
// setting that makes it available.
var configSettings = map[string]string{
	"shell.execute":      "[shell] allow or [[shell.program]]",
	"filesystem.read":    "[filesystem] roots",
	"llm.chat":           "[llm] base_url and models",
	"llm.embed":          "[llm] base_url and embedding_models",
	"browser.navigate":   "[browser] enabled",
	"browser.screenshot": "[browser] enabled",
}

// loadCapabilities returns the registry of the built-in capabilities configured by
// node.toml in the state directory. A missing node.toml is first written from the
// template, for the operator to edit. Each capability that refuses everything until
// configured is logged as a warning.
func loadCapabilities(dir *agent.StateDir, log *slog.Logger) (*capability.Registry, error) {
	path := dir.File(agent.ConfigFile)
	created, err := writeDefaultConfig(path)
	if err != nil {
		return nil, err
	}
	if created {
		log.Info("wrote the default node configuration: edit it to choose what this node may run, then restart the agent", "config", path)
	}
	cfg, err := capability.LoadConfig(path)
	if err != nil {
		return nil, err
	}
	reg, err := capability.NewRegistry(capability.Builtin(cfg, log)...)
	if err != nil {
		return nil, err
	}
	for _, c := range reg.Descriptors() {
		if setting, ok := configSettings[c.Name]; ok && !c.Available {
			log.Warn("capability unavailable: it refuses every request until node.toml configures it",
				"capability", c.Name, "setting", setting, "config", path)
		}
	}
	return reg, nil
}

// writeDefaultConfig writes the node.toml template at path (mode 0600) unless a file
// is there already; created says whether it wrote it.
func writeDefaultConfig(path string) (created bool, err error) {
	err = capability.WriteDefaultConfig(path)
	if errors.Is(err, fs.ErrExist) {
		return false, nil
	}
	return err == nil, err
}
