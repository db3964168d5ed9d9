package embeddedpg

import (
	"cmp"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// debianLibGlob is where Debian and Ubuntu install each PostgreSQL major
// version's server programs, which they keep off PATH.
const debianLibGlob = "/usr/lib/postgresql/*/bin"

// findBinDir returns the directory holding initdb, pg_ctl and postgres:
// binDir when set; else the real directory (symlinks resolved) of pg_ctl or
// initdb found on searchPath ($PATH when empty); else the match of libGlob
// (debianLibGlob when empty) with the highest version. The error wraps
// ErrBinariesNotFound.
func findBinDir(binDir, searchPath, libGlob string) (string, error) {
	if binDir != "" {
		abs, err := filepath.Abs(binDir)
		if err == nil && hasPrograms(abs) {
			return abs, nil
		}
		return "", fmt.Errorf("Options.BinDir %s does not hold initdb, pg_ctl and postgres: %w", binDir, ErrBinariesNotFound)
	}

	if searchPath == "" {
		searchPath = os.Getenv("PATH")
	}
	for _, d := range filepath.SplitList(searchPath) {
		// Relative entries (including "", the current directory) would make
		// the choice depend on the working directory; skip them.
		if !filepath.IsAbs(d) {
			continue
		}
		for _, prog := range []string{"pg_ctl", "initdb"} {
			p := filepath.Join(d, prog)
			if !isExecutable(p) {
				continue
			}
			real, err := filepath.EvalSymlinks(p)
			if err != nil {
				continue
			}
			if dir := filepath.Dir(real); hasPrograms(dir) {
				return dir, nil
			}
		}
	}

	if libGlob == "" {
		libGlob = debianLibGlob
	}
	matches, err := filepath.Glob(libGlob)
	if err != nil {
		return "", fmt.Errorf("search %s: %w", libGlob, err)
	}
	// The version is the name of the directory above bin: .../15/bin.
	slices.SortFunc(matches, func(a, b string) int {
		return -compareVersions(filepath.Base(filepath.Dir(a)), filepath.Base(filepath.Dir(b)))
	})
	for _, m := range matches {
		if hasPrograms(m) {
			return m, nil
		}
	}
	return "", ErrBinariesNotFound
}

// hasPrograms reports whether dir holds executable initdb, pg_ctl and postgres.
func hasPrograms(dir string) bool {
	return isExecutable(filepath.Join(dir, "initdb")) &&
		isExecutable(filepath.Join(dir, "pg_ctl")) &&
		isExecutable(filepath.Join(dir, "postgres"))
}

// isExecutable reports whether path (after symlinks) is a regular file with
// an execute bit set.
func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// compareVersions orders dotted version strings numerically ("9.6" < "15"),
// with non-numeric parts lowest.
func compareVersions(a, b string) int {
	pa, pb := strings.Split(a, "."), strings.Split(b, ".")
	for i := range max(len(pa), len(pb)) {
		na, nb := -1, -1
		if i < len(pa) {
			na = leadingNumber(pa[i])
		}
		if i < len(pb) {
			nb = leadingNumber(pb[i])
		}
		if c := cmp.Compare(na, nb); c != 0 {
			return c
		}
	}
	return strings.Compare(a, b)
}

// leadingNumber returns the number s starts with ("15" of "15beta1"), or -1.
func leadingNumber(s string) int {
	end := strings.IndexFunc(s, func(r rune) bool { return r < '0' || r > '9' })
	if end < 0 {
		end = len(s)
	}
	n, err := strconv.Atoi(s[:end])
	if err != nil {
		return -1
	}
	return n
}
