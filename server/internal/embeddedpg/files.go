package embeddedpg

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

const (
	// confName is our settings file inside the data directory.
	confName = "palyra.conf"
	// includeLine is appended to postgresql.conf once, after initdb. The
	// include comes last, so palyra.conf overrides postgresql.conf.
	includeLine = "include_if_exists = 'palyra.conf'"
)

// prepareDir creates the cluster directory, hands it to the server's user
// and, as root, checks that this user can reach it.
func (c *Cluster) prepareDir() error {
	if err := os.MkdirAll(filepath.Dir(c.dir), 0o755); err != nil {
		return fmt.Errorf("create the parent of the cluster directory: %w", err)
	}
	if err := os.Mkdir(c.dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create the cluster directory: %w", err)
	}
	fi, err := os.Stat(c.dir)
	if err != nil {
		return fmt.Errorf("cluster directory: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("cluster directory %s exists and is not a directory", c.dir)
	}
	if fi.Mode().Perm() != 0o700 {
		if err := os.Chmod(c.dir, 0o700); err != nil {
			return fmt.Errorf("cluster directory: %w", err)
		}
	}
	cred := c.run.cred
	if cred == nil {
		return nil
	}
	uid, gid := int(cred.Uid), int(cred.Gid)
	if err := os.Chown(c.dir, uid, gid); err != nil {
		return fmt.Errorf("give the cluster directory to the %s user: %w", serverUser, err)
	}
	if err := os.Chown(c.dataDir, uid, gid); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("give the data directory to the %s user: %w", serverUser, err)
	}
	return checkReachable(c.dir, cred)
}

// initOnce runs initdb when the data directory holds no cluster yet, and
// otherwise checks that the cluster's major version matches the binaries'.
// Either way it makes sure postgresql.conf includes palyra.conf.
func (c *Cluster) initOnce(ctx context.Context) error {
	b, err := os.ReadFile(filepath.Join(c.dataDir, "PG_VERSION"))
	switch {
	case err == nil:
		have := strings.TrimSpace(string(b))
		want, err := c.run.majorVersion(ctx)
		if err != nil {
			return err
		}
		if have != want {
			return fmt.Errorf("the cluster in %s was created by PostgreSQL %s, but the server binaries in %s are PostgreSQL %s: install the PostgreSQL %s server binaries, or upgrade the cluster with pg_upgrade",
				c.dataDir, have, c.binDir, want, have)
		}
	case errors.Is(err, fs.ErrNotExist):
		t0 := time.Now()
		args := []string{"-D", c.dataDir, "-U", superuser, "--auth=trust", "-E", "UTF8", "--locale=C"}
		if !c.durable {
			args = append(args, "--no-sync")
		}
		if _, err := c.run.output(ctx, "initdb", args...); err != nil {
			return err
		}
		c.initialized = true
		c.log.Info("PostgreSQL cluster initialised", "dir", c.dir, "bin", c.binDir, "elapsed", since(t0))
	default:
		return fmt.Errorf("read the cluster's version: %w", err)
	}
	return c.ensureInclude()
}

// ensureInclude appends includeLine to postgresql.conf unless it is there.
// Appending keeps the file's owner.
func (c *Cluster) ensureInclude() error {
	path := filepath.Join(c.dataDir, "postgresql.conf")
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read postgresql.conf: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == includeLine {
			return nil
		}
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("open postgresql.conf: %w", err)
	}
	text := "\n# Added by palyra: " + confName + " (rewritten on every start) overrides the settings above.\n" + includeLine + "\n"
	if _, err := f.WriteString(text); err != nil {
		f.Close()
		return fmt.Errorf("append to postgresql.conf: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("append to postgresql.conf: %w", err)
	}
	return nil
}

// writeConf (re)writes palyra.conf with the listen and durability settings
// of this Start.
func (c *Cluster) writeConf() error {
	var b strings.Builder
	b.WriteString("# Written by palyra on every start of this cluster: edits are lost.\n")
	fmt.Fprintf(&b, "listen_addresses = %s\n", confString(c.host))
	fmt.Fprintf(&b, "port = %d\n", c.port)
	// The value is a list; double quotes keep commas and spaces in the
	// directory name from splitting it.
	fmt.Fprintf(&b, "unix_socket_directories = %s\n", confString(`"`+strings.ReplaceAll(c.dir, `"`, `""`)+`"`))
	b.WriteString("unix_socket_permissions = 0700\n")
	if !c.durable {
		b.WriteString("# Not durable: a crash of the machine can corrupt this cluster.\n")
		b.WriteString("fsync = off\n")
		b.WriteString("synchronous_commit = off\n")
		b.WriteString("full_page_writes = off\n")
	}
	return c.writeDataFile(confName, []byte(b.String()))
}

// writeDataFile atomically replaces the file name in the data directory,
// owned by the server's user.
func (c *Cluster) writeDataFile(name string, data []byte) error {
	f, err := os.CreateTemp(c.dataDir, "."+name+".*") // mode 0600
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && c.run.cred != nil {
		err = os.Chown(tmp, int(c.run.cred.Uid), int(c.run.cred.Gid))
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(c.dataDir, name))
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}

// confString quotes s as a postgresql.conf string value: single quotes, with
// embedded single quotes doubled and backslashes (escape characters inside
// quoted values) doubled.
func confString(s string) string {
	s = strings.ReplaceAll(s, `\`, `\\`)
	s = strings.ReplaceAll(s, `'`, `''`)
	return "'" + s + "'"
}

// socketPath returns the path of the server's Unix socket for port in
// directory dir; PostgreSQL names it .s.PGSQL.<port>.
func socketPath(dir string, port int) string {
	return filepath.Join(dir, ".s.PGSQL."+strconv.Itoa(port))
}
