package capability

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/palyra/palyra/internal/eventually"
)

// testPATH is the agent's PATH in these tests.
const testPATH = "/usr/local/bin:/usr/bin:/bin"

// testEnviron is the agent's environment in these tests.
var testEnviron = []string{"PATH=" + testPATH, "HOME=/root", "PALYRA_SECRET=leak", "PALYRA_PASS=agent"}

// newTestShell returns shell.execute for cfg with the agent's environment environ
// (testEnviron when nil). Every executable of cfg.Allow must exist, or the test skips.
func newTestShell(t *testing.T, cfg ShellConfig, environ []string) *shell {
	t.Helper()
	if runtime.GOOS == "windows" {
		t.Skip("shell.execute tests use Unix programs")
	}
	paths := slices.Clone(cfg.Allow)
	for _, p := range cfg.Programs {
		paths = append(paths, p.Path)
	}
	for _, a := range paths {
		if !filepath.IsAbs(a) {
			continue
		}
		if _, err := os.Stat(a); err != nil {
			t.Skipf("%s: %v", a, err)
		}
	}
	if environ == nil {
		environ = testEnviron
	}
	return newShell(cfg, environ, testLogger(t), time.Now)
}

// unsafePrograms allows each of paths with any arguments and standard input, marked
// unsafe: the tests that need a shell to stop or to fork.
func unsafePrograms(paths ...string) []ProgramConfig {
	out := make([]ProgramConfig, len(paths))
	for i, p := range paths {
		out[i] = ProgramConfig{Path: p, Stdin: true, Unsafe: true}
	}
	return out
}

// runShell runs s on input (encoded as JSON) and returns what it returned and output.
func runShell(ctx context.Context, t *testing.T, s *shell, input any) (Result, *recorder, error) {
	t.Helper()
	b, err := json.Marshal(input)
	if err != nil {
		t.Fatal(err)
	}
	out := newRecorder()
	res, err := s.Run(ctx, b, out)
	return res, out, err
}

// shellResult decodes res's JSON.
func shellResult(t *testing.T, res Result) ShellResult {
	t.Helper()
	var r ShellResult
	if err := json.Unmarshal(res.JSON, &r); err != nil {
		t.Fatalf("result JSON %s: %v", res.JSON, err)
	}
	return r
}

