package embeddedpg

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// serverUser is the unprivileged user the PostgreSQL programs run as when the
// calling process is root.
const serverUser = "postgres"

// runner runs the PostgreSQL programs of one installation for one cluster.
type runner struct {
	binDir string              // directory of initdb, pg_ctl and postgres
	dir    string              // working directory (the cluster directory)
	env    []string            // environment without PG* variables
	cred   *syscall.Credential // nil: run as the calling user
}

// newRunner prepares to run the programs in binDir with working directory dir.
// As root it resolves the serverUser to run them as.
func newRunner(binDir, dir string) (*runner, error) {
	r := &runner{binDir: binDir, dir: dir}
	for _, kv := range os.Environ() {
		// PGDATA, PGPORT, PGHOST and friends would override what we ask for.
		if strings.HasPrefix(kv, "PG") {
			continue
		}
		r.env = append(r.env, kv)
	}
	if os.Geteuid() != 0 {
		return r, nil
	}
	cred, err := lookupCredential(serverUser)
	if err != nil {
		return nil, err
	}
	r.cred = cred
	// Keep the programs out of root's home directory.
	r.env = append(r.env, "HOME="+dir)
	return r, nil
}

// lookupCredential returns the uid, gid and supplementary groups of name.
func lookupCredential(name string) (*syscall.Credential, error) {
	u, err := user.Lookup(name)
	if err != nil {
		if _, ok := errors.AsType[user.UnknownUserError](err); ok {
			return nil, fmt.Errorf("PostgreSQL refuses to run as root, and the unprivileged user %q to run it as does not exist: create it (useradd --system --user-group --home-dir /var/lib/postgresql %s) or run as a non-root user", name, name)
		}
		return nil, fmt.Errorf("look up the user %q: %w", name, err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("user %q: uid %q: %w", name, u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("user %q: gid %q: %w", name, u.Gid, err)
	}
	cred := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	gids, err := u.GroupIds()
	if err != nil {
		return nil, fmt.Errorf("user %q: groups: %w", name, err)
	}
	for _, g := range gids {
		n, err := strconv.ParseUint(g, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("user %q: group id %q: %w", name, g, err)
		}
		cred.Groups = append(cred.Groups, uint32(n))
	}
	return cred, nil
}

// command builds an exec.Cmd for program prog of the installation.
func (r *runner) command(ctx context.Context, prog string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(r.binDir, prog), args...)
	cmd.Dir = r.dir
	cmd.Env = r.env
	// pg_ctl start redirects the server's output to the log file, so the
	// pipes close when pg_ctl exits; this only guards against surprises.
	cmd.WaitDelay = 5 * time.Second
	if r.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: r.cred}
	}
	return cmd
}

// output runs prog and returns its combined output. The error names the
// command and includes the output's last lines.
func (r *runner) output(ctx context.Context, prog string, args ...string) ([]byte, error) {
	out, err := r.command(ctx, prog, args...).CombinedOutput()
	if errors.Is(err, exec.ErrWaitDelay) {
		err = nil
	}
	if err == nil {
		return out, nil
	}
	name := prog
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name += " " + args[0] // pg_ctl's subcommand
	}
	if ctx.Err() != nil {
		// Killed because of the context: the output says nothing useful.
		return out, fmt.Errorf("%s: %w", name, ctx.Err())
	}
	return out, &commandError{cmd: name, out: lastLines(string(out), logTailLines), err: err}
}

// commandError is a failed PostgreSQL program.
type commandError struct {
	cmd string // program and subcommand, e.g. "pg_ctl start"
	out string // last lines of its output
	err error  // usually *exec.ExitError
}

func (e *commandError) Error() string {
	if e.out == "" {
		return e.cmd + ": " + e.err.Error()
	}
	return e.cmd + ": " + e.err.Error() + ": " + e.out
}

func (e *commandError) Unwrap() error { return e.err }

// exitCode returns the exit status of a program that failed with err, or -1.
func exitCode(err error) int {
	if ee, ok := errors.AsType[*exec.ExitError](err); ok {
		return ee.ExitCode()
	}
	return -1
}

