package capability

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
)

// findArgs, makeArgs and sedArgs are the literal argument lists the exploit tests allow.
var (
	findArgs = []ArgRule{{Lit("/var/log"), Lit("-name"), Lit("*.log")}}
	makeArgs = []ArgRule{{Lit("-C"), Lit("/src")}}
	sedArgs  = []ArgRule{{Lit("-n"), Lit("1p"), Lit("/etc/hostname")}}
)

// TestShellExecuteExploits runs the three ways an operator got a shell on a node whose
// allow-list named find, make or sed, first with the program in the allow-list, then
// with literal argument rules: each is refused with its reason, and the marker file the
// shell would write never appears.
func TestShellExecuteExploits(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		program string
		rules   []ArgRule
		input   func(marker string) ShellInput
		want    []string
	}{
		"find -exec, find in the allow-list": {
			program: "/usr/bin/find",
			input:   findExec,
			want:    []string{"/usr/bin/find is not allowed", "find can run other programs (-exec", "mark it unsafe"},
		},
		"make -f - with stdin, make in the allow-list": {
			program: "/usr/bin/make",
			input:   makeStdin,
			want:    []string{"/usr/bin/make is not allowed", "make can run other programs", "-f - reads one from standard input"},
		},
		"sed e, sed in the allow-list": {
			program: "/usr/bin/sed",
			input:   sedE,
			want:    []string{"/usr/bin/sed is not allowed", "sed can run other programs (its e command"},
		},
		"find -exec, find with argument rules": {
			program: "/usr/bin/find", rules: findArgs,
			input: findExec,
			want:  []string{"these arguments of /usr/bin/find are not allowed", `allow only: find /var/log -name "*.log"`},
		},
		"make -f - with stdin, make with argument rules": {
			program: "/usr/bin/make", rules: makeArgs,
			input: makeStdin,
			want:  []string{"these arguments of /usr/bin/make are not allowed", "allow only: make -C /src"},
		},
		"make -C /src with a makefile on stdin, make with argument rules": {
			program: "/usr/bin/make", rules: makeArgs,
			input: func(marker string) ShellInput {
				in := makeStdin(marker)
				in.Argv = []string{"make", "-C", "/src"}
				return in
			},
			want: []string{"/usr/bin/make takes no standard input", "stdin = true"},
		},
		"sed e, sed with argument rules": {
			program: "/usr/bin/sed", rules: sedArgs,
			input: sedE,
			want:  []string{"these arguments of /usr/bin/sed are not allowed", "allow only: sed -n 1p /etc/hostname"},
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			marker := filepath.Join(t.TempDir(), "marker")
			cfg := ShellConfig{Allow: []string{tt.program}}
			if tt.rules != nil {
				cfg = ShellConfig{Programs: []ProgramConfig{{Path: tt.program, Args: tt.rules, WorkDirs: []string{"/"}}}}
			}
			s := newTestShell(t, cfg, nil)
			res, out, err := runShell(t.Context(), t, s, tt.input(marker))
			if _, serr := os.Stat(marker); serr == nil {
				t.Fatalf("it ran a shell: the marker exists (result %+v, stdout %q)", res, out.Stdout())
			}
			wantRefused(t, err, tt.want...)
			if out.Writes() != 0 {
				t.Errorf("something ran: %q %q", out.Stdout(), out.Stderr())
			}
		})
	}
}

func findExec(marker string) ShellInput {
	return ShellInput{Argv: []string{"find", "/", "-maxdepth", "0", "-exec", "/bin/sh", "-c", "echo pwned > " + marker, ";"}}
}

func makeStdin(marker string) ShellInput {
	return ShellInput{Argv: []string{"make", "-f", "-"}, Stdin: "all:\n\techo pwned > " + marker + "\n"}
}

func sedE(marker string) ShellInput {
	return ShellInput{Argv: []string{"sed", "-n", "1e echo pwned > " + marker, "/etc/hostname"}}
}