func TestShellExecute(t *testing.T) {
	t.Parallel()
	link := filepath.Join(t.TempDir(), "say")
	if err := os.Symlink("/bin/echo", link); err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		allow      []string
		input      ShellInput
		wantStdout string
		wantStderr string // a part of stderr; "" wants it empty
		wantCode   int
		wantError  string // Result.Error; "" wants success
	}{
		"echo streams to stdout": {
			allow:      []string{"/bin/echo"},
			input:      ShellInput{Argv: []string{"/bin/echo", "hi"}},
			wantStdout: "hi\n",
		},
		"bare name found on PATH": {
			allow:      []string{"/bin/echo"},
			input:      ShellInput{Argv: []string{"echo", "hi", "there"}},
			wantStdout: "hi there\n",
		},
		"a symbolic link to an allowed executable": {
			allow:      []string{"/bin/echo"},
			input:      ShellInput{Argv: []string{link, "linked"}},
			wantStdout: "linked\n",
		},
		"arguments are not interpreted by a shell": {
			allow:      []string{"/bin/echo"},
			input:      ShellInput{Argv: []string{"/bin/echo", "$HOME", "`id`;", "|", "*"}},
			wantStdout: "$HOME `id`; | *\n",
		},
		"stderr apart and a non-zero exit": {
			allow:      []string{"/bin/ls"},
			input:      ShellInput{Argv: []string{"/bin/ls", "/palyra-no-such-file"}},
			wantStderr: "palyra-no-such-file",
			wantCode:   2,
			wantError:  "exited with status 2",
		},
		"false": {
			allow:     []string{"/bin/false"},
			input:     ShellInput{Argv: []string{"false"}},
			wantCode:  1,
			wantError: "exited with status 1",
		},
		"stdin": {
			allow:      []string{"/bin/cat"},
			input:      ShellInput{Argv: []string{"/bin/cat"}, Stdin: "line one\nline two"},
			wantStdout: "line one\nline two",
		},
		"no stdin reads the null device": {
			allow: []string{"/bin/cat"},
			input: ShellInput{Argv: []string{"/bin/cat"}},
		},
		"large stdin": {
			allow:      []string{"/usr/bin/wc"},
			input:      ShellInput{Argv: []string{"/usr/bin/wc", "-c"}, Stdin: strings.Repeat("x", 1<<20)},
			wantStdout: "1048576\n",
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := newTestShell(t, ShellConfig{Allow: tt.allow}, nil)
			res, out, err := runShell(t.Context(), t, s, tt.input)
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if out.Stdout() != tt.wantStdout {
				t.Errorf("stdout %q, want %q", out.Stdout(), tt.wantStdout)
			}
			if stderr := out.Stderr(); tt.wantStderr == "" && stderr != "" || !strings.Contains(stderr, tt.wantStderr) {
				t.Errorf("stderr %q, want %q", stderr, tt.wantStderr)
			}
			if res.ExitCode != tt.wantCode || res.Failed != (tt.wantError != "") || res.Error != tt.wantError {
				t.Errorf("result %+v, want exit code %d and error %q", res, tt.wantCode, tt.wantError)
			}
			r := shellResult(t, res)
			outBytes := int64(len(out.Stdout()) + len(out.Stderr()))
			if r.ExitCode != tt.wantCode || r.OutputBytes != outBytes || r.OutputTruncated || r.TimedOut || r.Signal != "" ||
				r.DurationMS < 0 {
				t.Errorf("result JSON %s, want exit_code %d and output_bytes %d", res.JSON, tt.wantCode, outBytes)
			}
		})
	}
}

