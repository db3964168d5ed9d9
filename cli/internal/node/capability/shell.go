package capability

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"
)

// ShellExecuteName is the name of the shell.execute capability.
const ShellExecuteName = "shell.execute"

// shellExecuteSchema is shell.execute's input; ShellInput documents it.
const shellExecuteSchema = `{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "shell.execute input",
  "type": "object",
  "properties": {
    "argv": {
      "description": "The program and its arguments; never a shell string. argv[0] is an absolute path or a bare name looked up on PATH, and must be allowed by the node, with arguments its rules for that program allow.",
      "type": "array",
      "items": {"type": "string"},
      "minItems": 1
    },
    "work_dir": {
      "description": "Absolute working directory, without \"..\"; default: the node's. A program the node pins to directories runs only in one of them (the first by default).",
      "type": "string"
    },
    "env": {
      "description": "Environment variables to set; only names the node allows.",
      "type": "object",
      "additionalProperties": {"type": "string"}
    },
    "stdin": {
      "description": "Text written to the program's standard input; none when absent.",
      "type": "string"
    },
    "timeout_seconds": {
      "description": "Longest the run may last; the node's own limit and the dispatch's deadline apply too.",
      "type": "integer",
      "minimum": 1
    }
  },
  "required": ["argv"],
  "additionalProperties": false
}`

// ShellInput is shell.execute's input.
type ShellInput struct {
	// Argv is the program and its arguments. argv[0] is either exactly an allowed
	// absolute path (or a path that resolves through symbolic links to the same file as
	// an allowed one), or a bare name whose first match on the run's PATH resolves to
	// an allowed executable. Relative paths and ".." are refused. The program started is
	// always the allowed entry itself, with it as argv[0]; the other arguments must fit
	// its rules in node.toml, if it has any.
	Argv []string `json:"argv"`
	// WorkDir is the working directory, absolute, existing and without ".."; default
	// the node's shell.work_dir. A program whose [[shell.program]] table pins work_dirs
	// runs only in one of those (the first by default): WorkDir must be one of them, or
	// lead to the same directory through symbolic links, and the run starts in the
	// pinned path itself.
	WorkDir string `json:"work_dir,omitempty"`
	// Env sets environment variables; each name must be in the node's shell.env.
	Env map[string]string `json:"env,omitempty"`
	// Stdin is written to the program's standard input, which is then closed; without
	// it the standard input is the null device. A program of a [[shell.program]] table
	// takes it only with stdin = true there.
	Stdin string `json:"stdin,omitempty"`
	// TimeoutSeconds shortens the node's shell.timeout for this run.
	TimeoutSeconds int64 `json:"timeout_seconds,omitempty"`
}

// ShellResult is shell.execute's result.
type ShellResult struct {
	// ExitCode is the program's exit status, or 128 plus the signal's number when a
	// signal ended it (as a shell reports it).
	ExitCode int `json:"exit_code"`
	// Signal names the signal that ended the program, if one did.
	Signal string `json:"signal,omitempty"`
	// DurationMS is how long the run lasted, in milliseconds.
	DurationMS int64 `json:"duration_ms"`
	// OutputBytes counts the output the program wrote, stdout and stderr together,
	// including what was dropped beyond shell.max_output_bytes.
	OutputBytes int64 `json:"output_bytes"`
	// OutputTruncated is true when output was dropped beyond shell.max_output_bytes.
	OutputTruncated bool `json:"output_truncated,omitempty"`
	// TimedOut is true when the run was stopped at its own time limit (the input's
	// timeout_seconds or the node's shell.timeout).
	TimedOut bool `json:"timed_out,omitempty"`
}

const (
	// defaultPATH is the PATH of a run when the agent has none.
	defaultPATH = "/usr/local/bin:/usr/bin:/bin"
	// copyBufferSize is the read size of each output stream: output is forwarded as it
	// comes, in chunks of at most this size, never held back for whole lines.
	copyBufferSize = 32 << 10
	// drainTimeout bounds the wait for the end of a run's output once its whole process
	// group is dead: output still open then belongs to a process that left the group
	// (setsid), and is abandoned.
	drainTimeout = time.Second
)