// TestShellExecuteArgRules checks that argument rules allow exactly what they say: each
// argv runs (echo prints its arguments) or is refused, as its rules decide.
func TestShellExecuteArgRules(t *testing.T) {
	t.Parallel()
	rules := []ArgRule{
		{},
		{Lit("-x"), Lit("exact")},
		{Lit("status"), {Regex: "[a-z][a-z0-9-]*"}},
		{Lit("tail"), {Rest: `/var/log/[a-z]+\.log`}},
		{Lit(""), Lit("with space"), Lit("$HOME")},
	}
	tests := map[string]struct {
		args  []string
		stdin string
		stdOK bool // the program's table sets stdin = true
		want  string
	}{
		"no arguments":                      {args: nil},
		"an exact list":                     {args: []string{"-x", "exact"}},
		"a regex":                           {args: []string{"status", "web-1"}},
		"a rest of none":                    {args: []string{"tail"}},
		"a rest of several":                 {args: []string{"tail", "/var/log/a.log", "/var/log/b.log"}},
		"literals are taken as they are":    {args: []string{"", "with space", "$HOME"}},
		"stdin when allowed":                {args: []string{"-x", "exact"}, stdin: "x", stdOK: true},
		"a literal list with one more":      {args: []string{"-x", "exact", "more"}, want: "not allowed"},
		"a literal list with one less":      {args: []string{"-x"}, want: "not allowed"},
		"a literal list in another order":   {args: []string{"exact", "-x"}, want: "not allowed"},
		"a literal that differs in case":    {args: []string{"-N", "exact"}, want: "not allowed"},
		"a regex matches whole arguments":   {args: []string{"status", "web-1;id"}, want: "not allowed"},
		"a regex does not match an option":  {args: []string{"status", "--all"}, want: "not allowed"},
		"a regex matches one argument only": {args: []string{"status", "a", "b"}, want: "not allowed"},
		"a rest checks every argument":      {args: []string{"tail", "/var/log/a.log", "/etc/shadow"}, want: "not allowed"},
		"a rest anchors its match":          {args: []string{"tail", "/var/log/a.log/../../../etc/shadow"}, want: "not allowed"},
		"stdin when not allowed":            {args: []string{"-x", "exact"}, stdin: "x", want: "takes no standard input"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := newTestShell(t, ShellConfig{Programs: []ProgramConfig{{Path: "/bin/echo", Args: rules, Stdin: tt.stdOK}}}, nil)
			res, out, err := runShell(t.Context(), t, s, ShellInput{Argv: append([]string{"echo"}, tt.args...), Stdin: tt.stdin})
			if tt.want != "" {
				wantRefused(t, err, tt.want)
				if out.Writes() != 0 {
					t.Errorf("something ran: %q", out.Stdout())
				}
				return
			}
			if err != nil || res.Failed {
				t.Fatalf("Run = %+v, %v; want it allowed", res, err)
			}
			if want := strings.Join(tt.args, " ") + "\n"; out.Stdout() != want {
				t.Errorf("stdout %q, want %q", out.Stdout(), want)
			}
		})
	}

	t.Run("the refusal quotes the lists allowed", func(t *testing.T) {
		t.Parallel()
		s := newTestShell(t, ShellConfig{Programs: []ProgramConfig{{Path: "/bin/echo", Args: rules}}}, nil)
		_, _, err := runShell(t.Context(), t, s, ShellInput{Argv: []string{"echo", "nope"}})
		wantRefused(t, err, `allow only: echo; echo -x exact; echo status <[a-z][a-z0-9-]*>; echo tail </var/log/[a-z]+\.log>... (and 1 more)`)
	})
}

