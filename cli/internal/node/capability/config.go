package capability

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
)

// ConfigFile is the name of the capabilities' configuration file in the node's state
// directory.
const ConfigFile = "node.toml"

// Defaults of node.toml.
const (
	// DefaultShellTimeout is the longest a shell.execute run lasts.
	DefaultShellTimeout = 10 * time.Minute
	// DefaultMaxOutputBytes is the output a shell.execute run forwards.
	DefaultMaxOutputBytes = 16 << 20
	// DefaultKillGrace is the time between SIGTERM and SIGKILL.
	DefaultKillGrace = 5 * time.Second
	// DefaultMaxFileBytes is the most filesystem.read returns at once.
	DefaultMaxFileBytes = 512 << 10
	// MaxFileBytesLimit bounds filesystem.max_bytes: the content travels base64-encoded
	// (a third larger) in a result of at most 1 MiB (DispatchResult.result_json).
	MaxFileBytesLimit = 700 << 10
	// DefaultLLMTimeout is the longest an llm.chat or llm.embed request lasts.
	DefaultLLMTimeout = 10 * time.Minute
	// DefaultLLMMaxConcurrent is how many requests llm.chat and llm.embed forward at once.
	DefaultLLMMaxConcurrent = 4
	// MaxLLMConcurrent bounds llm.max_concurrent.
	MaxLLMConcurrent = 1024
)

// Config is node.toml: what the built-in capabilities may do on this node. Its zero
// value is valid and allows nothing but system.info; a zero setting means its default.
type Config struct {
	// Shell configures shell.execute.
	Shell ShellConfig `toml:"shell"`
	// Filesystem configures filesystem.read.
	Filesystem FilesystemConfig `toml:"filesystem"`
	// LLM configures llm.chat and llm.embed.
	LLM LLMConfig `toml:"llm"`
	// Browser configures browser.navigate and browser.screenshot.
	Browser BrowserConfig `toml:"browser"`
}

// ShellConfig configures shell.execute.
type ShellConfig struct {
	// Allow lists the executables a run may start with any arguments: absolute paths,
	// or bare names that LoadConfig resolves on the agent's PATH to absolute paths. A
	// program that can run other programs (a shell, an interpreter, find, make, sed,
	// env, ...; see executors.go) is refused here: it needs a Programs entry. With
	// Programs empty too, every run is refused (shell.execute is then unavailable).
	Allow []string `toml:"allow"`
	// Programs lists executables a run may start with the arguments their rules allow
	// (node.toml's [[shell.program]] tables).
	Programs []ProgramConfig `toml:"program"`
	// WorkDir is the default working directory of a run (absolute) of a program
	// without WorkDirs; default os.TempDir().
	WorkDir string `toml:"work_dir"`
	// Env names the environment variables passed through from the agent's environment,
	// besides PATH which always is; a run's input may set these names (and only these)
	// too, but for those programs read as code, commands or options (codeEnv), which
	// only pass through. Nothing else reaches the program.
	Env []string `toml:"env"`
	// Timeout is the upper bound of a run (default 10m); the input may ask for less, and
	// the dispatch's deadline also applies.
	Timeout Duration `toml:"timeout"`
	// MaxOutputBytes is the output, stdout and stderr together, a run forwards to its
	// Output (default 16 MiB). Beyond it the program keeps running, its output is read
	// and dropped, and the result says truncated. Nothing is kept in memory; the agent
	// also caps what it sends per dispatch.
	MaxOutputBytes int64 `toml:"max_output_bytes"`
	// KillGrace is the time between SIGTERM and SIGKILL to the run's process group when
	// it is cancelled or times out (default 5s).
	KillGrace Duration `toml:"kill_grace"`
}