// shell is the shell.execute capability: it starts an allowed executable with an argv
// its rules allow, in its own process group, streams its stdout and stderr to the
// Output, and stops the group (SIGTERM, then SIGKILL after the grace) when the dispatch
// is cancelled or a time limit passes. When the program exits, whatever it left running
// in its process group is killed: nothing a dispatch started outlives it (but a process
// that leaves the group).
type shell struct {
	allow     []string            // absolute paths of the allowed executables; empty: unavailable
	programs  map[string]*program // what each of allow may be given, by its path
	workDir   string
	env       []string // names passed through and settable
	timeout   time.Duration
	maxOutput int64
	killGrace time.Duration
	environ   []string // the agent's environment, "NAME=value"
	log       *slog.Logger
	now       func() time.Time
}

var _ Capability = (*shell)(nil)

// newShell returns shell.execute configured by cfg, passing variables through from
// environ (os.Environ() but in tests). Zero settings take their defaults; allowed
// executables that are not absolute paths, rules that do not compile, and relative
// work_dir and work_dirs are ignored with a warning (LoadConfig resolves and validates
// them; a program left with no pinned directory runs nowhere). Each program that can
// run other programs is logged: as refused, or as unsafe. now nil means time.Now.
func newShell(cfg ShellConfig, environ []string, log *slog.Logger, now func() time.Time) *shell {
	if now == nil {
		now = time.Now
	}
	s := &shell{
		programs:  map[string]*program{},
		workDir:   cfg.WorkDir,
		env:       slices.Clone(cfg.Env),
		timeout:   time.Duration(cfg.Timeout),
		maxOutput: cfg.MaxOutputBytes,
		killGrace: time.Duration(cfg.KillGrace),
		environ:   environ,
		log:       log,
		now:       now,
	}
	// The [[shell.program]] tables come first: an executable also in the allow-list
	// (which LoadConfig refuses) keeps its rules.
	add := func(p *program) {
		if !filepath.IsAbs(p.path) {
			log.Warn("shell.execute: ignoring an allowed executable that is not an absolute path", "executable", p.path)
			return
		}
		p.path = filepath.Clean(p.path)
		if prev, dup := s.programs[p.path]; dup {
			if !prev.plain() || !p.plain() { // a repeat in the allow-list changes nothing
				log.Warn("shell.execute: ignoring an executable listed again", "executable", p.path)
			}
			return
		}
		s.allow = append(s.allow, p.path)
		s.programs[p.path] = p
	}
	for _, pc := range cfg.Programs {
		p := &program{path: pc.Path, stdin: pc.Stdin, unsafe: pc.Unsafe}
		if pc.Args != nil {
			p.rules = []ArgRule{}
		}
		if pc.WorkDirs != nil {
			p.workDirs = []string{}
		}
		for _, d := range pc.WorkDirs {
			if !filepath.IsAbs(d) {
				log.Warn("shell.execute: ignoring a work_dirs entry that is not absolute", "executable", pc.Path, "work_dir", d)
				continue
			}
			p.workDirs = append(p.workDirs, filepath.Clean(d))
		}
		for i, r := range pc.Args {
			c, err := r.compiled()
			if err != nil {
				log.Warn("shell.execute: ignoring an argument list that does not compile", "executable", pc.Path, "args", i, "err", err)
				continue
			}
			p.rules = append(p.rules, c)
		}
		add(p)
	}
	for _, a := range cfg.Allow {
		add(&program{path: a, stdin: true})
	}
	known := scanExecutors(append(filepath.SplitList(envValue(environ, "PATH")), systemDirs...))
	for _, path := range s.allow {
		p := s.programs[path]
		p.runsName, p.runs = runsPrograms(path, known)
		switch {
		case p.runs == "":
		case p.unsafe:
			log.Warn("shell.execute: a program that can run other programs is marked unsafe: whoever may dispatch to this node can run anything as this agent's user",
				"executable", path, "program", p.runsName, "how", p.runs)
		case p.refusal() != "":
			log.Warn("shell.execute: refusing every run of a program that can run other programs: "+p.refusal(),
				"executable", path, "program", p.runsName, "how", p.runs)
		}
	}
	if s.workDir == "" || !filepath.IsAbs(s.workDir) {
		if s.workDir != "" {
			log.Warn("shell.execute: ignoring a work_dir that is not absolute", "work_dir", s.workDir)
		}
		s.workDir = os.TempDir()
	}
	s.env = slices.DeleteFunc(s.env, func(n string) bool { return !envnamePattern.MatchString(n) })
	if s.timeout <= 0 {
		s.timeout = DefaultShellTimeout
	}
	if s.maxOutput <= 0 {
		s.maxOutput = DefaultMaxOutputBytes
	}
	if s.killGrace <= 0 {
		s.killGrace = DefaultKillGrace
	}
	return s
}