// TestShellExecuteExecutorRules checks what a program that runs other programs may be
// given: literal lists in pinned directories, or anything once it is marked unsafe.
func TestShellExecuteExecutorRules(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "a.log"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	findLogs := ArgRule{Lit(dir), Lit("-name"), Lit("*.log")}
	tests := map[string]struct {
		program    ProgramConfig
		argv       []string
		stdin      string
		wantStdout string
		want       []string // parts of the refusal; nil: it runs
	}{
		"find with a literal list": {
			program:    ProgramConfig{Path: "/usr/bin/find", Args: []ArgRule{findLogs}, WorkDirs: []string{dir}},
			argv:       []string{"find", dir, "-name", "*.log"},
			wantStdout: filepath.Join(dir, "a.log") + "\n",
		},
		"find with a literal list, not pinned": {
			program: ProgramConfig{Path: "/usr/bin/find", Args: []ArgRule{findLogs}},
			argv:    []string{"find", dir, "-name", "*.log"},
			want:    []string{"find can run other programs", "must pin where it runs (work_dirs", "unsafe"},
		},
		"find with a pattern": {
			program: ProgramConfig{Path: "/usr/bin/find", Args: []ArgRule{{Lit(dir), Lit("-name"), {Regex: `[a-z*.]+`}}}},
			argv:    []string{"find", dir, "-name", "*.log"},
			want:    []string{"find can run other programs", "hold patterns", "unsafe"},
		},
		"find with a pattern, marked unsafe": {
			program:    ProgramConfig{Path: "/usr/bin/find", Args: []ArgRule{{Lit(dir), Lit("-name"), {Regex: `[a-z*.]+`}}}, Unsafe: true},
			argv:       []string{"find", dir, "-name", "*.log"},
			wantStdout: filepath.Join(dir, "a.log") + "\n",
		},
		"a shell with any arguments": {
			program: ProgramConfig{Path: "/bin/sh"},
			argv:    []string{"sh", "-c", "echo hi"},
			want:    []string{"sh can run other programs (it is a shell)"},
		},
		"a shell with any arguments, marked unsafe": {
			program:    ProgramConfig{Path: "/bin/sh", Unsafe: true},
			argv:       []string{"sh", "-c", "echo hi"},
			wantStdout: "hi\n",
		},
		"a shell marked unsafe still needs stdin = true": {
			program: ProgramConfig{Path: "/bin/sh", Unsafe: true},
			argv:    []string{"sh"}, stdin: "echo hi",
			want: []string{"takes no standard input"},
		},
		"a shell marked unsafe with stdin": {
			program: ProgramConfig{Path: "/bin/sh", Unsafe: true, Stdin: true},
			argv:    []string{"sh"}, stdin: "echo hi",
			wantStdout: "hi\n",
		},
		"env with a literal list": {
			program:    ProgramConfig{Path: "/usr/bin/env", Args: []ArgRule{{Lit("-i"), Lit("/bin/echo"), Lit("clean")}}, WorkDirs: []string{"/"}},
			argv:       []string{"env", "-i", "/bin/echo", "clean"},
			wantStdout: "clean\n",
		},
		"env naming another program": {
			program: ProgramConfig{Path: "/usr/bin/env", Args: []ArgRule{{Lit("-i"), Lit("/bin/echo"), Lit("clean")}}, WorkDirs: []string{"/"}},
			argv:    []string{"env", "-i", "/bin/sh", "-c", "id"},
			want:    []string{"these arguments of /usr/bin/env are not allowed"},
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := newTestShell(t, ShellConfig{Programs: []ProgramConfig{tt.program}}, nil)
			res, out, err := runShell(t.Context(), t, s, ShellInput{Argv: tt.argv, Stdin: tt.stdin})
			if ran := wantOutcome(t, res, out, err, tt.want); ran && out.Stdout() != tt.wantStdout {
				t.Errorf("stdout %q, want %q", out.Stdout(), tt.wantStdout)
			}
		})
	}
}

// TestShellExecuteExecutorsUnderOtherNames allows find, sh and sed under other paths and
// names: a symbolic link, a hard link, a copy, and a link through /usr/bin: each is
// still recognised and refused.
func TestShellExecuteExecutorsUnderOtherNames(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	link := func(name, target string) string {
		p := filepath.Join(dir, name)
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	copyOf := func(name, src string) string {
		p := filepath.Join(dir, name)
		in, err := os.Open(src)
		if err != nil {
			t.Skip(err)
		}
		defer in.Close()
		out, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o755)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(out, in); err != nil {
			t.Fatal(err)
		}
		if err := out.Close(); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := map[string]struct {
		path string
		argv []string
		want string
	}{
		"a symbolic link to find named lister": {path: link("lister", "/usr/bin/find"), want: "find can run other programs"},
		"a chain of links to sh":               {path: link("report", link("tool", "/bin/sh")), want: "can run other programs (it is a shell)"},
		"a copy of sed named stream":           {path: copyOf("stream", "/usr/bin/sed"), want: "sed can run other programs"},
		"find by its path through /bin":        {path: "/bin/find", want: "find can run other programs"},
		"find given by its other path":         {path: "/usr/bin/find", argv: []string{"/bin/find", "/", "-maxdepth", "0"}, want: "find can run other programs"},
	}
	// A hard link, when the temporary directory is on the same file system as find.
	hard := filepath.Join(dir, "walk")
	if err := os.Link("/usr/bin/find", hard); err == nil {
		tests["a hard link to find named walk"] = struct {
			path string
			argv []string
			want string
		}{path: hard, want: "find can run other programs"}
	} else if !errors.Is(err, syscall.EXDEV) && !errors.Is(err, os.ErrPermission) {
		t.Logf("no hard link test: %v", err)
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := newTestShell(t, ShellConfig{Allow: []string{tt.path}}, nil)
			argv := tt.argv
			if argv == nil {
				argv = []string{tt.path, "/", "-maxdepth", "0"}
			}
			_, out, err := runShell(t.Context(), t, s, ShellInput{Argv: argv})
			wantRefused(t, err, tt.want)
			if out.Writes() != 0 {
				t.Errorf("something ran: %q", out.Stdout())
			}
		})
	}
}