// ProgramConfig is a [[shell.program]] table: an executable shell.execute may start,
// with the arguments and the standard input it may be given.
type ProgramConfig struct {
	// Path is the executable: an absolute path, or a bare name that LoadConfig resolves
	// on the agent's PATH.
	Path string `toml:"path"`
	// Args are the argument lists allowed (argv without argv[0]; see argrules.go): a
	// run's arguments must match one. Nil (args left out) allows any arguments; empty is
	// refused. A program that can run other programs may only have literal lists,
	// unless Unsafe.
	Args []ArgRule `toml:"args"`
	// Stdin lets a request give the program standard input; without it a run with
	// stdin is refused.
	Stdin bool `toml:"stdin"`
	// Unsafe allows a program that can run other programs with any arguments, with
	// patterns in Args, or in any directory: whoever may dispatch to the node can then
	// run anything as the agent's user.
	Unsafe bool `toml:"unsafe"`
	// WorkDirs pins where the program runs: the directories (absolute, existing, not
	// writable by others) a run may name as its work_dir, the first being its default;
	// a request naming another is refused. Nil (left out) allows any directory, with
	// shell.work_dir as the default. A program that can run other programs reads its
	// makefile, repository or scripts there, so it needs WorkDirs unless Unsafe.
	WorkDirs []string `toml:"work_dirs"`
}

// FilesystemConfig configures filesystem.read.
type FilesystemConfig struct {
	// Roots are the directories (absolute, existing) under which files may be read;
	// empty means filesystem.read is unavailable.
	Roots []string `toml:"roots"`
	// MaxBytes is the most a read returns: the largest file, or slice of a file (default
	// DefaultMaxFileBytes, 512 KiB; at most MaxFileBytesLimit).
	MaxBytes int64 `toml:"max_bytes"`
}

// LLMConfig configures llm.chat and llm.embed: the OpenAI-compatible model server the
// node fronts (llama.cpp's llama-server, Ollama, vLLM, ...) and the models it serves.
// Without BaseURL both capabilities are unavailable.
type LLMConfig struct {
	// BaseURL is the server's OpenAI API root, e.g. "http://127.0.0.1:8080/v1": an
	// http or https URL without credentials, query or fragment, normally on loopback or
	// a private address. Requests go to BaseURL + "/chat/completions" and
	// "/embeddings".
	BaseURL string `toml:"base_url"`
	// APIKeyFile is the file holding the server's API key, sent as "Authorization:
	// Bearer"; absolute, readable by its owner only. Empty: no key is sent.
	APIKeyFile string `toml:"api_key_file"`
	// Models are the chat models llm.chat serves: "name", or "name=local-id" to serve
	// the server's model local-id as name. The names are announced to palyrad.
	Models []string `toml:"models"`
	// EmbeddingModels are the embedding models llm.embed serves, written as Models.
	EmbeddingModels []string `toml:"embedding_models"`
	// Timeout is the longest a request lasts, streaming included (default 10m); the
	// dispatch's deadline applies too.
	Timeout Duration `toml:"timeout"`
	// MaxConcurrent is how many requests are forwarded at once, both capabilities
	// together (default 4); more wait for a slot.
	MaxConcurrent int `toml:"max_concurrent"`

	// apiKey is the content of APIKeyFile, read by LoadConfig.
	apiKey *apiKey
}

// Duration is a time.Duration written in TOML as a string such as "30s" or "1h30m".
type Duration time.Duration

// String formats d like time.Duration.
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalText formats d like time.Duration.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText parses a time.Duration string such as "30s".
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("invalid duration %q: want a string such as \"30s\" or \"10m\"", b)
	}
	*d = Duration(v)
	return nil
}

// DefaultConfig returns the configuration of a node without node.toml: system.info only,
// with the other settings at their defaults.
func DefaultConfig() Config {
	return Config{
		Shell: ShellConfig{
			WorkDir:        os.TempDir(),
			Timeout:        Duration(DefaultShellTimeout),
			MaxOutputBytes: DefaultMaxOutputBytes,
			KillGrace:      Duration(DefaultKillGrace),
		},
		Filesystem: FilesystemConfig{
			MaxBytes: DefaultMaxFileBytes,
		},
		LLM: LLMConfig{
			Timeout:       Duration(DefaultLLMTimeout),
			MaxConcurrent: DefaultLLMMaxConcurrent,
		},
		Browser: BrowserConfig{
			Timeout:       Duration(DefaultBrowserTimeout),
			MaxPageBytes:  DefaultBrowserMaxPageBytes,
			MaxConcurrent: DefaultBrowserMaxConcurrent,
		},
	}
}