// Describe implements Capability.
func (s *shell) Describe() Descriptor {
	return Descriptor{
		Name:        ShellExecuteName,
		Description: "Runs an executable allowed by the node with an argv (never a shell string), streaming its stdout and stderr.",
		InputSchema: json.RawMessage(shellExecuteSchema),
		Available:   len(s.allow) > 0,
	}
}

// Run implements Capability.
func (s *shell) Run(ctx context.Context, input json.RawMessage, out Output) (Result, error) {
	if len(s.allow) == 0 {
		return Result{}, refusef("%s is not configured on this node: no executable is allowed (shell.allow or [[shell.program]] in %s)",
			ShellExecuteName, ConfigFile)
	}
	var in ShellInput
	if err := decodeInput(ShellExecuteName, input, &in); err != nil {
		return Result{}, err
	}
	if len(in.Argv) == 0 {
		return Result{}, refusef("%s: argv is empty", ShellExecuteName)
	}
	for _, a := range in.Argv {
		if strings.IndexByte(a, 0) >= 0 {
			return Result{}, refusef("%s: argv holds a NUL byte", ShellExecuteName)
		}
	}
	if in.TimeoutSeconds < 0 {
		return Result{}, refusef("%s: timeout_seconds must be positive", ShellExecuteName)
	}
	env, err := s.environment(in.Env)
	if err != nil {
		return Result{}, err
	}
	path, err := s.resolve(in.Argv[0], envValue(env, "PATH"))
	if err != nil {
		return Result{}, err
	}
	p := s.programs[path]
	if err := p.check(in.Argv[1:], in.Stdin != ""); err != nil {
		return Result{}, err
	}
	dir, err := p.workDir(in.WorkDir, s.workDir)
	if err != nil {
		return Result{}, err
	}
	timeout := s.timeout
	if in.TimeoutSeconds > 0 && in.TimeoutSeconds <= int64(timeout/time.Second) {
		timeout = time.Duration(in.TimeoutSeconds) * time.Second
	}
	if out == nil {
		out = discardOutput{}
	}
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	argv := append([]string{path}, in.Argv[1:]...)
	return s.run(ctx, runSpec{path: path, argv: argv, dir: dir, env: env, stdin: in.Stdin, timeout: timeout}, out)
}

// resolve returns the allowed executable argv0 names, or a *RefusedError. pathEnv is
// the run's PATH, where a bare name is looked up.
func (s *shell) resolve(argv0, pathEnv string) (string, error) {
	refuse := func(why string) error {
		return refusef("%s: %q is not allowed: %s", ShellExecuteName, argv0, why)
	}
	var candidate string
	switch {
	case argv0 == "":
		return "", refusef("%s: argv[0] is empty", ShellExecuteName)
	case hasDotDot(argv0):
		return "", refuse(`a path with ".." is never allowed`)
	case filepath.IsAbs(argv0):
		candidate = filepath.Clean(argv0)
	case strings.ContainsFunc(argv0, isPathSeparator):
		return "", refuse("a relative path is never allowed; give an absolute path or a bare name")
	default:
		p, ok := lookPath(argv0, pathEnv)
		if !ok {
			return "", refuse("not found on PATH")
		}
		candidate = p
	}
	if slices.Contains(s.allow, candidate) {
		return candidate, nil
	}
	// Not the allowed path itself: allowed when it is the same file as an allowed entry
	// once symbolic links are resolved (e.g. /usr/bin/echo for /bin/echo where /bin
	// links to /usr/bin). The entry, not argv0, is what runs: swapping argv0's links
	// afterwards changes nothing, and a multi-call binary sees the allowed name.
	real, err := filepath.EvalSymlinks(candidate)
	if err != nil {
		return "", refuse("not in the node's allow-list (shell.allow)")
	}
	for _, a := range s.allow {
		if r, err := filepath.EvalSymlinks(a); err == nil && r == real {
			return a, nil
		}
	}
	return "", refuse("not in the node's allow-list (shell.allow)")
}