// TestShellExecuteRefused runs programs that must not run. Only /bin/echo is allowed;
// each input asks for something else, and would create a marker file if it ran.
func TestShellExecuteRefused(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	marker := filepath.Join(dir, "marker")
	touch := []string{"-c", "echo ran > " + marker}
	// A symbolic link named like the allowed program but leading to a shell, in a
	// directory the agent's PATH searches first.
	fake := t.TempDir()
	if err := os.Symlink("/bin/sh", filepath.Join(fake, "echo")); err != nil {
		t.Fatal(err)
	}
	fakeEnviron := []string{"PATH=" + fake + ":" + testPATH}
	if err := os.WriteFile(filepath.Join(dir, "script"), []byte("#!/bin/sh\necho ran > "+marker+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}

	tests := map[string]struct {
		input   any
		environ []string
		want    string // a part of the reason
	}{
		"an absolute path not allowed":      {input: ShellInput{Argv: append([]string{"/bin/sh"}, touch...)}, want: "not in the node's allow-list"},
		"a bare name not allowed":           {input: ShellInput{Argv: append([]string{"sh"}, touch...)}, want: "not in the node's allow-list"},
		"a relative path with ..":           {input: ShellInput{Argv: []string{"../bin/echo", "x"}, WorkDir: "/bin"}, want: `".."`},
		"an absolute path with ..":          {input: ShellInput{Argv: []string{"/bin/../bin/echo", "x"}}, want: `".."`},
		"a relative path":                   {input: ShellInput{Argv: []string{"bin/echo", "x"}, WorkDir: "/"}, want: "relative path"},
		"a dot path":                        {input: ShellInput{Argv: []string{"./echo", "x"}, WorkDir: "/bin"}, want: "relative path"},
		"a symlink to a shell named echo":   {input: ShellInput{Argv: append([]string{filepath.Join(fake, "echo")}, touch...)}, want: "not in the node's allow-list"},
		"a bare name found first elsewhere": {input: ShellInput{Argv: append([]string{"echo"}, touch...)}, environ: fakeEnviron, want: "not in the node's allow-list"},
		"a script not allowed":              {input: ShellInput{Argv: []string{filepath.Join(dir, "script")}}, want: "not in the node's allow-list"},
		"a missing program":                 {input: ShellInput{Argv: []string{"palyra-no-such-program"}}, want: "not found on PATH"},
		"an empty argv":                     {input: ShellInput{Argv: []string{}}, want: "argv is empty"},
		"no argv":                           {input: map[string]any{}, want: "argv is empty"},
		"an empty program":                  {input: ShellInput{Argv: []string{""}}, want: "argv[0] is empty"},
		"a shell string":                    {input: map[string]any{"argv": "/bin/echo hi; sh -c 'touch " + marker + "'"}, want: "invalid input"},
		"a command field":                   {input: map[string]any{"argv": []string{"/bin/echo"}, "command": "sh"}, want: "invalid input"},
		"a NUL byte":                        {input: ShellInput{Argv: []string{"/bin/echo", "a\x00b"}}, want: "NUL"},
		"an environment variable not allowed": {
			input: ShellInput{Argv: []string{"/bin/echo"}, Env: map[string]string{"LD_PRELOAD": "/tmp/x.so"}},
			want:  `"LD_PRELOAD" is not allowed`,
		},
		"PATH not allowed from the input": {
			input: ShellInput{Argv: []string{"echo"}, Env: map[string]string{"PATH": fake}},
			want:  `"PATH" is not allowed`,
		},
		"a relative work_dir": {input: ShellInput{Argv: []string{"/bin/echo"}, WorkDir: "tmp"}, want: "not an absolute path"},
		"a missing work_dir":  {input: ShellInput{Argv: []string{"/bin/echo"}, WorkDir: filepath.Join(dir, "nope")}, want: "work_dir"},
		"a file as work_dir":  {input: ShellInput{Argv: []string{"/bin/echo"}, WorkDir: "/bin/echo"}, want: "not a directory"},
		"a work_dir with ..":  {input: ShellInput{Argv: []string{"/bin/echo"}, WorkDir: dir + "/.."}, want: `".." is never allowed`},
		"a negative timeout":  {input: map[string]any{"argv": []string{"/bin/echo"}, "timeout_seconds": -1}, want: "timeout_seconds"},
		"a fractional timeout": {
			input: map[string]any{"argv": []string{"/bin/echo"}, "timeout_seconds": 1.5},
			want:  "invalid input",
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := newTestShell(t, ShellConfig{Allow: []string{"/bin/echo"}}, tt.environ)
			res, out, err := runShell(t.Context(), t, s, tt.input)
			wantRefused(t, err, ShellExecuteName, tt.want)
			if res.JSON != nil || out.Writes() != 0 {
				t.Errorf("result %+v, %d writes: something ran", res, out.Writes())
			}
		})
	}
	t.Cleanup(func() {
		if _, err := os.Stat(marker); err == nil {
			t.Error("a refused program ran: the marker exists")
		}
	})
}

func TestShellExecuteUnavailable(t *testing.T) {
	t.Parallel()
	tests := map[string][]string{
		"no allow-list":           nil,
		"an empty allow-list":     {},
		"only relative entries":   {"sh", "./bin/sh"},
		"nothing but empty names": {""},
	}
	for name, allow := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := newTestShell(t, ShellConfig{Allow: allow}, nil)
			if s.Describe().Available {
				t.Error("shell.execute is available with nothing allowed")
			}
			for _, argv := range [][]string{{"/bin/sh", "-c", "true"}, {"sh"}, {"/bin/echo"}} {
				_, out, err := runShell(t.Context(), t, s, ShellInput{Argv: argv})
				wantRefused(t, err, "not configured", "shell.allow")
				if out.Writes() != 0 {
					t.Error("something ran")
				}
			}
		})
	}
}