// LoadConfig reads node.toml at path. A missing file is DefaultConfig(); a setting
// missing from the file keeps its default. It refuses unknown keys (naming them), a
// file that group or others may write (it decides what the node runs), and invalid
// settings: relative paths, roots and work_dir that are not existing directories,
// pinned work_dirs with ".." or that others may write, executables that cannot be
// found, non-positive durations and sizes, an llm.base_url that is not an http(s) URL
// or holds credentials, invalid or duplicate model names, and an llm.api_key_file that
// group or others may read (the key is read now). Bare executable names are resolved on the
// agent's PATH now, so that the returned Allow holds absolute paths only.
func LoadConfig(path string) (Config, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return DefaultConfig(), nil
	}
	if err != nil {
		return Config{}, fmt.Errorf("read node configuration: %w", err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return Config{}, fmt.Errorf("read node configuration: %w", err)
	}
	if !info.Mode().IsRegular() {
		return Config{}, fmt.Errorf("%s: not a regular file", path)
	}
	if runtime.GOOS != "windows" && info.Mode().Perm()&0o022 != 0 {
		return Config{}, fmt.Errorf("%s: group or others may write it (mode %v): run chmod go-w %s",
			path, info.Mode().Perm(), path)
	}
	raw, err := io.ReadAll(io.LimitReader(f, maxConfigBytes+1))
	if err != nil {
		return Config{}, fmt.Errorf("read node configuration: %w", err)
	}
	if len(raw) > maxConfigBytes {
		return Config{}, fmt.Errorf("%s: larger than %d bytes", path, maxConfigBytes)
	}
	cfg := DefaultConfig()
	dec := toml.NewDecoder(bytes.NewReader(raw)).DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		var strict *toml.StrictMissingError
		if errors.As(err, &strict) {
			return Config{}, fmt.Errorf("%s: unknown settings:\n%s", path, strict.String())
		}
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	if err := checkValueTypes(raw); err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	cfg, err = cfg.normalize(pathLookup(os.Getenv("PATH")))
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// maxConfigBytes bounds node.toml.
const maxConfigBytes = 1 << 20

// checkValueTypes refuses values of the wrong TOML type that the decoder would take as
// text: durations written as numbers, which it would take as nanoseconds ("timeout =
// 30" is 30ns, not 30s), and arguments of shell.program's args that are neither strings
// nor pattern tables (a number would become its digits).
func checkValueTypes(raw []byte) error {
	var doc struct {
		Shell struct {
			Timeout   any `toml:"timeout"`
			KillGrace any `toml:"kill_grace"`
			Programs  []struct {
				Args any `toml:"args"`
			} `toml:"program"`
		} `toml:"shell"`
		LLM struct {
			Timeout any `toml:"timeout"`
		} `toml:"llm"`
		Browser struct {
			Timeout any `toml:"timeout"`
		} `toml:"browser"`
	}
	if err := toml.Unmarshal(raw, &doc); err != nil {
		return err
	}
	var errs []error
	for _, d := range []struct {
		key string
		v   any
	}{{"shell.timeout", doc.Shell.Timeout}, {"shell.kill_grace", doc.Shell.KillGrace}, {"llm.timeout", doc.LLM.Timeout}, {"browser.timeout", doc.Browser.Timeout}} {
		if _, ok := d.v.(string); d.v != nil && !ok {
			errs = append(errs, fmt.Errorf("%s: invalid duration %v: want a string such as \"30s\" or \"10m\"", d.key, d.v))
		}
	}
	for i, p := range doc.Shell.Programs {
		lists, _ := p.Args.([]any)
		for j, l := range lists {
			args, _ := l.([]any)
			for k, a := range args {
				switch a.(type) {
				case string, map[string]any:
				default:
					errs = append(errs, fmt.Errorf("shell.program[%d]: args[%d]: argument %d: %v is a %T: want a string, "+
						"{ regex = \"...\" } or { rest = \"...\" }", i, j, k+1, a, a))
				}
			}
		}
	}
	return errors.Join(errs...)
}

// envnamePattern is what an environment variable name may look like.
var envnamePattern = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// normalize validates c as LoadConfig does and returns it with cleaned paths and
// executables resolved by lookPath (exec.LookPath but in tests).
func (c Config) normalize(lookPath func(string) (string, error)) (Config, error) {
	var errs []error
	sh := &c.Shell
	var allow []string
	for _, a := range sh.Allow {
		p, err := resolveExecutable(a, lookPath)
		if err != nil {
			errs = append(errs, fmt.Errorf("shell.allow: %w", err))
			continue
		}
		if !slices.Contains(allow, p) {
			allow = append(allow, p)
		}
	}
	sh.Allow = allow
	sh.Programs = slices.Clone(sh.Programs)
	listed := map[string]string{} // the files named so far (symbolic links resolved): by whom
	for _, a := range allow {
		if real, err := filepath.EvalSymlinks(a); err == nil && listed[real] == "" {
			listed[real] = "shell.allow"
		}
	}
	for i := range sh.Programs {
		p := &sh.Programs[i]
		where := fmt.Sprintf("shell.program[%d]", i)
		if p.Path != "" {
			where = fmt.Sprintf("shell.program %q", p.Path)
		}
		path, err := resolveExecutable(p.Path, lookPath)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: path: %w", where, err))
			continue
		}
		p.Path = path
		if real, err := filepath.EvalSymlinks(path); err == nil {
			if by := listed[real]; by != "" {
				errs = append(errs, fmt.Errorf("%s: %s is listed in %s already: name each program once", where, real, by))
				continue
			}
			listed[real] = where
		}
		if p.Args != nil && len(p.Args) == 0 {
			errs = append(errs, fmt.Errorf("%s: args is empty, which allows nothing: list the argument lists allowed, or leave args out to allow any", where))
		}
		for j, r := range p.Args {
			if _, err := r.compiled(); err != nil {
				errs = append(errs, fmt.Errorf("%s: args[%d]: %w", where, j, err))
			}
		}
		if p.WorkDirs != nil && len(p.WorkDirs) == 0 {
			errs = append(errs, fmt.Errorf("%s: work_dirs is empty, which allows no directory: list where it may run, or leave work_dirs out", where))
		}
		var dirs []string
		for _, d := range p.WorkDirs {
			if _, err := checkPinnedDir(d); err != nil {
				errs = append(errs, fmt.Errorf("%s: work_dirs: %w", where, err))
				continue
			}
			if d = filepath.Clean(d); !slices.Contains(dirs, d) {
				dirs = append(dirs, d)
			}
		}
		if p.WorkDirs != nil {
			p.WorkDirs = dirs
		}
	}
	if sh.WorkDir == "" {
		sh.WorkDir = os.TempDir()
	}
	if _, err := checkDir(sh.WorkDir); err != nil {
		errs = append(errs, fmt.Errorf("shell.work_dir: %w", err))
	}
	sh.WorkDir = filepath.Clean(sh.WorkDir)
	for _, name := range sh.Env {
		if !envnamePattern.MatchString(name) {
			errs = append(errs, fmt.Errorf("shell.env: invalid variable name %q", name))
		}
	}
	if sh.Timeout <= 0 {
		errs = append(errs, fmt.Errorf("shell.timeout: %v is not positive", sh.Timeout))
	}
	if sh.MaxOutputBytes <= 0 {
		errs = append(errs, fmt.Errorf("shell.max_output_bytes: %d is not positive", sh.MaxOutputBytes))
	}
	if sh.KillGrace <= 0 {
		errs = append(errs, fmt.Errorf("shell.kill_grace: %v is not positive", sh.KillGrace))
	}

	fsc := &c.Filesystem
	var roots []string
	for _, r := range fsc.Roots {
		if _, err := checkDir(r); err != nil {
			errs = append(errs, fmt.Errorf("filesystem.roots: %w", err))
			continue
		}
		if r = filepath.Clean(r); !slices.Contains(roots, r) {
			roots = append(roots, r)
		}
	}
	fsc.Roots = roots
	if fsc.MaxBytes <= 0 || fsc.MaxBytes > MaxFileBytesLimit {
		errs = append(errs, fmt.Errorf("filesystem.max_bytes: %d is not between 1 and %d (the content is returned base64-encoded in a result of at most 1 MiB)", fsc.MaxBytes, MaxFileBytesLimit))
	}
	llm, err := c.LLM.normalize()
	if err != nil {
		errs = append(errs, err)
	}
	c.LLM = llm
	if c.Browser, err = c.Browser.normalize(lookPath); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return Config{}, err
	}
	return c, nil
}