// program is what shell.execute may do with one allowed executable.
type program struct {
	path     string    // the allowed executable, absolute
	rules    []ArgRule // the argument lists allowed, compiled; nil: any arguments
	stdin    bool      // whether a run may give it standard input
	unsafe   bool      // allowed although it can run other programs
	workDirs []string  // where it may run, the first by default; nil: anywhere
	runsName string    // the program it was recognised as, when it can run others
	runs     string    // how it can run other programs; "" when it is not known to
}

// plain reports whether p is what an allow-list entry allows: any arguments and stdin,
// anywhere.
func (p *program) plain() bool { return p.rules == nil && p.stdin && !p.unsafe && p.workDirs == nil }

// maxRulesShown bounds the argument lists a refusal quotes.
const maxRulesShown = 4

// refusal says why every run of p is refused: it can run other programs, and node.toml
// neither marks it unsafe nor restricts it to literal argument lists and pinned working
// directories (what such a program runs depends on its directory: a makefile, a
// repository's hooks and settings, a script named by a relative path). "" otherwise.
func (p *program) refusal() string {
	name, why := p.runsName, p.runs
	if why == "" {
		// Not recognised when node.toml was read; its symbolic links may lead elsewhere
		// now.
		name, why = runsPrograms(p.path, nil)
	}
	switch {
	case why == "" || p.unsafe:
		return ""
	case p.rules == nil:
		return fmt.Sprintf("%s can run other programs (%s), so node.toml must restrict it to literal argument lists "+
			"(a [[shell.program]] table with args) or mark it unsafe", name, why)
	case slices.ContainsFunc(p.rules, func(r ArgRule) bool { return !r.literal() }):
		return fmt.Sprintf("%s can run other programs (%s), and its argument lists in node.toml hold patterns, "+
			"which such a program may have only when marked unsafe", name, why)
	case p.workDirs == nil:
		return fmt.Sprintf("%s can run other programs (%s), and its working directory can decide what it runs "+
			"(a makefile, a repository's hooks, a script named by a relative path), so node.toml must pin where "+
			"it runs (work_dirs in its [[shell.program]] table) or mark it unsafe", name, why)
	}
	return ""
}

// check refuses a run of p with args (argv without argv[0]) and, when stdin is set,
// standard input, with a *RefusedError that says why; nil allows it.
func (p *program) check(args []string, stdin bool) error {
	if why := p.refusal(); why != "" {
		return refusef("%s: %s is not allowed on this node: %s", ShellExecuteName, p.path, why)
	}
	if p.rules != nil && !slices.ContainsFunc(p.rules, func(r ArgRule) bool { return r.match(args) }) {
		forms := make([]string, 0, maxRulesShown)
		for _, r := range p.rules[:min(len(p.rules), maxRulesShown)] {
			forms = append(forms, r.format(filepath.Base(p.path)))
		}
		more := ""
		if n := len(p.rules) - maxRulesShown; n > 0 {
			more = fmt.Sprintf(" (and %d more)", n)
		}
		return refusef("%s: these arguments of %s are not allowed on this node; its rules in %s allow only: %s%s",
			ShellExecuteName, p.path, ConfigFile, strings.Join(forms, "; "), more)
	}
	if stdin && !p.stdin {
		return refusef("%s: %s takes no standard input on this node (its [[shell.program]] table in %s does not set stdin = true)",
			ShellExecuteName, p.path, ConfigFile)
	}
	return nil
}

