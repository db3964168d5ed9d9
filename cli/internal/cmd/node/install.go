package node

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/palyra/palyra/cli/internal/atomicfile"
	"github.com/palyra/palyra/cli/internal/cmd/deps"
	agent "github.com/palyra/palyra/cli/internal/node"
	"github.com/palyra/palyra/cli/internal/output"
	"github.com/palyra/palyra/internal/cliusage"
)

// unitName is the name of the node agent's systemd unit.
const unitName = "palyra-node.service"

// systemUnitDir is where administrators' system units live.
const systemUnitDir = "/etc/systemd/system"

// stopGrace is how much longer than the agent's drain timeout systemd waits for it to
// stop before it kills it: the agent's grace for the dispatches it cancels at the
// drain timeout (15s), its wait for the acknowledgement of their results and for the
// end of the stream (5s), and a margin.
const stopGrace = 30 * time.Second

// installFlags are the flags of `node install`.
type installFlags struct {
	user, force               bool
	stateDir, binary, unitDir string
}

func newInstallCommand(d *deps.Deps) *cobra.Command {
	var f installFlags
	c := &cobra.Command{
		Use:   "install",
		Short: "Write a systemd unit that runs the node agent (palyra-node.service)",
		Long: `install writes the systemd unit palyra-node.service, which runs palyra node run on the
state directory, restarts it when it fails, and stops it with SIGTERM so that it lets
running dispatches finish. Without --user it is a system unit in /etc/systemd/system
(run it as root); with --user a unit of your own systemd instance, in
$XDG_CONFIG_HOME/systemd/user.

It also writes the default node.toml into the state directory, unless there is one: edit
it to choose what the node may run. It never overwrites an existing node.toml, nor a
unit file that differs from the one it writes, without --force.

It does not call systemctl: it prints the commands that enable and start the unit.
Pair the node first (palyra node pair): an unpaired node's service fails.`,
		Example: `  sudo palyra node install --state-dir /var/lib/palyra/node
  palyra node install --user`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error { return install(d, f) },
	}
	c.Flags().BoolVar(&f.user, "user", false, "install a unit of your own systemd instance (systemctl --user) instead of a system unit")
	c.Flags().StringVar(&f.stateDir, "state-dir", "", stateDirFlag)
	c.Flags().StringVar(&f.binary, "binary", "", "the palyra binary the unit runs (default: this one)")
	c.Flags().StringVar(&f.unitDir, "unit-dir", "", "the directory of the unit file (default /etc/systemd/system, or $XDG_CONFIG_HOME/systemd/user with --user)")
	c.Flags().BoolVar(&f.force, "force", false, "replace a palyra-node.service that differs from the one install writes")
	return c
}