func TestShellExecuteEnv(t *testing.T) {
	t.Parallel()
	environ := []string{"PATH=/usr/bin:/bin", "HOME=/root", "PALYRA_SECRET=leak", "PALYRA_PASS=agent", "PALYRA_OTHER=x"}
	tests := map[string]struct {
		cfgEnv  []string
		environ []string
		env     map[string]string
		want    []string
	}{
		"PATH only": {
			environ: environ,
			want:    []string{"PATH=/usr/bin:/bin"},
		},
		"allowed names pass through": {
			cfgEnv:  []string{"PALYRA_PASS", "PALYRA_ABSENT"},
			environ: environ,
			want:    []string{"PALYRA_PASS=agent", "PATH=/usr/bin:/bin"},
		},
		"the input sets and overrides allowed names": {
			cfgEnv:  []string{"PALYRA_PASS", "PALYRA_SET"},
			environ: environ,
			env:     map[string]string{"PALYRA_PASS": "input", "PALYRA_SET": "a=b c"},
			want:    []string{"PALYRA_PASS=input", "PALYRA_SET=a=b c", "PATH=/usr/bin:/bin"},
		},
		"the input sets PATH when allowed": {
			cfgEnv:  []string{"PATH"},
			environ: environ,
			env:     map[string]string{"PATH": "/usr/bin"},
			want:    []string{"PATH=/usr/bin"},
		},
		"a default PATH when the agent has none": {
			environ: []string{"HOME=/root"},
			want:    []string{"PATH=" + defaultPATH},
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := newTestShell(t, ShellConfig{Programs: []ProgramConfig{{Path: "/usr/bin/env", Args: []ArgRule{{}}, WorkDirs: []string{"/"}}}, Env: tt.cfgEnv}, tt.environ)
			res, out, err := runShell(t.Context(), t, s, ShellInput{Argv: []string{"/usr/bin/env"}, Env: tt.env})
			if err != nil || res.Failed {
				t.Fatalf("Run = %+v, %v", res, err)
			}
			got := strings.Split(strings.TrimSuffix(out.Stdout(), "\n"), "\n")
			slices.Sort(got)
			if !slices.Equal(got, tt.want) {
				t.Errorf("environment %q, want %q", got, tt.want)
			}
		})
	}
}

func TestShellExecuteWorkDir(t *testing.T) {
	t.Parallel()
	def, other := t.TempDir(), t.TempDir()
	tests := map[string]struct {
		cfgDir string
		input  string
		want   string
	}{
		"the configured default":  {cfgDir: def, want: def},
		"the input's":             {cfgDir: def, input: other, want: other},
		"the input's, not clean":  {cfgDir: def, input: other + "/./", want: other},
		"os.TempDir when not set": {want: os.TempDir()},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := newTestShell(t, ShellConfig{Allow: []string{"/bin/pwd"}, WorkDir: tt.cfgDir}, nil)
			res, out, err := runShell(t.Context(), t, s, ShellInput{Argv: []string{"/bin/pwd"}, WorkDir: tt.input})
			if err != nil || res.Failed {
				t.Fatalf("Run = %+v, %v", res, err)
			}
			want, err := filepath.EvalSymlinks(tt.want)
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.TrimSpace(out.Stdout()); got != want {
				t.Errorf("working directory %q, want %q", got, want)
			}
		})
	}
}

func TestShellExecuteOutputCap(t *testing.T) {
	t.Parallel()
	s := newTestShell(t, ShellConfig{Allow: []string{"/usr/bin/head"}, MaxOutputBytes: 1000}, nil)
	res, out, err := runShell(t.Context(), t, s, ShellInput{Argv: []string{"/usr/bin/head", "-c", "100000", "/dev/zero"}})
	if err != nil || res.Failed {
		t.Fatalf("Run = %+v, %v", res, err)
	}
	if got := len(out.Stdout()); got != 1000 {
		t.Errorf("forwarded %d bytes, want 1000", got)
	}
	if r := shellResult(t, res); r.OutputBytes != 100000 || !r.OutputTruncated {
		t.Errorf("result %s, want output_bytes 100000 and output_truncated", res.JSON)
	}
}