// pathLookup finds bare names as runs of shell.execute do: on pathEnv (the agent's
// PATH), or on defaultPATH when it is empty, skipping relative directories.
func pathLookup(pathEnv string) func(string) (string, error) {
	if pathEnv == "" {
		pathEnv = defaultPATH
	}
	return func(name string) (string, error) {
		if p, ok := lookPath(name, pathEnv); ok {
			return p, nil
		}
		return "", exec.ErrNotFound
	}
}

// resolveExecutable returns the absolute path of an allowed executable: an absolute path
// as it is (cleaned), a bare name as lookPath finds it. Relative paths are refused, and
// so is anything that is not an executable regular file.
func resolveExecutable(name string, lookPath func(string) (string, error)) (string, error) {
	switch {
	case name == "":
		return "", errors.New("empty executable name")
	case filepath.IsAbs(name):
		name = filepath.Clean(name)
	case strings.ContainsFunc(name, isPathSeparator):
		return "", fmt.Errorf("%q: want an absolute path or a bare name found on PATH", name)
	default:
		p, err := lookPath(name)
		if err != nil {
			return "", fmt.Errorf("%q: not found on PATH", name)
		}
		if p, err = filepath.Abs(p); err != nil {
			return "", fmt.Errorf("%q: %w", name, err)
		}
		name = p
	}
	info, err := os.Stat(name)
	if err != nil {
		return "", fmt.Errorf("%q: %w", name, unwrapPathError(err))
	}
	if !info.Mode().IsRegular() || (runtime.GOOS != "windows" && info.Mode().Perm()&0o111 == 0) {
		return "", fmt.Errorf("%q: not an executable file", name)
	}
	return name, nil
}

