package capability

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// plantedDirs returns a directory holding a makefile and one holding a git repository
// whose core.fsmonitor runs a command: what an attacker leaves where a request may point
// make or git status. Each writes marker when it runs.
func plantedDirs(t *testing.T, marker string) (makeDir, gitDir string) {
	t.Helper()
	makeDir, gitDir = t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(makeDir, "Makefile"), []byte("all:\n\t@echo pwned > "+marker+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"init", "-q", gitDir}, {"-C", gitDir, "config", "core.fsmonitor", "echo pwned > " + marker + "; false"}} {
		if out, err := exec.Command("/usr/bin/git", args...).CombinedOutput(); err != nil {
			t.Skipf("git %v: %v: %s", args, err, out)
		}
	}
	return makeDir, gitDir
}

// TestShellExecuteUnpinnedExecutor asks for make and git status, allowed with literal
// argument lists and no pinned directory, in directories an attacker prepared: each is
// refused, saying the program's directory must be pinned, and nothing runs.
func TestShellExecuteUnpinnedExecutor(t *testing.T) {
	t.Parallel()
	s := newTestShell(t, ShellConfig{Programs: []ProgramConfig{
		{Path: "/usr/bin/make", Args: []ArgRule{{}}},
		{Path: "/usr/bin/git", Args: []ArgRule{{Lit("status")}}},
	}}, nil)
	for _, argv := range [][]string{{"make"}, {"git", "status"}} {
		t.Run(argv[0], func(t *testing.T) {
			t.Parallel()
			marker := filepath.Join(t.TempDir(), "marker")
			makeDir, gitDir := plantedDirs(t, marker)
			in := ShellInput{Argv: argv, WorkDir: makeDir}
			if argv[0] == "git" {
				in.WorkDir = gitDir
			}
			res, out, err := runShell(t.Context(), t, s, in)
			if _, serr := os.Stat(marker); serr == nil {
				t.Fatalf("%v in %s ran the planted command (result %+v, stdout %q)", in.Argv, in.WorkDir, res, out.Stdout())
			}
			wantRefused(t, err, "can run other programs", "work_dirs")
		})
	}
}

// TestShellExecutePinnedExecutor pins make and git status to a directory of their own:
// a request pointing them at the attacker's directories (by path or through a symbolic
// link) is refused with the pinned directory named, and nothing runs; a request naming
// no directory, or the pinned one, runs there.
func TestShellExecutePinnedExecutor(t *testing.T) {
	t.Parallel()
	marker := filepath.Join(t.TempDir(), "marker")
	makeDir, gitDir := plantedDirs(t, marker)
	pinned := t.TempDir()
	if err := os.WriteFile(filepath.Join(pinned, "Makefile"), []byte("all:\n\t@echo built\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("/usr/bin/git", "init", "-q", pinned).CombinedOutput(); err != nil {
		t.Skipf("git init: %v: %s", err, out)
	}
	toPlanted := filepath.Join(t.TempDir(), "app")
	if err := os.Symlink(makeDir, toPlanted); err != nil {
		t.Fatal(err)
	}
	s := newTestShell(t, ShellConfig{Programs: []ProgramConfig{
		{Path: "/usr/bin/make", Args: []ArgRule{{}}, WorkDirs: []string{pinned}},
		{Path: "/usr/bin/git", Args: []ArgRule{{Lit("status"), Lit("--short")}}, WorkDirs: []string{pinned}},
	}}, nil)
	realPlanted, err := filepath.EvalSymlinks(makeDir)
	if err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		in         ShellInput
		wantStdout string
		want       []string // parts of the refusal; nil: it runs
	}{
		"make in the planted directory": {
			in:   ShellInput{Argv: []string{"make"}, WorkDir: makeDir},
			want: []string{`/usr/bin/make may not run in "` + makeDir + `" on this node`, "pins it to " + pinned},
		},
		"make through a link to the planted directory": {
			in:   ShellInput{Argv: []string{"make"}, WorkDir: toPlanted},
			want: []string{`may not run in "` + toPlanted + `" (which leads to ` + realPlanted + `)`, "pins it to " + pinned},
		},
		"git status in the planted repository": {
			in:   ShellInput{Argv: []string{"git", "status", "--short"}, WorkDir: gitDir},
			want: []string{`/usr/bin/git may not run in "` + gitDir + `"`, "pins it to " + pinned},
		},
		"make naming no directory": {in: ShellInput{Argv: []string{"make"}}, wantStdout: "built\n"},
		"make in the pinned one":   {in: ShellInput{Argv: []string{"make"}, WorkDir: pinned + "/"}, wantStdout: "built\n"},
		"git status naming none":   {in: ShellInput{Argv: []string{"git", "status", "--short"}}, wantStdout: "?? Makefile\n"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			res, out, err := runShell(t.Context(), t, s, tt.in)
			if ran := wantOutcome(t, res, out, err, tt.want); ran && out.Stdout() != tt.wantStdout {
				t.Errorf("stdout %q, want %q", out.Stdout(), tt.wantStdout)
			}
		})
	}
	t.Cleanup(func() {
		if _, err := os.Stat(marker); err == nil {
			t.Error("a planted command ran: the marker exists")
		}
	})
}