// workDir returns the directory a run of p starts in, given the request's work_dir req
// (may be empty) and the node's default def, or a *RefusedError. A pinned program runs
// in the pinned path that req leads to (os.SameFile, so through symbolic links), never
// in req itself: retargeting a link in req afterwards changes nothing.
func (p *program) workDir(req, def string) (string, error) {
	switch {
	case strings.IndexByte(req, 0) >= 0:
		return "", refusef("%s: work_dir holds a NUL byte", ShellExecuteName)
	case hasDotDot(req):
		return "", refusef("%s: work_dir %q: %s", ShellExecuteName, req, dotDotAmbiguous)
	case p.workDirs == nil:
		dir := cmp.Or(req, def)
		if _, err := checkDir(dir); err != nil {
			return "", refusef("%s: work_dir: %v", ShellExecuteName, err)
		}
		return filepath.Clean(dir), nil
	case len(p.workDirs) == 0:
		return "", refusef("%s: %s may run in no directory on this node: its work_dirs in %s name none that is absolute",
			ShellExecuteName, p.path, ConfigFile)
	}
	pinned := func(d string) (string, error) {
		if _, err := checkPinnedDir(d); err != nil {
			return "", refusef("%s: %s may run only in the directories %s pins it to, and this one cannot be used: %v",
				ShellExecuteName, p.path, ConfigFile, err)
		}
		return d, nil
	}
	if req == "" {
		return pinned(p.workDirs[0])
	}
	info, err := checkDir(req)
	if err != nil {
		return "", refusef("%s: work_dir: %v", ShellExecuteName, err)
	}
	for _, d := range p.workDirs {
		if pi, err := os.Stat(d); err == nil && os.SameFile(info, pi) {
			return pinned(d)
		}
	}
	where := fmt.Sprintf("%q", req)
	if real, err := filepath.EvalSymlinks(req); err == nil && real != filepath.Clean(req) {
		where += " (which leads to " + real + ")"
	}
	pins := p.workDirs[0]
	if len(p.workDirs) > 1 {
		pins = "one of " + strings.Join(p.workDirs, ", ")
	}
	return "", refusef("%s: %s may not run in %s on this node: its [[shell.program]] table in %s pins it to %s",
		ShellExecuteName, p.path, where, ConfigFile, pins)
}

// isPathSeparator reports whether r separates path components here ('/' everywhere).
func isPathSeparator(r rune) bool { return r == '/' || r == filepath.Separator }

// lookPath finds the executable name on pathEnv as exec.LookPath does on the agent's
// PATH, except that relative directories of pathEnv are skipped: a run never starts a
// program from its working directory by accident.
func lookPath(name, pathEnv string) (string, bool) {
	for _, dir := range filepath.SplitList(pathEnv) {
		if !filepath.IsAbs(dir) {
			continue
		}
		p := filepath.Join(dir, name)
		info, err := os.Stat(p)
		if err != nil || !info.Mode().IsRegular() {
			continue
		}
		if runtime.GOOS == "windows" || info.Mode().Perm()&0o111 != 0 {
			return p, true
		}
	}
	return "", false
}

// environment returns the environment of a run, sorted: PATH from the agent (or
// defaultPATH), the allowed names the agent has, then req's variables, each of which
// must be allowed.
func (s *shell) environment(req map[string]string) ([]string, error) {
	agent := make(map[string]string, len(s.environ))
	for _, kv := range s.environ {
		if k, v, ok := strings.Cut(kv, "="); ok && k != "" {
			agent[k] = v
		}
	}
	env := map[string]string{"PATH": defaultPATH}
	if p, ok := agent["PATH"]; ok {
		env["PATH"] = p
	}
	for _, name := range s.env {
		if v, ok := agent[name]; ok {
			env[name] = v
		}
	}
	for name, v := range req {
		if !slices.Contains(s.env, name) {
			return nil, refusef("%s: environment variable %q is not allowed (shell.env in %s lists those a request may set)",
				ShellExecuteName, name, ConfigFile)
		}
		if codeEnv(name) {
			return nil, refusef("%s: environment variable %q may not be set by a request: programs read it as code, "+
				"commands or options (it only passes through from the agent's environment)", ShellExecuteName, name)
		}
		if strings.IndexByte(v, 0) >= 0 {
			return nil, refusef("%s: environment variable %q holds a NUL byte", ShellExecuteName, name)
		}
		env[name] = v
	}
	kvs := make([]string, 0, len(env))
	for k, v := range env {
		kvs = append(kvs, k+"="+v)
	}
	slices.Sort(kvs)
	return kvs, nil
}

