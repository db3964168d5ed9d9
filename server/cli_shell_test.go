package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/palyra/palyra/internal/eventually"
	"github.com/palyra/palyra/server/internal/store/storetest"
)

// TestCLIShellRules is issue 10's shell escape through a real palyrad and a real node
// agent: an operator (the lowest role) asks a node whose allow-list holds find, make and
// sed for a shell (find -exec, make -f - with a makefile on stdin, sed's e command).
// Each dispatch fails with the node's reason, which `palyra nodes invoke --follow`
// prints; then node.toml gives the three argument rules and SIGHUP applies them: what
// the rules list runs, the exploits are still refused, each with its reason. Last, the
// working directory: make with a literal rule but no pinned directory is refused rather
// than run on a makefile an attacker planted where the request points; pinned, a
// request naming another directory is refused with its reason, and the pinned one works.
func TestCLIShellRules(t *testing.T) {
	t.Parallel()
	for _, p := range []string{"/usr/bin/find", "/usr/bin/make", "/usr/bin/sed"} {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("%s: %v", p, err)
		}
	}
	dir := t.TempDir()
	d := startDaemon(t, nil, "--listen", "127.0.0.1:0", "--data-dir", dir, "--database-url", storetest.URL(t))
	admin := newCLIUser(t).with("PALYRA_TOKEN", bootstrapToken(t, dir), "PALYRA_URL", "https://"+d.addr,
		"PALYRA_CA_FILE", filepath.Join(dir, "ca.pem"))
	var created struct {
		Secret string `json:"secret"`
	}
	decode(t, admin.ok(t, "auth", "tokens", "create", "--label", "ops", "--role", "operator", "-o", "json"), &created)
	operator := admin.with("PALYRA_TOKEN", created.Secret)

	stateDir, work := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(work, "Makefile"), []byte("all:\n\t@echo built\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(work, "a.log"), []byte("first line\nsecond line\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	node := startNodeAgent(t, admin, "https://"+d.addr, caFingerprint(t, dir), stateDir)
	id := node.deviceID
	marker := filepath.Join(t.TempDir(), "marker")
	invoke := func(argv []string, stdin string) []string {
		in, err := json.Marshal(map[string]any{"argv": argv, "stdin": stdin})
		if err != nil {
			t.Fatal(err)
		}
		return []string{"nodes", "invoke", id, "shell.execute", "--follow", "--input", string(in)}
	}
	exploits := []struct {
		name  string
		argv  []string
		stdin string
	}{
		{"find -exec", []string{"find", work, "-maxdepth", "0", "-exec", "/bin/sh", "-c", "echo pwned > " + marker, ";"}, ""},
		{"make -f - with stdin", []string{"make", "-f", "-"}, "all:\n\techo pwned > " + marker + "\n"},
		{"sed e", []string{"sed", "-n", "1e echo pwned > " + marker, filepath.Join(work, "a.log")}, ""},
	}
	refused := func(step string, want map[string]string) {
		t.Helper()
		for _, x := range exploits {
			stderr := operator.fails(t, 1, invoke(x.argv, x.stdin)...)
			if !strings.Contains(stderr, "failed: shell.execute: ") || !strings.Contains(stderr, want[x.name]) {
				t.Errorf("%s: %s: stderr %q does not give the reason %q", step, x.name, stderr, want[x.name])
			}
			if _, err := os.Stat(marker); err == nil {
				t.Fatalf("%s: %s ran a shell on the node", step, x.name)
			}
		}
	}

	// The allow-list of the issue: the node refuses each program, saying why.
	writeRawNodeConfig(t, stateDir, `[shell]
allow = ["echo", "find", "make", "sed"]
`)
	if err := node.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually.NoError(t, "the allow-list reloaded", func() error {
		if code, _, stderr := operator.run(t, "", invoke([]string{"echo", "reloaded"}, "")...); code != 0 {
			return fmt.Errorf("exit code %d: %s", code, stderr)
		}
		return nil
	})
	refused("find, make and sed in the allow-list", map[string]string{
		"find -exec":           "/usr/bin/find is not allowed on this node: find can run other programs (-exec",
		"make -f - with stdin": "/usr/bin/make is not allowed on this node: make can run other programs",
		"sed e":                "/usr/bin/sed is not allowed on this node: sed can run other programs (its e command",
	})

	// Argument rules, applied by SIGHUP: what they list runs.
	writeRawNodeConfig(t, stateDir, `[shell]
allow = ["echo"]

[[shell.program]]
path = "find"
args = [["`+work+`", "-name", "*.log"]]
work_dirs = ["`+work+`"]

[[shell.program]]
path = "make"
args = [["-C", "`+work+`"]]
work_dirs = ["`+work+`"]

[[shell.program]]
path = "sed"
args = [["-n", "1p", "`+filepath.Join(work, "a.log")+`"]]
work_dirs = ["`+work+`"]
`)
	if err := node.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually.NoError(t, "the rules reloaded", func() error {
		if code, _, stderr := operator.run(t, "", invoke([]string{"find", work, "-name", "*.log"}, "")...); code != 0 {
			return fmt.Errorf("exit code %d: %s", code, stderr)
		}
		return nil
	})
	for _, tc := range []struct {
		argv []string
		want string
	}{
		{[]string{"find", work, "-name", "*.log"}, filepath.Join(work, "a.log") + "\n"},
		{[]string{"make", "-C", work}, "built\n"},
		{[]string{"sed", "-n", "1p", filepath.Join(work, "a.log")}, "first line\n"},
	} {
		if out := operator.ok(t, invoke(tc.argv, "")...); !strings.Contains(out, tc.want) {
			t.Errorf("%v printed %q, want %q", tc.argv, out, tc.want)
		}
	}
	refused("find, make and sed with argument rules", map[string]string{
		"find -exec":           "these arguments of /usr/bin/find are not allowed on this node; its rules in node.toml allow only: find " + work + ` -name "*.log"`,
		"make -f - with stdin": "these arguments of /usr/bin/make are not allowed on this node; its rules in node.toml allow only: make -C " + work,
		"sed e":                "these arguments of /usr/bin/sed are not allowed on this node; its rules in node.toml allow only: sed -n 1p " + filepath.Join(work, "a.log"),
	})
	// The allowed make with a makefile on stdin: the table does not allow stdin.
	stderr := operator.fails(t, 1, invoke([]string{"make", "-C", work}, "all:\n\techo pwned > "+marker+"\n")...)
	if !strings.Contains(stderr, "/usr/bin/make takes no standard input on this node") {
		t.Errorf("make -C with stdin: %s", stderr)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("a shell ran on the node")
	}

	// The working directory: a directory holding a makefile an attacker planted.
	planted := t.TempDir()
	if err := os.WriteFile(filepath.Join(planted, "Makefile"), []byte("all:\n\t@echo pwned > "+marker+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	invokeIn := func(dir string, argv ...string) []string {
		in, err := json.Marshal(map[string]any{"argv": argv, "work_dir": dir})
		if err != nil {
			t.Fatal(err)
		}
		return []string{"nodes", "invoke", id, "shell.execute", "--follow", "--input", string(in)}
	}
	// make with a literal argument list but no pinned directory runs nowhere.
	writeRawNodeConfig(t, stateDir, `[shell]
allow = ["echo"]

[[shell.program]]
path = "make"
args = [[]]
`)
	if err := node.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually.NoError(t, "make without a pinned directory reloaded", func() error {
		if _, _, stderr := operator.run(t, "", invoke([]string{"find", work, "-name", "*.log"}, "")...); !strings.Contains(stderr, "not in the node's allow-list") {
			return fmt.Errorf("find is not refused: %q", stderr)
		}
		return nil
	})
	stderr = operator.fails(t, 1, invokeIn(planted, "make")...)
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("make ran the planted makefile")
	}
	if want := "/usr/bin/make is not allowed on this node: make can run other programs"; !strings.Contains(stderr, want) ||
		!strings.Contains(stderr, "work_dirs") {
		t.Errorf("make in a planted directory, unpinned: stderr %q does not give the reason %q ... work_dirs", stderr, want)
	}
	// Pinned: make runs in its directory only.
	writeRawNodeConfig(t, stateDir, `[shell]
allow = ["echo"]

[[shell.program]]
path = "make"
args = [[]]
work_dirs = ["`+work+`"]
`)
	if err := node.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually.NoError(t, "make pinned reloaded", func() error {
		if code, _, stderr := operator.run(t, "", invoke([]string{"make"}, "")...); code != 0 {
			return fmt.Errorf("exit code %d: %s", code, stderr)
		}
		return nil
	})
	stderr = operator.fails(t, 1, invokeIn(planted, "make")...)
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("make ran the planted makefile")
	}
	if want := `failed: shell.execute: /usr/bin/make may not run in "` + planted + `" on this node: its [[shell.program]] table in node.toml pins it to ` + work; !strings.Contains(stderr, want) {
		t.Errorf("make in a planted directory, pinned: stderr %q does not give the reason %q", stderr, want)
	}
	for _, dir := range []string{"", work} {
		if out := operator.ok(t, invokeIn(dir, "make")...); !strings.Contains(out, "built\n") {
			t.Errorf("make with work_dir %q printed %q, want built", dir, out)
		}
	}
	node.stop(t)
}

// writeRawNodeConfig writes node.toml with content.
func writeRawNodeConfig(t *testing.T, stateDir, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(stateDir, "node.toml"), []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