func install(d *deps.Deps, f installFlags) error {
	statePath, err := stateDirPath(d, f.stateDir)
	if err != nil {
		return err
	}
	if statePath, err = filepath.Abs(statePath); err != nil {
		return err
	}
	binary, err := palyraBinary(f.binary)
	if err != nil {
		return err
	}
	for _, p := range []string{statePath, binary} {
		if strings.ContainsAny(p, "\n\r") {
			return cliusage.Wrap(fmt.Errorf("%q: a path with a line break cannot go in a unit file", p))
		}
	}
	dir, err := unitDir(d, f.user, f.unitDir)
	if err != nil {
		return err
	}
	path := filepath.Join(dir, unitName)
	unit := unitFile(binary, statePath, f.user)
	old, err := os.ReadFile(path)
	switch {
	case err == nil && string(old) == unit:
		fmt.Fprintf(d.Stdout, "%s is up to date\n", path)
	case err == nil && !f.force:
		return fmt.Errorf("%s exists and differs from the unit install writes (ExecStart=%s); pass --force to replace it",
			path, execStart(binary, statePath))
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return unitDirError(err, f.user)
	default:
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return unitDirError(err, f.user)
		}
		if err := atomicfile.Write(path, []byte(unit), 0o644); err != nil {
			return unitDirError(fmt.Errorf("write %s: %w", path, err), f.user)
		}
		fmt.Fprintf(d.Stdout, "wrote %s\n  ExecStart=%s\n", path, execStart(binary, statePath))
	}

	state := agent.NewStateDir(statePath)
	config := state.File(agent.ConfigFile)
	created, err := writeDefaultConfig(config)
	if err != nil {
		return err
	}
	if created {
		fmt.Fprintf(d.Stdout, "wrote %s (mode 0600): until you allow executables ([shell] allow or [[shell.program]]) and directories "+
			"([filesystem] roots) there, shell.execute and filesystem.read refuse every request\n", config)
	} else {
		fmt.Fprintf(d.Stdout, "kept %s\n", config)
	}
	paired, err := state.Paired()
	if err != nil {
		return err
	}
	if !paired {
		fmt.Fprintf(d.Stderr, "WARNING: this node is not paired yet (no %s): the service would fail. Pair it first:\n"+
			"  palyra node pair --state-dir %s --url https://admin-host:7443 --pin ... --ca-fingerprint sha256:...\n",
			state.File(agent.CertFile), output.ShellQuote(statePath))
	}
	sc := systemctl(f.user)
	fmt.Fprintf(d.Stdout, "To start the node agent now and at every boot, run:\n  %s daemon-reload && %s enable --now %s\n", sc, sc, unitName)
	if f.user {
		fmt.Fprintf(d.Stdout, "To keep it running when you are not logged in (and start it at boot), run once:\n  loginctl enable-linger $USER\n")
	}
	journal := "journalctl"
	if f.user {
		journal += " --user"
	}
	fmt.Fprintf(d.Stdout, "Its log: %s -u %s -f\n", journal, unitName)
	return nil
}

// palyraBinary returns the absolute path of the binary the unit runs: flag when
// given, else the running one. It must be an executable file.
func palyraBinary(flag string) (string, error) {
	path, fromFlag := flag, flag != ""
	if !fromFlag {
		var err error
		if path, err = os.Executable(); err != nil {
			return "", fmt.Errorf("cannot locate the palyra binary (%v): pass --binary", err)
		}
	}
	path, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	info, err := os.Stat(path)
	if err == nil && (!info.Mode().IsRegular() || info.Mode().Perm()&0o111 == 0) {
		err = errors.New("not an executable file")
	}
	if err != nil {
		err = fmt.Errorf("the palyra binary %s: %w", path, err)
		if fromFlag {
			return "", cliusage.Wrap(fmt.Errorf("--binary: %w", err))
		}
		return "", err
	}
	return path, nil
}

// unitDir returns the directory of the unit file: flag when given, else systemd's
// directory of system units, or of the user's units with --user.
func unitDir(d *deps.Deps, user bool, flag string) (string, error) {
	switch {
	case flag != "":
		return filepath.Abs(flag)
	case !user:
		return systemUnitDir, nil
	}
	if dir := d.Getenv("XDG_CONFIG_HOME"); filepath.IsAbs(dir) {
		return filepath.Join(dir, "systemd", "user"), nil
	}
	if home := d.Getenv("HOME"); filepath.IsAbs(home) {
		return filepath.Join(home, ".config", "systemd", "user"), nil
	}
	return "", cliusage.Wrap(errors.New("cannot locate your systemd unit directory: set XDG_CONFIG_HOME or HOME, or pass --unit-dir"))
}

// unitDirError explains a failure to use the unit directory.
func unitDirError(err error, user bool) error {
	if errors.Is(err, fs.ErrPermission) && !user {
		return fmt.Errorf("%w: install the system unit as root (sudo palyra node install ...), or a unit of your own with --user", err)
	}
	return err
}

// systemctl returns the systemctl command for the unit.
func systemctl(user bool) string {
	if user {
		return "systemctl --user"
	}
	return "systemctl"
}