// TestShellExecuteStops stops runs from outside (cancel, deadline) and at their own
// time limits, and checks what stopped them: the signal in the result, and a wait no
// shorter than the grace or limit it honours. Where SIGTERM alone must do, the grace is
// an hour, so that a run that needed the SIGKILL would not return in the test's time.
func TestShellExecuteStops(t *testing.T) {
	t.Parallel()
	const grace = 500 * time.Millisecond
	tests := map[string]struct {
		allow   []string
		grace   time.Duration // shell.kill_grace; 0: grace
		timeout time.Duration // shell.timeout; 0: default
		input   ShellInput
		ready   string        // stdout that says the program runs; the stop comes after it
		stop    string        // "cancel", "deadline" or "" (the run's own limit)
		min     time.Duration // least time from the stop to Run's return
		wantErr error         // nil: a timed-out result
		wantSig string
	}{
		"cancel stops sleep at once": {
			allow: []string{"/bin/sh"},
			grace: time.Hour,
			input: ShellInput{Argv: []string{"/bin/sh", "-c", "echo ready; exec /bin/sleep 7200"}},
			ready: "ready",
			stop:  "cancel", wantErr: context.Canceled,
		},
		"a deadline stops sleep at once": {
			allow: []string{"/bin/sleep"},
			grace: time.Hour,
			input: ShellInput{Argv: []string{"/bin/sleep", "7200"}},
			stop:  "deadline", wantErr: context.DeadlineExceeded,
		},
		"SIGTERM ignored: SIGKILL after the grace": {
			allow: []string{"/bin/sh"},
			input: ShellInput{Argv: []string{"/bin/sh", "-c", "trap '' TERM; echo ready; sleep 7200"}},
			ready: "ready",
			stop:  "cancel", min: grace, wantErr: context.Canceled,
		},
		"the input's timeout": {
			allow: []string{"/bin/sleep"},
			grace: time.Hour,
			input: ShellInput{Argv: []string{"/bin/sleep", "7200"}, TimeoutSeconds: 1},
			min:   time.Second - 200*time.Millisecond, wantSig: "SIGTERM",
		},
		"the node's timeout": {
			allow:   []string{"/bin/sleep"},
			grace:   time.Hour,
			timeout: 300 * time.Millisecond,
			input:   ShellInput{Argv: []string{"/bin/sleep", "7200"}, TimeoutSeconds: 3600},
			min:     100 * time.Millisecond, wantSig: "SIGTERM",
		},
		// The timeout leaves the shell ample time to set its trap on a busy machine:
		// a SIGTERM before that ends it, and the case would see no SIGKILL.
		"timeout and SIGTERM ignored": {
			allow:   []string{"/bin/sh"},
			timeout: 3 * time.Second,
			input:   ShellInput{Argv: []string{"/bin/sh", "-c", "trap '' TERM; sleep 7200"}},
			min:     3*time.Second + grace - 100*time.Millisecond,
			wantSig: "SIGKILL",
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			kill := grace
			if tt.grace != 0 {
				kill = tt.grace
			}
			s := newTestShell(t, ShellConfig{Programs: unsafePrograms(tt.allow...), KillGrace: Duration(kill), Timeout: Duration(tt.timeout)}, nil)
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			out := newRecorder()
			input, _ := json.Marshal(tt.input)
			type ran struct {
				res Result
				err error
				at  time.Time
			}
			done := make(chan ran, 1)
			start := time.Now()
			switch tt.stop {
			case "deadline":
				var c context.CancelFunc
				ctx, c = context.WithTimeout(ctx, 200*time.Millisecond)
				defer c()
			}
			go func() {
				res, err := s.Run(ctx, input, out)
				done <- ran{res, err, time.Now()}
			}()
			stopAt := start
			switch {
			case tt.stop == "cancel":
				waitCtx, c := context.WithTimeout(t.Context(), time.Minute)
				out.waitStdout(waitCtx, t, tt.ready)
				c()
				stopAt = time.Now()
				cancel()
			case tt.stop == "deadline":
				stopAt = start.Add(200 * time.Millisecond)
			}
			var r ran
			select {
			case r = <-done:
			case <-time.After(2 * time.Minute):
				t.Fatal("Run did not return")
			}
			took := r.at.Sub(stopAt)
			t.Logf("returned %v after the stop", took)
			if took < tt.min {
				t.Errorf("Run returned %v after the stop, want at least %v", took, tt.min)
			}
			if tt.wantErr != nil {
				if !errors.Is(r.err, tt.wantErr) {
					t.Fatalf("Run = %+v, %v; want %v", r.res, r.err, tt.wantErr)
				}
				return
			}
			if r.err != nil {
				t.Fatalf("Run: %v", r.err)
			}
			res := shellResult(t, r.res)
			if !r.res.Failed || !strings.HasPrefix(r.res.Error, "timed out after") || !res.TimedOut || res.Signal != tt.wantSig {
				t.Errorf("result %+v, JSON %s: want timed out by %s", r.res, r.res.JSON, tt.wantSig)
			}
		})
	}
}

