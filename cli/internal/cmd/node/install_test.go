package node_test

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/palyra/palyra/cli/internal/cmd/cmdtest"
	agent "github.com/palyra/palyra/cli/internal/node"
)

const unitName = "palyra-node.service"

// readFile returns a file's content.
func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// writeFile writes a file, mode 0600.
func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestNodeInstall writes user and system units, and checks their content, the
// node.toml written beside, the advice printed, and that neither a changed unit (without
// --force) nor node.toml is overwritten.
func TestNodeInstall(t *testing.T) {
	t.Parallel()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		user, paired bool
		binary       string // --binary below the test's directory; empty: the running binary
		want         []string
		absent       []string
		stdout       []string
	}{
		"user": {
			user:   true,
			want:   []string{"ExecStart=" + self + " node run --state-dir ", "WantedBy=default.target", "NoNewPrivileges=yes"},
			absent: []string{"network-online.target", "multi-user.target", "ProtectKernelModules"},
			stdout: []string{
				"systemctl --user daemon-reload && systemctl --user enable --now palyra-node.service",
				"loginctl enable-linger $USER", "journalctl --user -u palyra-node.service -f",
			},
		},
		"system": {
			paired: true, binary: "my bin/palyra",
			want: []string{
				"WantedBy=multi-user.target", "After=network-online.target", "Wants=network-online.target",
				"NoNewPrivileges=yes", "ProtectKernelModules=yes", "ProtectControlGroups=yes",
			},
			absent: []string{"default.target", "\nProtectSystem=", "\nProtectHome=", "\nPrivateTmp=", "\nUser="},
			stdout: []string{"systemctl daemon-reload && systemctl enable --now palyra-node.service", "journalctl -u palyra-node.service -f"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			tmp := t.TempDir()
			state := filepath.Join(tmp, "state")
			env := map[string]string{"HOME": filepath.Join(tmp, "home"), "XDG_CONFIG_HOME": filepath.Join(tmp, "config")}
			// The state directory is given unclean; the unit names it absolute and clean.
			args := []string{"node", "install", "--state-dir", filepath.Join(tmp, "x", "..", "state")}
			unitDir := filepath.Join(tmp, "config", "systemd", "user")
			if tc.user {
				args = append(args, "--user")
			} else {
				unitDir = filepath.Join(tmp, "units")
				args = append(args, "--unit-dir", unitDir)
			}
			binary := self
			if tc.binary != "" {
				binary = filepath.Join(tmp, tc.binary)
				if err := os.MkdirAll(filepath.Dir(binary), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(binary, []byte("#!/bin/sh\n"), 0o755); err != nil {
					t.Fatal(err)
				}
				args = append(args, "--binary", binary)
			}
			if tc.paired {
				writePaired(t, state, cmdtest.Now.Add(20*time.Hour))
			}

			res := cmdtest.Run(t.Context(), env, args...)
			if res.Code != 0 {
				t.Fatalf("exit %d:\n%s", res.Code, res.Stderr)
			}
			path := filepath.Join(unitDir, unitName)
			unit := readFile(t, path)
			execStart := "ExecStart=" + binary + " node run --state-dir " + state + "\n"
			if tc.binary != "" {
				execStart = `ExecStart="` + binary + `" node run --state-dir ` + state + "\n"
			}
			common := []string{
				execStart, "Restart=on-failure", "RestartPreventExitStatus=2", "KillSignal=SIGTERM", "KillMode=mixed", "TimeoutStopSec=60\n",
				"[Unit]\nDescription=Palyra node agent\n",
			}
			for _, want := range append(common, tc.want...) {
				if !strings.Contains(unit, want) {
					t.Errorf("the unit lacks %q:\n%s", want, unit)
				}
			}
			for _, absent := range tc.absent {
				if strings.Contains(unit, absent) {
					t.Errorf("the unit has %q:\n%s", absent, unit)
				}
			}
			cmdtest.WantOutput(t, "stdout", res.Stdout, append(tc.stdout, "wrote "+path, "wrote "+filepath.Join(state, agent.ConfigFile)+" (mode 0600)")...)
			if warned := strings.Contains(res.Stderr, "WARNING: this node is not paired yet"); warned == tc.paired {
				t.Errorf("paired %v, stderr:\n%s", tc.paired, res.Stderr)
			}
			if !tc.paired {
				cmdtest.WantOutput(t, "stderr", res.Stderr, "palyra node pair --state-dir "+state)
			}
			config := filepath.Join(state, agent.ConfigFile)
			if runtime.GOOS != "windows" && fileMode(t, config) != 0o600 {
				t.Errorf("node.toml has mode %v, want 0600", fileMode(t, config))
			}
			if !strings.Contains(readFile(t, config), "# allow = [") {
				t.Errorf("node.toml is not the template:\n%s", readFile(t, config))
			}

			// Again: nothing changes.
			res = cmdtest.Run(t.Context(), env, args...)
			if res.Code != 0 || !strings.Contains(res.Stdout, path+" is up to date") || !strings.Contains(res.Stdout, "kept "+config) {
				t.Errorf("installing again: exit %d:\n%s%s", res.Code, res.Stdout, res.Stderr)
			}

			// A changed unit is kept without --force, replaced with it; node.toml never.
			writeFile(t, path, unit+"Environment=X=1\n")
			writeFile(t, config, "# mine\n")
			res = cmdtest.Run(t.Context(), env, args...)
			if res.Code != 1 || !strings.Contains(res.Stderr, path+" exists and differs") || !strings.Contains(res.Stderr, "--force") {
				t.Errorf("a changed unit: exit %d:\n%s", res.Code, res.Stderr)
			}
			if readFile(t, path) != unit+"Environment=X=1\n" {
				t.Error("a changed unit was overwritten without --force")
			}
			res = cmdtest.Run(t.Context(), env, append(args, "--force")...)
			if res.Code != 0 || readFile(t, path) != unit {
				t.Errorf("--force: exit %d, unit:\n%s\n%s", res.Code, readFile(t, path), res.Stderr)
			}
			if readFile(t, config) != "# mine\n" {
				t.Error("install overwrote node.toml")
			}
		})
	}
}