// unitFile returns the content of palyra-node.service.
func unitFile(binary, stateDir string, user bool) string {
	var b strings.Builder
	b.WriteString(`# palyra-node.service: the Palyra node agent, written by palyra node install.
# It attaches this machine to palyrad and runs the dispatches that node.toml in the
# state directory allows. palyra node status reports on it; palyra node uninstall
# removes this file.

[Unit]
Description=Palyra node agent
`)
	target := "default.target"
	if !user {
		// A user's systemd instance has no network-online.target.
		b.WriteString("Wants=network-online.target\nAfter=network-online.target\n")
		target = "multi-user.target"
	}
	fmt.Fprintf(&b, `
[Service]
Type=simple
ExecStart=%s
Restart=on-failure
RestartSec=5s
# Exit code 2 is a mistake in the command line, such as a node that is not paired:
# restarting does not help.
RestartPreventExitStatus=2
# SIGTERM goes to the agent alone, not to the programs it runs: it takes no more
# dispatches, lets the running ones finish for up to %s and cancels the rest.
# Whatever still runs after TimeoutStopSec is killed.
KillSignal=SIGTERM
KillMode=mixed
TimeoutStopSec=%d
NoNewPrivileges=yes
`, execStart(binary, stateDir), agent.DefaultDrainTimeout, int((agent.DefaultDrainTimeout+stopGrace)/time.Second))
	if !user {
		b.WriteString(`# Hardening that leaves the programs shell.execute runs their usual view of the
# system. Nodes whose allowed programs need less can add ProtectSystem=strict with
# ReadWritePaths=, ProtectHome=, PrivateTmp= or User= in a drop-in
# (systemctl edit palyra-node.service).
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
RestrictSUIDSGID=yes
RestrictRealtime=yes
LockPersonality=yes
SystemCallArchitectures=native
`)
	}
	fmt.Fprintf(&b, "\n[Install]\nWantedBy=%s\n", target)
	return b.String()
}

// execStart returns the command line of the unit.
func execStart(binary, stateDir string) string {
	return strings.Join([]string{unitArg(binary), "node", "run", "--state-dir", unitArg(stateDir)}, " ")
}

// unitArg writes s as one word of a unit's command line: "%" and "$" doubled (systemd
// would expand specifiers and variables), and in double quotes, with '\' and '"'
// escaped, when it holds blanks, quotes, backslashes or ';'. splitUnitArgs reverses it.
func unitArg(s string) string {
	s = strings.NewReplacer("%", "%%", "$", "$$").Replace(s)
	if !strings.ContainsAny(s, " \t\"'\\;") {
		return s
	}
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// splitUnitArgs splits a command line as unitArg writes its words.
func splitUnitArgs(line string) []string {
	var (
		args          []string
		word          strings.Builder
		inWord, quote bool
	)
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case quote && c == '\\' && i+1 < len(line):
			i++
			word.WriteByte(line[i])
		case c == '"':
			quote, inWord = !quote, true
		case !quote && (c == ' ' || c == '\t'):
			if inWord {
				args = append(args, word.String())
				word.Reset()
				inWord = false
			}
		default:
			word.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		args = append(args, word.String())
	}
	unescape := strings.NewReplacer("%%", "%", "$$", "$")
	for i, a := range args {
		args[i] = unescape.Replace(a)
	}
	return args
}

// unitStateDir returns the --state-dir of a unit's ExecStart; "" when it has none.
func unitStateDir(unit string) string {
	for _, line := range strings.Split(unit, "\n") {
		cmd, ok := strings.CutPrefix(strings.TrimSpace(line), "ExecStart=")
		if !ok {
			continue
		}
		args := splitUnitArgs(cmd)
		for i, a := range args {
			if v, ok := strings.CutPrefix(a, "--state-dir="); ok {
				return v
			}
			if a == "--state-dir" && i+1 < len(args) {
				return args[i+1]
			}
		}
	}
	return ""
}