// TestShellExecuteKillsGroup checks that no process a run started outlives it.
func TestShellExecuteKillsGroup(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("needs /proc")
	}
	const grace = 300 * time.Millisecond
	tests := map[string]struct {
		script  string // prints "pid=N" for its child N, and "ready" once that child is
		cancel  bool
		minTook time.Duration // least time from the cancel to Run's return
	}{
		// The shell waits for its child; the cancel reaches both.
		"children die with a cancelled run": {
			script: "(echo ready; exec sleep 60) & echo pid=$!; wait",
			cancel: true,
		},
		// The child ignores SIGTERM and keeps the output open, the shell exits on it: the
		// child is SIGKILLed after the grace.
		"a child that ignores SIGTERM": {
			script: "(trap '' TERM; echo ready; exec sleep 60) & echo pid=$!; wait",
			cancel: true, minTook: grace,
		},
		// The shell exits at once and leaves its child running: the child is killed when
		// the shell exits, and the run ends.
		"children left behind die when the program exits": {
			script: "(echo ready; touch started; exec sleep 60) & echo pid=$!; until [ -e started ]; do :; done",
		},
	}
	pidLine := regexp.MustCompile(`pid=(\d+)\n`)
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := newTestShell(t, ShellConfig{Programs: unsafePrograms("/bin/sh"), KillGrace: Duration(grace), WorkDir: t.TempDir()}, nil)
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			out := newRecorder()
			input, _ := json.Marshal(ShellInput{Argv: []string{"/bin/sh", "-c", tt.script}})
			type ran struct {
				res Result
				err error
				at  time.Time
			}
			done := make(chan ran, 1)
			start := time.Now()
			go func() {
				res, err := s.Run(ctx, input, out)
				done <- ran{res, err, time.Now()}
			}()
			waitCtx, c := context.WithTimeout(t.Context(), eventually.Deadline)
			out.waitStdout(waitCtx, t, "ready")
			for !pidLine.MatchString(out.Stdout()) {
				select {
				case <-out.notify:
				case <-waitCtx.Done():
					t.Fatalf("stdout %q never held the child's pid", out.Stdout())
				}
			}
			c()
			pid, err := strconv.Atoi(pidLine.FindStringSubmatch(out.Stdout())[1])
			if err != nil {
				t.Fatal(err)
			}
			stopAt := time.Now()
			if tt.cancel {
				cancel()
			}
			r := <-done
			t.Logf("Run returned %v after the start, %v after the cancel", r.at.Sub(start), r.at.Sub(stopAt))
			if tt.cancel && !errors.Is(r.err, context.Canceled) {
				t.Errorf("Run = %+v, %v; want context.Canceled", r.res, r.err)
			}
			if !tt.cancel && (r.err != nil || r.res.Failed) {
				t.Errorf("Run = %+v, %v; want success", r.res, r.err)
			}
			// Without a cancel the run may end before the test has read the pid.
			if took := r.at.Sub(stopAt); tt.cancel && took < tt.minTook {
				t.Errorf("Run returned %v after the cancel, want at least %v", took, tt.minTook)
			}
			waitGone(t, pid)
		})
	}
}