// checkDir checks that dir is an absolute path to an existing directory, and returns
// what it leads to.
func checkDir(dir string) (fs.FileInfo, error) {
	if !filepath.IsAbs(dir) {
		return nil, fmt.Errorf("%q is not an absolute path", dir)
	}
	info, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("%q: %w", dir, unwrapPathError(err))
	}
	if !info.IsDir() {
		return nil, fmt.Errorf("%q is not a directory", dir)
	}
	return info, nil
}

// checkPinnedDir checks a directory a [[shell.program]] table pins its program to, as
// LoadConfig and every run do: checkDir, no "..", and not writable by others (anyone on
// the machine could plant what the program reads there).
func checkPinnedDir(dir string) (fs.FileInfo, error) {
	if hasDotDot(dir) {
		return nil, fmt.Errorf("%q: %s", dir, dotDotAmbiguous)
	}
	info, err := checkDir(dir)
	if err != nil {
		return nil, err
	}
	if runtime.GOOS != "windows" && info.Mode().Perm()&0o002 != 0 {
		return nil, fmt.Errorf("%q: others may write it (mode %v), so anyone on this machine could plant what the program reads there",
			dir, info.Mode().Perm())
	}
	return info, nil
}

// dotDotAmbiguous says why a working directory with ".." is refused.
const dotDotAmbiguous = `a path with ".." is never allowed: after a symbolic link, ".." leads elsewhere than the path reads`