// lastLines returns the last n lines of s, trimmed.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// majorVersion returns the major version of the installation's server as
// PG_VERSION spells it: "15" from 10 on, "9.6" before.
func (r *runner) majorVersion(ctx context.Context) (string, error) {
	// --version is answered before postgres checks for root, so this runs
	// as the calling user, outside the cluster directory.
	cmd := exec.CommandContext(ctx, filepath.Join(r.binDir, "postgres"), "--version")
	cmd.Env = r.env
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("postgres --version: %w", err)
	}
	major, ok := parseMajor(string(out))
	if !ok {
		return "", fmt.Errorf("postgres --version: unexpected output %q", strings.TrimSpace(string(out)))
	}
	return major, nil
}

// parseMajor extracts the major version from "postgres (PostgreSQL) 15.18
// (Debian ...)": "15" from version 10 on, "9.6" before.
func parseMajor(versionOutput string) (string, bool) {
	const marker = "(PostgreSQL) "
	i := strings.Index(versionOutput, marker)
	if i < 0 {
		return "", false
	}
	fields := strings.Fields(versionOutput[i+len(marker):])
	if len(fields) == 0 {
		return "", false
	}
	// "15.18", "9.6.24", "16beta1", "17rc1"
	parts := strings.Split(fields[0], ".")
	first := leadingNumber(parts[0])
	if first < 0 {
		return "", false
	}
	if first < 10 && len(parts) > 1 {
		if second := leadingNumber(parts[1]); second >= 0 {
			return strconv.Itoa(first) + "." + strconv.Itoa(second), true
		}
	}
	return strconv.Itoa(first), true
}

// UnreachableError reports that the user PostgreSQL runs as cannot reach the
// cluster directory because a directory on the way is not searchable by it.
// Start returns it (wrapped) before running any PostgreSQL program.
type UnreachableError struct {
	User    string // the user PostgreSQL runs as, "postgres"
	UID     int    // its uid
	Dir     string // the cluster directory (Options.Dir, absolute)
	Blocked string // the first directory on the way that the user cannot search
	Who     string // the permission class that applies to the user: "u", "g" or "o"
}

// Error says which directory blocks the way and how to open it.
func (e *UnreachableError) Error() string {
	return fmt.Sprintf("the %s user (uid %d) cannot reach %s: %s is not searchable by it; run \"chmod %s+x %s\" or choose a data directory elsewhere",
		e.User, e.UID, e.Dir, e.Blocked, e.Who, shellQuote(e.Blocked))
}

// checkReachable returns an *UnreachableError when cred's user cannot search
// dir or one of its parents, judged like the kernel does: the owner bits
// apply to the owner, the group bits to the group's members, and the "other"
// bits to everybody else.
func checkReachable(dir string, cred *syscall.Credential) error {
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return err
	}
	var chain []string // real and its parents, from the root down
	for p := real; ; p = filepath.Dir(p) {
		chain = append([]string{p}, chain...)
		if p == filepath.Dir(p) {
			break
		}
	}
	for _, p := range chain {
		fi, err := os.Stat(p)
		if err != nil {
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return fmt.Errorf("%s: no Unix ownership information", p)
		}
		perm := fi.Mode().Perm()
		var bit os.FileMode
		var who string
		switch {
		case st.Uid == cred.Uid:
			bit, who = 0o100, "u"
		case st.Gid == cred.Gid || containsGID(cred.Groups, st.Gid):
			bit, who = 0o010, "g"
		default:
			bit, who = 0o001, "o"
		}
		if perm&bit == 0 {
			return &UnreachableError{User: serverUser, UID: int(cred.Uid), Dir: dir, Blocked: p, Who: who}
		}
	}
	return nil
}

func containsGID(gids []uint32, gid uint32) bool {
	for _, g := range gids {
		if g == gid {
			return true
		}
	}
	return false
}

// checkDirName rejects directory names that cannot be passed on: pg_ctl puts
// paths in double quotes for /bin/sh without escaping " $ ` and \, and
// connection strings (libpq's and pgx's) split the host at commas.
func checkDirName(dir string) error {
	for _, r := range dir {
		if r == '"' || r == '$' || r == '`' || r == '\\' || r == ',' || r < 0x20 || r == 0x7f {
			return fmt.Errorf("the directory %q contains %q, which pg_ctl or a connection URL cannot carry: choose a data directory path without \" $ ` \\ , or control characters", dir, r)
		}
	}
	return nil
}

// shellQuote quotes s for a shell command in a hint, when it needs quoting.
func shellQuote(s string) string {
	safe := s != ""
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-+:@,", r)) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