// TestShellExecuteLinkChangedAfterLoad checks that a symbolic link allowed as a harmless
// program, then pointed at a shell, is refused from then on.
func TestShellExecuteLinkChangedAfterLoad(t *testing.T) {
	t.Parallel()
	p := filepath.Join(t.TempDir(), "tool")
	if err := os.Symlink("/bin/echo", p); err != nil {
		t.Fatal(err)
	}
	s := newTestShell(t, ShellConfig{Allow: []string{p}}, nil)
	if res, _, err := runShell(t.Context(), t, s, ShellInput{Argv: []string{p, "hi"}}); err != nil || res.Failed {
		t.Fatalf("Run = %+v, %v", res, err)
	}
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/bin/sh", p); err != nil {
		t.Fatal(err)
	}
	_, out, err := runShell(t.Context(), t, s, ShellInput{Argv: []string{p, "-c", "echo pwned"}})
	wantRefused(t, err, "can run other programs (it is a shell)")
	if out.Writes() != 0 {
		t.Errorf("something ran: %q", out.Stdout())
	}
}

// TestExecutorNames checks how a file name is recognised: versions, suffixes, cross
// compilers, loaders, and harmless names that must not be taken for others.
func TestExecutorNames(t *testing.T) {
	t.Parallel()
	for name, want := range map[string]string{
		"find": "find", "python3": "python", "python3.12": "python", "pypy3": "pypy", "perl5.36.0": "perl",
		"ruby3.1": "ruby", "node18": "node", "php8.2": "php", "lua5.4": "lua", "pip3": "pip", "vim.basic": "vim",
		"vim.tiny": "vim", "gcc-12": "gcc", "x86_64-linux-gnu-gcc-12": "gcc", "g++-13": "g++", "BASH": "bash",
		"mawk": "mawk", "gawk": "gawk", "busybox": "busybox", "git": "git", "ld-linux-x86-64.so.2": "ld-linux-x86-64.so.2",
		"ssh-keygen": "ssh-keygen", "m4": "m4", "timeout": "timeout", "xargs": "xargs", "rsync": "rsync", "tar": "tar",
		"ls": "", "cat": "", "uname": "", "df": "", "echo": "", "systemctl": "", "journalctl": "", "update-rc.d": "",
		"head": "", "tail": "", "wc": "", "grep": "", "du": "", "sha256sum": "", "python3-config": "", "dpkg-query": "",
	} {
		got, _ := runsByName(name)
		if got != want {
			t.Errorf("runsByName(%q) = %q, want %q", name, got, want)
		}
	}
}