// hasDotDot reports whether path has a ".." element.
func hasDotDot(path string) bool {
	return slices.Contains(strings.FieldsFunc(path, isPathSeparator), "..")
}

// unwrapPathError drops the operation and path of a *fs.PathError, for messages that
// already name the path.
func unwrapPathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// defaultConfigTemplate is what WriteDefaultConfig writes: every setting commented out
// at its default, so that loading it gives DefaultConfig().
const defaultConfigTemplate = `# node.toml: what the capabilities of this Palyra node may do.
# palyra node run reads it at start and again on SIGHUP. Every setting below is
# commented out at its default. Durations are strings such as "30s", "10m" or "1h30m".
# This file decides what the node runs: keep it writable by its owner only.

[shell]
# shell.execute starts one of these executables with the request's arguments (argv),
# never through a shell string. Each is an absolute path or a bare name resolved on PATH
# when this file is read. Empty (the default), with no [[shell.program]] table below,
# refuses every request and marks the capability unavailable.
#
# WARNING: a program listed here takes ANY arguments from whoever may dispatch to this
# node (the operator role is enough), and runs as this agent's user. A program that can
# run other programs hands out a shell that way: find -exec, make -f - (a makefile on
# stdin), sed's e command, awk's system(), env, xargs, timeout, nice, git, tar, rsync,
# ssh, sudo, interpreters (python3, perl, node, ...) and shells. shell.execute refuses
# those here (by name, through symbolic links, and as hard links or copies of the
# system's own) and says why: give them a [[shell.program]] table below instead. A
# program that writes files (cp, tee, dd, curl -o, ...) is as dangerous wherever this
# agent's user may write: give it argument rules too. List here only programs none of
# whose arguments can do harm.
# allow = ["/usr/bin/uname", "df"]

# Working directory of a run that names none (absolute), for programs whose
# [[shell.program]] table pins none (work_dirs below). Default: the system's temporary
# directory.
# work_dir = "/tmp"

# Environment variables passed through from the agent's environment, besides PATH which
# always is. A request may set these names, and only these, except those that programs
# read as code, commands or options (LD_*, BASH_ENV, MAKEFLAGS, GIT_*, PYTHON*,
# NODE_OPTIONS, PAGER, TAR_OPTIONS, ...): those only pass through. Nothing else reaches
# the program.
# env = ["LANG", "TZ"]

# Longest a run may last; a request may ask for less, and its deadline applies too.
# timeout = "10m"

# Output a run forwards, stdout and stderr together; beyond it the program keeps
# running, its output is dropped, and the result says it was truncated.
# max_output_bytes = 16777216

# Time between SIGTERM and SIGKILL (sent to the run's whole process group) when a run
# is cancelled or times out.
# kill_grace = "5s"

# A program that may run only with the arguments listed: one [[shell.program]] table
# per program, after the settings above. path is an absolute path or a bare name. Each
# entry of args is one allowed argument list (argv without argv[0]); a request's
# arguments must match one of them, argument by argument, and be as many:
#   "text"               exactly this argument;
#   { regex = "..." }    one argument the regular expression (RE2) matches as a whole;
#   { rest = "..." }     last in a list: any number of further arguments, each matched
#                        as a whole by the expression.
# Without args, any arguments are allowed. A request's standard input is refused
# unless the table sets stdin = true. work_dirs pins where the program runs: a request
# may name only these directories (absolute, existing, not writable by others; a
# symbolic link to one counts as it, a path with ".." never does), and one naming none
# runs it in the first. Without work_dirs it runs wherever the request says. A refused
# request fails with the reason.
#
# A program that can run other programs (see above) may only have lists of plain
# strings AND work_dirs, unless unsafe = true, which lets whoever may dispatch to this
# node run anything as this agent's user. Literal arguments are not enough: such a
# program reads what it runs from its working directory (make its makefile, git status
# the repository's core.fsmonitor and hooks, npm test its package.json), so pin it even
# when its arguments name a directory (make -C). Pin too any program whose arguments
# name relative paths (rm -r build), and pin only directories that nobody who may
# dispatch to this node can write to.
# [[shell.program]]
# path = "make"
# args = [["-C", "/src"], ["-C", "/src", "test"]]
# work_dirs = ["/src"]
# [[shell.program]]
# path = "journalctl"
# args = [["-u", { regex = '[a-z0-9@._-]+\.service' }, "-n", { regex = "[0-9]{1,4}" }, "--no-pager"]]
# stdin = false
# unsafe = false

[filesystem]
# filesystem.read reads regular files under these directories (absolute, existing).
# Paths with "..", and symbolic links leading out of a root, are refused. Empty (the
# default) marks the capability unavailable.
# roots = ["/var/log"]

# Most bytes a read returns: the largest file, or slice of a file with offset and length
# (at most 716800: the content travels base64-encoded in a result of at most 1 MiB).
# max_bytes = 524288

[llm]
# llm.chat and llm.embed front an OpenAI-compatible model server on this machine or its
# private network (llama.cpp's llama-server, Ollama, vLLM, ...): palyrad routes requests
# for the models listed below to this node, which forwards them to the server and
# streams the answer back over its own connection to palyrad (no inbound port). Without
# base_url (the default) both capabilities are unavailable.
#
# The server's OpenAI API root (http or https, without credentials): requests go to
# base_url + "/chat/completions" and "/embeddings".
# base_url = "http://127.0.0.1:8080/v1"

# The file holding the server's API key, if it wants one (sent as "Authorization:
# Bearer ..."): an absolute path, readable by its owner only (chmod 600). Never write
# the key itself here.
# api_key_file = "/etc/palyra/llm.key"

# The chat models llm.chat serves, announced to palyrad: "name" (the server's own
# id), or "name=local-id" to serve the server's model local-id as name. A name is
# slash-separated segments of letters, digits and ".:_@+-". A request for any other
# model is refused.
# models = ["llama3.1:8b", "fast=qwen2.5:0.5b-instruct"]

# The embedding models llm.embed serves, written the same way.
# embedding_models = ["nomic-embed-text"]

# Longest a request may last, streaming included; its dispatch's deadline applies too.
# timeout = "10m"

# Requests forwarded at once (chat and embeddings together); more wait for a slot.
# max_concurrent = 4

[browser]
# browser.navigate and browser.screenshot load pages in a fresh headless Chromium per
# dispatch (its own temporary profile directory, removed afterwards), with the browser
# profile palyrad sends: user agent, viewport, locale, time zone, proxy, cookies and
# local storage. Every request the browser makes goes through a guard on this node:
# only to the profile's allowed domains, only http(s), never to the addresses below
# unless allowed. Both are unavailable until enabled, and without a Chromium.
#
# Let this node browse:
# enabled = true
#
# The browser: an absolute path or a bare name found on PATH. Default: chromium on PATH
# (Debian's chromium package).
# executable = "chromium"

# Longest a dispatch may last; a request may ask for less, and its deadline applies too.
# timeout = "1m"

# Bytes one dispatch may receive from the network, every request together; reaching it
# aborts the load and fails the dispatch.
# max_page_bytes = 33554432

# Browsers running at once; more dispatches wait for one to end.
# max_concurrent = 2

# Private, loopback, link-local, carrier-grade NAT and other non-public addresses are
# refused unless listed here (networks in CIDR form, or addresses). A cloud metadata
# address (169.254.169.254, fd00:ec2::254, ...) is reached only when listed itself.
# allow_networks = ["127.0.0.0/8"]
`

// WriteDefaultConfig writes a commented node.toml template at path, with mode 0600, for
// `palyra node install`. It refuses to overwrite an existing file (the error wraps
// fs.ErrExist). Missing parent directories are created with mode 0700.
func WriteDefaultConfig(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("write node configuration: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("write node configuration: %w", err)
	}
	_, err = f.Write([]byte(defaultConfigTemplate))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("write node configuration: %w", err)
	}
	return nil
}