// TestNodeInstallArguments checks the mistakes install refuses before it writes.
func TestNodeInstallArguments(t *testing.T) {
	t.Parallel()
	tmp := t.TempDir()
	units := filepath.Join(tmp, "units")
	home := map[string]string{"HOME": filepath.Join(tmp, "home")}
	tests := map[string]struct {
		env  map[string]string
		args []string
		want string
		code int
	}{
		"missing binary":  {env: home, args: []string{"--binary", filepath.Join(tmp, "none")}, want: "--binary: the palyra binary", code: 2},
		"binary is a dir": {env: home, args: []string{"--binary", tmp}, want: "not an executable file", code: 2},
		"no user dir":     {env: map[string]string{"XDG_STATE_HOME": tmp}, args: []string{"--user"}, want: "set XDG_CONFIG_HOME or HOME, or pass --unit-dir", code: 2},
		"no state dir":    {args: []string{"--unit-dir", units}, want: "set XDG_STATE_HOME or HOME, or pass --state-dir", code: 2},
	}
	for name, tc := range tests {
		res := cmdtest.Run(t.Context(), tc.env, append([]string{"node", "install"}, tc.args...)...)
		if res.Code != tc.code || !strings.Contains(res.Stderr, tc.want) {
			t.Errorf("%s: exit %d, want %d and %q:\n%s", name, res.Code, tc.code, tc.want, res.Stderr)
		}
	}
	if _, err := os.Stat(units); err == nil {
		t.Error("a refused install wrote the unit directory")
	}
}