// TestShellExecutePinnedWorkDir checks where a pinned program (pwd) may run: in each
// pinned directory, by its path or through a symbolic link leading to it, and nowhere
// else: not in another directory, a subdirectory of a pinned one (also through a link
// into it), nor through "..", which after a link leads elsewhere than it reads.
func TestShellExecutePinnedWorkDir(t *testing.T) {
	t.Parallel()
	pinA, pinB, other := t.TempDir(), t.TempDir(), t.TempDir()
	sub := filepath.Join(pinA, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	links := t.TempDir()
	link := func(name, target string) string {
		p := filepath.Join(links, name)
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	toA, toSub, toOther := link("a", pinA), link("sub", sub), link("other", other)
	// pinA/out leads to other: pinA/out/.. reads as pinA but is other's parent.
	if err := os.Symlink(filepath.Join(other, "."), filepath.Join(pinA, "out")); err != nil {
		t.Fatal(err)
	}
	s := newTestShell(t, ShellConfig{Programs: []ProgramConfig{{Path: "/bin/pwd", WorkDirs: []string{pinA, pinB}}}}, nil)
	tests := map[string]struct {
		workDir string
		runsIn  string   // the directory pwd prints
		want    []string // parts of the refusal
	}{
		"none: the first pinned":          {runsIn: pinA},
		"the first pinned":                {workDir: pinA, runsIn: pinA},
		"the second pinned":               {workDir: pinB, runsIn: pinB},
		"a pinned one, not clean":         {workDir: pinB + "/./", runsIn: pinB},
		"a link to a pinned one":          {workDir: toA, runsIn: pinA},
		"another directory":               {workDir: other, want: []string{`may not run in "` + other + `"`, "pins it to one of " + pinA + ", " + pinB}},
		"a link to another directory":     {workDir: toOther, want: []string{"(which leads to " + other + ")"}},
		"a subdirectory of a pinned one":  {workDir: sub, want: []string{`may not run in "` + sub + `"`}},
		"a link into a pinned one":        {workDir: toSub, want: []string{"(which leads to " + sub + ")"}},
		"a pinned one through ..":         {workDir: sub + "/..", want: []string{`".." is never allowed`}},
		"a pinned one through a link, ..": {workDir: filepath.Join(pinA, "out") + "/..", want: []string{`".." is never allowed`}},
		"a relative directory":            {workDir: "tmp", want: []string{"not an absolute path"}},
		"a missing directory":             {workDir: filepath.Join(pinA, "nope"), want: []string{"work_dir", "no such file"}},
		"a NUL byte":                      {workDir: pinA + "\x00", want: []string{"NUL"}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			res, out, err := runShell(t.Context(), t, s, ShellInput{Argv: []string{"pwd"}, WorkDir: tt.workDir})
			if !wantOutcome(t, res, out, err, tt.want) {
				return
			}
			want, err := filepath.EvalSymlinks(tt.runsIn)
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.TrimSpace(out.Stdout()); got != want {
				t.Errorf("working directory %q, want %q", got, want)
			}
		})
	}
}

// TestShellExecutePinChangedAfterLoad checks the pinned directory at each run: once
// others may write it, or once it is gone, the program runs nowhere, saying why.
func TestShellExecutePinChangedAfterLoad(t *testing.T) {
	t.Parallel()
	if runtime.GOOS == "windows" {
		t.Skip("no permission bits")
	}
	writable, gone := t.TempDir(), filepath.Join(t.TempDir(), "gone")
	if err := os.Mkdir(gone, 0o755); err != nil {
		t.Fatal(err)
	}
	s := newTestShell(t, ShellConfig{Programs: []ProgramConfig{
		{Path: "/bin/pwd", WorkDirs: []string{writable}},
		{Path: "/bin/echo", WorkDirs: []string{gone}},
	}}, nil)
	for _, argv := range [][]string{{"pwd"}, {"echo"}} {
		if res, _, err := runShell(t.Context(), t, s, ShellInput{Argv: argv}); err != nil || res.Failed {
			t.Fatalf("%v before the change: Run = %+v, %v", argv, res, err)
		}
	}
	if err := os.Chmod(writable, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(gone); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		in   ShellInput
		want string
	}{
		{ShellInput{Argv: []string{"pwd"}}, "others may write it (mode -rwxrwxrwx)"},
		{ShellInput{Argv: []string{"pwd"}, WorkDir: writable}, "others may write it"},
		{ShellInput{Argv: []string{"echo"}}, "no such file or directory"},
	} {
		_, out, err := runShell(t.Context(), t, s, tt.in)
		wantRefused(t, err, "may run only in the directories node.toml pins it to", tt.want)
		if out.Writes() != 0 {
			t.Errorf("%v: something ran: %q", tt.in.Argv, out.Stdout())
		}
	}
}

// TestShellExecuteBadPins gives newShell pins LoadConfig would refuse (relative ones):
// they are ignored, and a program left with none runs nowhere rather than anywhere.
func TestShellExecuteBadPins(t *testing.T) {
	t.Parallel()
	s := newTestShell(t, ShellConfig{Programs: []ProgramConfig{{Path: "/bin/pwd", WorkDirs: []string{"srv", ""}}}}, nil)
	for _, dir := range []string{"", "/", os.TempDir()} {
		_, out, err := runShell(t.Context(), t, s, ShellInput{Argv: []string{"pwd"}, WorkDir: dir})
		wantRefused(t, err, "/bin/pwd may run in no directory on this node")
		if out.Writes() != 0 {
			t.Errorf("%q: something ran: %q", dir, out.Stdout())
		}
	}
}

// TestShellExecuteWorkDirReload reloads node.toml as the agent does on SIGHUP
// (LoadConfig, then the built-in capabilities of what it read): a new pin applies to the
// next run, a pin taken out makes make unusable again, and a node.toml with a bad pin
// is refused, so that the agent keeps the capabilities it had.
func TestShellExecuteWorkDirReload(t *testing.T) {
	t.Parallel()
	if runtime.GOOS == "windows" {
		t.Skip("shell.execute tests use Unix programs")
	}
	if _, err := os.Stat("/usr/bin/make"); err != nil {
		t.Skip(err)
	}
	dirA, dirB := t.TempDir(), t.TempDir()
	for dir, name := range map[string]string{dirA: "A", dirB: "B"} {
		if err := os.WriteFile(filepath.Join(dir, "Makefile"), []byte("all:\n\t@echo built in "+name+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	path := writeConfig(t, "")
	reload := func(workDirs string) (*Registry, error) {
		t.Helper()
		content := "[[shell.program]]\npath = \"/usr/bin/make\"\nargs = [[]]\n" + workDirs
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := LoadConfig(path)
		if err != nil {
			return nil, err
		}
		return NewRegistry(Builtin(cfg, testLogger(t))...)
	}
	mustReload := func(workDirs string) *Registry {
		t.Helper()
		reg, err := reload(workDirs)
		if err != nil {
			t.Fatalf("reload with %q: %v", workDirs, err)
		}
		return reg
	}
	run := func(reg *Registry, workDir string) (string, error) {
		t.Helper()
		c, _ := reg.Lookup(ShellExecuteName)
		b, _ := json.Marshal(ShellInput{Argv: []string{"make"}, WorkDir: workDir})
		out := newRecorder()
		res, err := c.Run(t.Context(), b, out)
		if err == nil && res.Failed {
			t.Fatalf("make in %q failed: %s: %s", workDir, res.Error, out.Stderr())
		}
		return out.Stdout(), err
	}

	reg := mustReload(`work_dirs = ["` + dirA + `"]`)
	if out, err := run(reg, ""); err != nil || out != "built in A\n" {
		t.Fatalf("pinned to A: %q, %v", out, err)
	}
	reg = mustReload(`work_dirs = ["` + dirB + `"]`)
	if out, err := run(reg, ""); err != nil || out != "built in B\n" {
		t.Fatalf("pinned to B: %q, %v", out, err)
	}
	_, err := run(reg, dirA)
	wantRefused(t, err, `may not run in "`+dirA+`"`, "pins it to "+dirB)

	reg = mustReload("")
	_, err = run(reg, dirB)
	wantRefused(t, err, "make can run other programs", "must pin where it runs (work_dirs")

	if _, err := reload(`work_dirs = ["` + dirA + `/../x"]`); err == nil || !strings.Contains(err.Error(), `".." is never allowed`) {
		t.Errorf("reload with a pin through ..: %v, want the node.toml refused", err)
	}
}
