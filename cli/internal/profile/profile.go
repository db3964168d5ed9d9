// Package profile reads and writes the palyra CLI's profiles: named palyrad servers,
// each with its URL, the pinned fingerprint of its CA and an API token, kept in
// $XDG_CONFIG_HOME/palyra/profiles.toml (or ~/.config/palyra/profiles.toml):
//
//	current = "default"
//
//	[profiles.default]
//	url = "https://127.0.0.1:7443"
//	token = "plr_..."
//	ca_fingerprint = "sha256:..."
//
// The file holds API tokens, so it is written with mode 0600 in a directory created
// with mode 0700, atomically (a temporary file renamed over the old one), and a file
// that its group or others may access is refused rather than read.
package profile

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"

	"github.com/pelletier/go-toml/v2"

	"github.com/palyra/palyra/cli/internal/atomicfile"
)

// FileName is the name of the profile file in the palyra configuration directory.
const FileName = "profiles.toml"

// DefaultName is the profile that login writes when none is selected.
const DefaultName = "default"

// Profile is one palyrad server and how to talk to it.
type Profile struct {
	// URL is the daemon's base URL, e.g. "https://127.0.0.1:7443".
	URL string `toml:"url"`
	// Token is the API token, "plr_<id>_<secret>"; empty after logout.
	Token string `toml:"token,omitempty"`
	// CAFingerprint pins the daemon's CA: "sha256:" and the hex SHA-256 of its
	// certificate's DER. It is always set by login, which never stores a CA file path.
	CAFingerprint string `toml:"ca_fingerprint,omitempty"`
}

// File is the content of profiles.toml.
type File struct {
	// Current names the profile used when none is selected; empty when there is none.
	Current string `toml:"current,omitempty"`
	// Profiles are the profiles by name.
	Profiles map[string]*Profile `toml:"profiles,omitempty"`
}

var namePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,31}$`)

// CheckName checks a profile name: a lower-case letter or digit, then up to 31 more of
// those, '_' or '-'.
func CheckName(name string) error {
	if !namePattern.MatchString(name) {
		return fmt.Errorf("invalid profile name %q: use 1 to 32 lower-case letters, digits, '_' or '-', starting with a letter or digit", name)
	}
	return nil
}

// ErrNoPath reports that neither XDG_CONFIG_HOME nor HOME says where the file is.
var ErrNoPath = errors.New("cannot locate the profile file: set XDG_CONFIG_HOME or HOME")

// Path returns where the profile file is: $XDG_CONFIG_HOME/palyra/profiles.toml, or
// $HOME/.config/palyra/profiles.toml when XDG_CONFIG_HOME is unset or not absolute (as
// the XDG base directory specification says).
func Path(getenv func(string) string) (string, error) {
	if dir := getenv("XDG_CONFIG_HOME"); filepath.IsAbs(dir) {
		return filepath.Join(dir, "palyra", FileName), nil
	}
	if home := getenv("HOME"); filepath.IsAbs(home) {
		return filepath.Join(home, ".config", "palyra", FileName), nil
	}
	return "", ErrNoPath
}

// InsecureError refuses a profile file that its group or others may access.
type InsecureError struct {
	// Path is the file.
	Path string
	// Mode is its permission bits.
	Mode fs.FileMode
}

// Error implements error.
func (e *InsecureError) Error() string {
	return fmt.Sprintf("%s holds API tokens but its group or others may access it (mode %s); "+
		"run `chmod 600 %s` (and check who could have read it)", e.Path, e.Mode.Perm(), e.Path)
}

// Load reads the profile file at path. A missing file is an empty File, not an error; a
// file its group or others may access is refused with an *InsecureError.
func Load(path string) (*File, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &File{Profiles: map[string]*Profile{}}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the profiles: %w", err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read the profiles: %w", err)
	}
	// Windows has no such permission bits: its ACLs keep a user's profile private.
	if runtime.GOOS != "windows" && info.Mode().Perm()&0o077 != 0 {
		return nil, &InsecureError{Path: path, Mode: info.Mode().Perm()}
	}
	file := &File{}
	dec := toml.NewDecoder(f).DisallowUnknownFields()
	if err := dec.Decode(file); err != nil {
		var strict *toml.StrictMissingError
		if errors.As(err, &strict) {
			return nil, fmt.Errorf("%s: unknown settings:\n%s", path, strict.String())
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if file.Profiles == nil {
		file.Profiles = map[string]*Profile{}
	}
	if err := file.check(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return file, nil
}

// check validates the names and the presence of every profile's URL.
func (f *File) check() error {
	for _, name := range f.Names() {
		if err := CheckName(name); err != nil {
			return err
		}
		if p := f.Profiles[name]; p == nil || p.URL == "" {
			return fmt.Errorf("profile %q has no url", name)
		}
	}
	if f.Current != "" {
		if _, ok := f.Profiles[f.Current]; !ok {
			return fmt.Errorf("current profile %q is not defined", f.Current)
		}
	}
	return nil
}

// Names returns the profile names, sorted.
func (f *File) Names() []string {
	return slices.Sorted(maps.Keys(f.Profiles))
}

// Get returns the profile called name.
func (f *File) Get(name string) (*Profile, bool) {
	p, ok := f.Profiles[name]
	return p, ok && p != nil
}

// Put stores p as the profile called name, replacing any.
func (f *File) Put(name string, p Profile) {
	if f.Profiles == nil {
		f.Profiles = map[string]*Profile{}
	}
	f.Profiles[name] = &p
}

// Delete removes the profile called name; when it was the current one, no profile is
// current any more.
func (f *File) Delete(name string) {
	delete(f.Profiles, name)
	if f.Current == name {
		f.Current = ""
	}
}

// encode writes the file in its documented shape: the header, current, then one
// [profiles.<name>] table per profile, sorted by name. (Marshaling File whole would add
// an empty [profiles] table.) Names are checked, so they are valid bare keys.
func (f *File) encode() ([]byte, error) {
	var b bytes.Buffer
	b.WriteString(header)
	if f.Current != "" {
		current, err := toml.Marshal(struct {
			Current string `toml:"current"`
		}{f.Current})
		if err != nil {
			return nil, fmt.Errorf("encode the profiles: %w", err)
		}
		b.Write(current)
	}
	for _, name := range f.Names() {
		p, err := toml.Marshal(f.Profiles[name])
		if err != nil {
			return nil, fmt.Errorf("encode the profiles: %w", err)
		}
		fmt.Fprintf(&b, "\n[profiles.%s]\n", name)
		b.Write(p)
	}
	return b.Bytes(), nil
}

const header = "# Profiles of the palyra CLI, written by `palyra auth login` and `palyra auth profiles use`.\n" +
	"# This file holds API tokens: keep it private (mode 0600).\n\n"

// Save writes f to path atomically, with mode 0600, creating the directory (mode 0700)
// when it is missing.
func Save(path string, f *File) error {
	if err := f.check(); err != nil {
		return err
	}
	body, err := f.encode()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("save the profiles: %w", err)
	}
	if err := atomicfile.Write(path, body, 0o600); err != nil {
		return fmt.Errorf("save the profiles: %w", err)
	}
	return nil
}