// TestLoadConfigPrograms reads [[shell.program]] tables: their rules and pinned
// directories, and the errors of those that cannot be right.
func TestLoadConfigPrograms(t *testing.T) {
	t.Parallel()
	echo, err := exec.LookPath("echo")
	if err != nil {
		t.Skip("no echo on PATH")
	}
	echo, _ = filepath.Abs(echo)
	dirA, dirB := t.TempDir(), t.TempDir()
	writable, file := t.TempDir(), filepath.Join(t.TempDir(), "file")
	if err := os.Chmod(writable, 0o1777); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Run("rules", func(t *testing.T) {
		t.Parallel()
		got, err := LoadConfig(writeConfig(t, `
[shell]
allow = ["/bin/uname"]

[[shell.program]]
path = "echo"
args = [
  [],
  ["-C", "/src"],
  ["status", { regex = "[a-z]+" }],
  ["tail", { rest = '/var/log/.+' }],
]
stdin = true
work_dirs = ["`+dirA+`/", "`+dirB+`", "`+dirA+`"]

[[shell.program]]
path = "/usr/bin/find"
unsafe = true
`))
		if err != nil {
			t.Fatalf("LoadConfig: %v", err)
		}
		want := []ProgramConfig{
			{Path: echo, Stdin: true, Args: []ArgRule{
				{}, {Lit("-C"), Lit("/src")}, {Lit("status"), {Regex: "[a-z]+"}}, {Lit("tail"), {Rest: "/var/log/.+"}},
			}, WorkDirs: []string{dirA, dirB}},
			{Path: "/usr/bin/find", Unsafe: true},
		}
		if !reflect.DeepEqual(got.Shell.Programs, want) {
			t.Errorf("programs\n%#v\nwant\n%#v", got.Shell.Programs, want)
		}
	})
	for name, tt := range map[string]struct {
		content string
		want    []string
	}{
		"an empty args":         {`args = []`, []string{`shell.program "echo": args is empty`}},
		"a bad regex":           {`args = [["a", { regex = "(" }]]`, []string{"args[0]: argument 2", "missing closing )"}},
		"rest before the end":   {`args = [[{ rest = "a" }, "b"]]`, []string{"args[0]: argument 1", "may only end"}},
		"regex and rest":        {`args = [[{ regex = "a", rest = "b" }]]`, []string{"not both"}},
		"an empty regex":        {`args = [[{ regex = "" }]]`, []string{"non-empty expression"}},
		"a number":              {`args = [["a", 3]]`, []string{"args[0]: argument 2"}},
		"an unknown key":        {`args = [[{ regexp = "a" }]]`, []string{"unknown settings", "regexp"}},
		"a list, not lists":     {`args = ["-C", "/src"]`, []string{"cannot decode TOML string", "Args"}},
		"an unknown setting":    {`allow_stdin = true`, []string{"unknown settings", "allow_stdin"}},
		"no path":               {`args = [[]]`, []string{"shell.program[0]: path", "empty executable name"}},
		"in allow too":          {"", []string{"is listed in shell.allow already"}},
		"a relative path":       {`args = [[]]`, []string{"want an absolute path or a bare name"}},
		"a program not on PATH": {`args = [[]]`, []string{"not found on PATH"}},
		"an empty work_dirs":    {`work_dirs = []`, []string{`shell.program "echo": work_dirs is empty, which allows no directory`}},
		"a relative work_dir":   {`work_dirs = ["srv/app"]`, []string{"work_dirs", `"srv/app" is not an absolute path`}},
		"a missing work_dir":    {`work_dirs = ["` + filepath.Join(dirA, "nope") + `"]`, []string{"work_dirs", "no such file or directory"}},
		"a file as work_dir":    {`work_dirs = ["` + file + `"]`, []string{"work_dirs", "is not a directory"}},
		"a work_dir with ..":    {`work_dirs = ["` + dirA + `/../x"]`, []string{"work_dirs", `".." is never allowed`}},
		"a work_dir others may write": {
			`work_dirs = ["` + writable + `"]`, []string{"work_dirs", "others may write it (mode", "plant"},
		},
		"work_dirs not a list":      {`work_dirs = "` + dirA + `"`, []string{"cannot decode TOML string", "WorkDirs"}},
		"a bad work_dir among good": {`work_dirs = ["` + dirA + `", "tmp"]`, []string{`"tmp" is not an absolute path`}},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			path := `path = "echo"`
			allow := ""
			switch name {
			case "no path":
				path = ""
			case "in allow too":
				allow = `allow = ["` + echo + `"]`
			case "a relative path":
				path = `path = "./echo"`
			case "a program not on PATH":
				path = `path = "palyra-no-such-program"`
			}
			_, err := LoadConfig(writeConfig(t, "[shell]\n"+allow+"\n[[shell.program]]\n"+path+"\n"+tt.content+"\n"))
			if err == nil {
				t.Fatal("LoadConfig succeeded, want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not hold %q", err, w)
				}
			}
		})
	}
}

// TestShellExecuteCodeEnv checks that a variable programs read as code or options, even
// listed in shell.env, only passes through: a request that sets it is refused (make -C
// /src with MAKEFLAGS naming another makefile would be the shell the rules refuse).
func TestShellExecuteCodeEnv(t *testing.T) {
	t.Parallel()
	names := []string{"LD_PRELOAD", "LD_LIBRARY_PATH", "MAKEFLAGS", "GIT_SSH_COMMAND", "BASH_ENV", "PYTHONSTARTUP", "TAR_OPTIONS", "LANG"}
	environ := []string{"PATH=" + testPATH, "LD_LIBRARY_PATH=/opt/lib"}
	s := newTestShell(t, ShellConfig{Programs: []ProgramConfig{{Path: "/usr/bin/env", Args: []ArgRule{{}}, WorkDirs: []string{"/"}}}, Env: names}, environ)
	for _, name := range names[:len(names)-1] {
		_, out, err := runShell(t.Context(), t, s, ShellInput{Argv: []string{"env"}, Env: map[string]string{name: "x"}})
		wantRefused(t, err, name, "may not be set by a request")
		if out.Writes() != 0 {
			t.Errorf("%s: something ran", name)
		}
	}
	res, out, err := runShell(t.Context(), t, s, ShellInput{Argv: []string{"env"}, Env: map[string]string{"LANG": "C.UTF-8"}})
	if err != nil || res.Failed || !strings.Contains(out.Stdout(), "LANG=C.UTF-8\n") || !strings.Contains(out.Stdout(), "LD_LIBRARY_PATH=/opt/lib\n") {
		t.Errorf("Run = %+v, %v, stdout %q: want LANG set and LD_LIBRARY_PATH passed through", res, err, out.Stdout())
	}
}