// envValue returns the value of name in env ("NAME=value" entries).
func envValue(env []string, name string) string {
	for _, kv := range env {
		if k, v, _ := strings.Cut(kv, "="); k == name {
			return v
		}
	}
	return ""
}

// runSpec is one checked run.
type runSpec struct {
	path    string // the allowed executable
	argv    []string
	dir     string
	env     []string
	stdin   string
	timeout time.Duration
}

// run starts spec and waits for it, as described on shell.
func (s *shell) run(ctx context.Context, spec runSpec, out Output) (Result, error) {
	runCtx, cancel := context.WithTimeout(ctx, spec.timeout)
	defer cancel()

	// The pipes are made here rather than by exec.Cmd, so that Wait returns when the
	// program exits rather than when the last holder of its output does, and so that
	// the reading ends can be abandoned.
	stdoutR, stdoutW, err := os.Pipe()
	if err != nil {
		return Result{}, fmt.Errorf("%s: %w", ShellExecuteName, err)
	}
	defer stdoutR.Close()
	stderrR, stderrW, err := os.Pipe()
	if err != nil {
		stdoutW.Close()
		return Result{}, fmt.Errorf("%s: %w", ShellExecuteName, err)
	}
	defer stderrR.Close()
	cmd := &exec.Cmd{
		Path:        spec.path,
		Args:        spec.argv,
		Env:         spec.env,
		Dir:         spec.dir,
		Stdout:      stdoutW,
		Stderr:      stderrW,
		SysProcAttr: processGroupAttr(),
	}
	var stdinR, stdinW *os.File
	if spec.stdin != "" {
		if stdinR, stdinW, err = os.Pipe(); err != nil {
			stdoutW.Close()
			stderrW.Close()
			return Result{}, fmt.Errorf("%s: %w", ShellExecuteName, err)
		}
		cmd.Stdin = stdinR
	}
	start := s.now()
	err = cmd.Start()
	// The child has its copies; the parent keeps only the ends it uses.
	stdoutW.Close()
	stderrW.Close()
	if stdinR != nil {
		stdinR.Close()
	}
	if err != nil {
		if stdinW != nil {
			stdinW.Close()
		}
		return Result{}, fmt.Errorf("%s: start %s: %w", ShellExecuteName, spec.path, err)
	}
	proc := cmd.Process
	s.log.Debug("shell.execute: started", "path", spec.path, "pid", proc.Pid, "dir", spec.dir)

	lim := &outputLimiter{out: out, max: s.maxOutput}
	var copiers sync.WaitGroup
	copiers.Go(func() { lim.copy(Stdout, stdoutR) })
	copiers.Go(func() { lim.copy(Stderr, stderrR) })
	var closeStdin func()
	if stdinW != nil {
		var once sync.Once
		closeStdin = func() { once.Do(func() { stdinW.Close() }) }
		go func() { // the stdin writer: ends at EOF, or when the program is gone
			_, _ = io.WriteString(stdinW, spec.stdin)
			closeStdin()
		}()
	}
	exited := make(chan struct{}) // closed once the program is reaped
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	drained := make(chan struct{}) // closed once both output streams ended
	go func() {
		copiers.Wait()
		close(drained)
	}()

	stopped := false // whether the run was stopped (cancel, deadline or timeout)
	select {
	case <-exited:
	case <-runCtx.Done():
		stopped = true
		s.terminate(proc, exited, drained)
	}
	// Whatever is left in the group (background children of a program that exited, or
	// processes that survived the grace) is killed.
	if err := killGroup(proc); err != nil {
		s.log.Warn("shell.execute: kill the process group", "pid", proc.Pid, "err", err)
	}
	<-exited
	if closeStdin != nil {
		closeStdin()
	}
	select {
	case <-drained:
	case <-time.After(drainTimeout):
		s.log.Warn("shell.execute: output still open after the process group ended; abandoning it", "pid", proc.Pid)
		stdoutR.Close()
		stderrR.Close()
		<-drained
	}
	elapsed := s.now().Sub(start)

	if stopped && ctx.Err() != nil {
		return Result{}, fmt.Errorf("%s: stopped: %w", ShellExecuteName, ctx.Err())
	}
	total, truncated := lim.counts()
	res := ShellResult{
		DurationMS:      elapsed.Milliseconds(),
		OutputBytes:     total,
		OutputTruncated: truncated,
		TimedOut:        stopped,
	}
	var exitErr *exec.ExitError
	if waitErr != nil && !errors.As(waitErr, &exitErr) {
		return Result{}, fmt.Errorf("%s: wait for %s: %w", ShellExecuteName, spec.path, waitErr)
	}
	res.ExitCode, res.Signal = exitStatus(cmd.ProcessState)
	s.log.Debug("shell.execute: ended", "path", spec.path, "pid", proc.Pid, "exit_code", res.ExitCode,
		"signal", res.Signal, "timed_out", res.TimedOut, "duration", elapsed, "output_bytes", total)
	b, err := json.Marshal(res)
	if err != nil {
		return Result{}, fmt.Errorf("%s: encode the result: %w", ShellExecuteName, err)
	}
	r := Result{JSON: b, ExitCode: res.ExitCode}
	switch {
	case stopped:
		r.Failed, r.Error = true, fmt.Sprintf("timed out after %v", spec.timeout)
	case res.Signal != "":
		r.Failed, r.Error = true, fmt.Sprintf("killed by signal %s", res.Signal)
	case res.ExitCode != 0:
		r.Failed, r.Error = true, fmt.Sprintf("exited with status %d", res.ExitCode)
	}
	return r, nil
}