// TestShellExecuteEscapedChild checks that a process that leaves the run's group (a new
// session) and keeps its output open does not hold the run up: Run returns after
// drainTimeout, not when the escaped child (two hours of sleep) closes its output.
func TestShellExecuteEscapedChild(t *testing.T) {
	t.Parallel()
	s := newTestShell(t, ShellConfig{Programs: unsafePrograms("/bin/sh")}, nil)
	if _, err := os.Stat("/usr/bin/setsid"); err != nil {
		t.Skip("no setsid")
	}
	pidFile := filepath.Join(t.TempDir(), "pid")
	// The escaped child writes its pid once it is in its own session; the shell exits
	// once it has.
	script := "/usr/bin/setsid /bin/sh -c 'echo $$ > " + pidFile + "; exec /bin/sleep 7200' & " +
		"until [ -s " + pidFile + " ]; do :; done"
	type ran struct {
		res Result
		err error
	}
	done := make(chan ran, 1)
	start := time.Now()
	go func() {
		res, _, err := runShell(t.Context(), t, s, ShellInput{Argv: []string{"/bin/sh", "-c", script}})
		done <- ran{res, err}
	}()
	var r ran
	held := false
	select {
	case r = <-done:
	case <-time.After(2 * time.Minute):
		held = true
	}
	took := time.Since(start)
	if b, rerr := os.ReadFile(pidFile); rerr == nil {
		if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); perr == nil {
			if p, ferr := os.FindProcess(pid); ferr == nil {
				_ = p.Kill() // the test's own escaped process
			}
		}
	}
	if held {
		<-done
		t.Fatalf("the escaped child still held the run up after %v", took)
	}
	if r.err != nil || r.res.Failed {
		t.Fatalf("Run = %+v, %v", r.res, r.err)
	}
	t.Logf("Run took %v", took)
	if took < drainTimeout {
		t.Errorf("Run took %v with an escaped child, want at least drainTimeout (%v)", took, drainTimeout)
	}
}

// waitGone waits until pid is gone or a zombie (a killed orphan is a zombie until
// whoever adopted it reaps it).
func waitGone(t *testing.T, pid int) {
	t.Helper()
	eventually.NoError(t, fmt.Sprintf("process %d gone after the run ended", pid), func() error {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return nil
		}
		state := ""
		if i := bytes.LastIndexByte(b, ')'); i >= 0 {
			if f := strings.Fields(string(b[i+1:])); len(f) > 0 {
				state = f[0]
			}
		}
		if state == "Z" || state == "X" {
			return nil
		}
		return fmt.Errorf("it is in state %q", state)
	})
}

func TestShellExecuteCancelledBeforeStart(t *testing.T) {
	t.Parallel()
	marker := filepath.Join(t.TempDir(), "marker")
	s := newTestShell(t, ShellConfig{Programs: unsafePrograms("/bin/sh")}, nil)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, out, err := runShell(ctx, t, s, ShellInput{Argv: []string{"/bin/sh", "-c", "echo ran > " + marker}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want context.Canceled", err)
	}
	if _, err := os.Stat(marker); err == nil || out.Writes() != 0 {
		t.Error("the program ran")
	}
}