// TestNodeUninstall removes units, refusing while the unit is enabled, and purges the
// state directory only when it is a node's and no agent runs on it.
func TestNodeUninstall(t *testing.T) {
	t.Parallel()
	tmp := t.TempDir()
	units := filepath.Join(tmp, "units")
	// A state directory whose name systemd would expand unless escaped.
	state := filepath.Join(tmp, "state 100% $HOME")
	writePaired(t, state, cmdtest.Now.Add(20*time.Hour))
	env := map[string]string{"HOME": filepath.Join(tmp, "home")}
	run := func(args ...string) cmdtest.Result {
		return cmdtest.Run(t.Context(), env, append([]string{"node"}, args...)...)
	}

	res := run("uninstall", "--unit-dir", units)
	if res.Code != 1 || !strings.Contains(res.Stderr, "there is no palyra-node.service in "+units+": nothing to uninstall (a unit of your own? pass --user)") {
		t.Errorf("no unit: exit %d:\n%s", res.Code, res.Stderr)
	}
	if res := run("uninstall", "--unit-dir", units, "--state-dir", state); res.Code != 2 {
		t.Errorf("--state-dir without --purge: exit %d:\n%s", res.Code, res.Stderr)
	}
	if res := run("install", "--unit-dir", units, "--state-dir", state); res.Code != 0 {
		t.Fatalf("install: exit %d:\n%s", res.Code, res.Stderr)
	}
	unit := filepath.Join(units, unitName)

	// Enabled: disable it first.
	wants := filepath.Join(units, "multi-user.target.wants")
	if err := os.MkdirAll(wants, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(unit, filepath.Join(wants, unitName)); err != nil {
		t.Fatal(err)
	}
	res = run("uninstall", "--unit-dir", units)
	if res.Code != 1 || !strings.Contains(res.Stderr, "is enabled: run `systemctl disable --now palyra-node.service` first") {
		t.Errorf("enabled: exit %d:\n%s", res.Code, res.Stderr)
	}
	if err := os.RemoveAll(wants); err != nil {
		t.Fatal(err)
	}

	// An agent runs on the state directory: --purge leaves everything in place.
	writeAgent(t, state, agent.AgentStatus{PID: os.Getpid()})
	res = run("uninstall", "--unit-dir", units, "--purge")
	if res.Code != 1 || !strings.Contains(res.Stderr, "a node agent runs on "+state) {
		t.Errorf("purge while an agent runs: exit %d:\n%s", res.Code, res.Stderr)
	}
	if err := os.Remove(filepath.Join(state, agent.StatusFile)); err != nil {
		t.Fatal(err)
	}
	// A directory that is not a node's is not removed.
	other := t.TempDir()
	writeFile(t, filepath.Join(other, "notes.txt"), "keep me")
	res = run("uninstall", "--unit-dir", units, "--purge", "--state-dir", other)
	if res.Code != 1 || !strings.Contains(res.Stderr, "does not look like a node state directory") {
		t.Errorf("purge of another directory: exit %d:\n%s", res.Code, res.Stderr)
	}
	for _, path := range []string{unit, state, filepath.Join(other, "notes.txt")} {
		if _, err := os.Stat(path); err != nil {
			t.Errorf("a refused uninstall removed %s", path)
		}
	}

	// The state directory comes from the unit's ExecStart.
	res = run("uninstall", "--unit-dir", units, "--purge")
	if res.Code != 0 {
		t.Fatalf("purge: exit %d:\n%s", res.Code, res.Stderr)
	}
	cmdtest.WantOutput(t, "stdout", res.Stdout, "removed "+unit, "removed the node's state directory "+state,
		"palyra nodes revoke "+stateDevice, "systemctl daemon-reload", "systemctl stop palyra-node.service")
	for _, path := range []string{unit, state} {
		if _, err := os.Stat(path); err == nil {
			t.Errorf("%s is still there", path)
		}
	}

	// A user unit, without --purge: the state stays.
	writePaired(t, state, cmdtest.Now.Add(20*time.Hour))
	if res := run("install", "--user", "--unit-dir", units, "--state-dir", state); res.Code != 0 {
		t.Fatalf("install --user: exit %d:\n%s", res.Code, res.Stderr)
	}
	res = run("uninstall", "--user", "--unit-dir", units)
	if res.Code != 0 || !strings.Contains(res.Stdout, "systemctl --user daemon-reload") {
		t.Errorf("uninstall --user: exit %d:\n%s%s", res.Code, res.Stdout, res.Stderr)
	}
	if _, err := os.Stat(filepath.Join(state, agent.KeyFile)); err != nil {
		t.Error("uninstall without --purge removed the state")
	}
}