// terminate stops a run's process group: SIGTERM, then SIGKILL once the grace has passed
// unless the program has exited and its output ended by then (which means the rest of
// the group is gone too, or has let go of the output).
func (s *shell) terminate(proc *os.Process, exited, drained <-chan struct{}) {
	if err := terminateGroup(proc); err != nil {
		s.log.Warn("shell.execute: terminate the process group", "pid", proc.Pid, "err", err)
	}
	grace := time.NewTimer(s.killGrace)
	defer grace.Stop()
	for exited != nil || drained != nil {
		select {
		case <-exited:
			exited = nil
		case <-drained:
			drained = nil
		case <-grace.C:
			s.log.Warn("shell.execute: still running after the grace; killing the process group",
				"pid", proc.Pid, "grace", s.killGrace)
			return
		}
	}
}

// outputLimiter forwards a run's output to an Output up to max bytes, counting all of
// it. The two copiers (stdout and stderr) share it.
type outputLimiter struct {
	out Output
	max int64

	mu    sync.Mutex // guards the following
	total int64      // bytes the program wrote
	sent  int64      // bytes forwarded
}

// copy forwards r to stream until r ends; it runs on the stream's copier goroutine.
func (l *outputLimiter) copy(stream Stream, r io.Reader) {
	buf := make([]byte, copyBufferSize)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			l.write(stream, buf[:n])
		}
		if err != nil {
			return
		}
	}
}

func (l *outputLimiter) write(stream Stream, p []byte) {
	l.mu.Lock()
	l.total += int64(len(p))
	n := min(int64(len(p)), l.max-l.sent)
	if n > 0 {
		l.sent += n
	}
	l.mu.Unlock()
	if n > 0 {
		l.out.Write(stream, p[:n])
	}
}

// counts returns the bytes written and whether some were dropped.
func (l *outputLimiter) counts() (total int64, truncated bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total, l.total > l.sent
}

// discardOutput drops output.
type discardOutput struct{}

// Write implements Output.
func (discardOutput) Write(Stream, []byte) {}
