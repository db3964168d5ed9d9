package node

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/palyra/palyra/cli/internal/cmd/deps"
	agent "github.com/palyra/palyra/cli/internal/node"
	"github.com/palyra/palyra/internal/cliusage"
)

// uninstallFlags are the flags of `node uninstall`.
type uninstallFlags struct {
	user, purge       bool
	unitDir, stateDir string
}

// stateMarkers are files of which a node state directory holds at least one; --purge
// removes no directory without.
var stateMarkers = []string{agent.KeyFile, agent.HostFile, agent.CertFile, agent.ConfigFile}

func newUninstallCommand(d *deps.Deps) *cobra.Command {
	var f uninstallFlags
	c := &cobra.Command{
		Use:   "uninstall",
		Short: "Remove the systemd unit of the node agent, and with --purge the node's state",
		Long: `uninstall removes the unit file palyra-node.service that palyra node install wrote (the
system unit, or yours with --user). It does not call systemctl: disable and stop the
unit first (it refuses while the unit is enabled), and run systemctl daemon-reload
after.

--purge also removes the node's state directory, the one the unit runs on (or
--state-dir): its key, certificate, node.toml and unacknowledged results. It refuses
while an agent runs on it, and to remove a directory that holds none of key.pem,
node-host.json, cert.pem and node.toml. The device stays registered in palyrad until an
administrator revokes it (palyra nodes revoke).`,
		Example: `  sudo systemctl disable --now palyra-node.service && sudo palyra node uninstall
  palyra node uninstall --user --purge`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error { return uninstall(d, f) },
	}
	c.Flags().BoolVar(&f.user, "user", false, "remove the unit of your own systemd instance (systemctl --user) instead of the system unit")
	c.Flags().StringVar(&f.unitDir, "unit-dir", "", "the directory of the unit file (default /etc/systemd/system, or $XDG_CONFIG_HOME/systemd/user with --user)")
	c.Flags().BoolVar(&f.purge, "purge", false, "also remove the node's state directory: its key, certificate, node.toml and spooled results")
	c.Flags().StringVar(&f.stateDir, "state-dir", "", "with --purge, the state directory to remove (default: the one the unit runs on)")
	return c
}

func uninstall(d *deps.Deps, f uninstallFlags) error {
	if f.stateDir != "" && !f.purge {
		return cliusage.Wrap(errors.New("--state-dir goes with --purge"))
	}
	dir, err := unitDir(d, f.user, f.unitDir)
	if err != nil {
		return err
	}
	path := filepath.Join(dir, unitName)
	sc := systemctl(f.user)
	unit, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		other := "a unit of your own? pass --user"
		if f.user {
			other = "the system unit? run without --user, as root"
		}
		return fmt.Errorf("there is no %s in %s: nothing to uninstall (%s)", unitName, dir, other)
	}
	if err != nil {
		return unitDirError(err, f.user)
	}
	for _, target := range []string{"multi-user.target", "default.target"} {
		if _, err := os.Lstat(filepath.Join(dir, target+".wants", unitName)); err == nil {
			return fmt.Errorf("%s is enabled: run `%s disable --now %s` first, then uninstall again", unitName, sc, unitName)
		}
	}
	var state *agent.StateDir
	if f.purge {
		if state, err = purgeTarget(f.stateDir, path, string(unit)); err != nil {
			return err
		}
	}
	if err := os.Remove(path); err != nil {
		return unitDirError(err, f.user)
	}
	fmt.Fprintf(d.Stdout, "removed %s\n", path)
	if state != nil {
		host, _ := state.Host() // only for the advice below
		if err := os.RemoveAll(state.Path()); err != nil {
			return fmt.Errorf("remove the node's state directory: %w", err)
		}
		fmt.Fprintf(d.Stdout, "removed the node's state directory %s\n", state.Path())
		if host != nil && host.DeviceID != "" {
			fmt.Fprintf(d.Stdout, "palyrad still knows this node as device %s: have an administrator revoke it:\n"+
				"  palyra nodes revoke %s --reason decommissioned\n", host.DeviceID, host.DeviceID)
		}
	}
	fmt.Fprintf(d.Stdout, "Now run:\n  %s daemon-reload\n(and `%s stop %s` first if it still runs)\n", sc, sc, unitName)
	return nil
}

// purgeTarget returns the state directory that --purge removes: flag, else the one in
// the unit at unitPath. It refuses a missing directory, one that does not look like a
// node's, and one that an agent runs on.
func purgeTarget(flag, unitPath, unit string) (*agent.StateDir, error) {
	path := flag
	if path == "" {
		if path = unitStateDir(unit); path == "" {
			return nil, cliusage.Wrap(fmt.Errorf("%s names no --state-dir: pass the state directory to purge with --state-dir", unitPath))
		}
	}
	path, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("there is no node state directory %s to purge", path)
	}
	dir := agent.NewStateDir(path)
	looksLike := false
	for _, name := range stateMarkers {
		if info, err := os.Lstat(dir.File(name)); err == nil && info.Mode().IsRegular() {
			looksLike = true
		}
	}
	if !looksLike {
		return nil, fmt.Errorf("%s does not look like a node state directory (it holds none of %v): not removing it", path, stateMarkers)
	}
	running, err := dir.AgentStatus()
	if err != nil {
		return nil, err
	}
	if running != nil {
		return nil, fmt.Errorf("a node agent runs on %s (pid %d): stop it first", path, running.PID)
	}
	return dir, nil
}
