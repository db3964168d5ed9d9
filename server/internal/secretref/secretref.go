// Package secretref is the syntax of a secret reference: the value "secret:NAME" or
// "secret:NAME@VERSION" of a setting that takes one (config.Setting.SecretRef), which
// names a secret of the vault, and a version of it, instead of holding its value. The
// vault validates references when a setting is set and resolves them when the server
// uses them; the configuration stores and shows them as written.
package secretref

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Prefix starts every reference.
const Prefix = "secret:"

// namePattern is the form of a secret's name: a letter or digit, then letters, digits,
// '.', '_' or '-', at most 128 characters.
var namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// ValidName reports whether name is a valid secret name.
func ValidName(name string) bool { return namePattern.MatchString(name) }

// Ref is a parsed reference.
type Ref struct {
	// Name is the secret's name.
	Name string
	// Version pins a version; 0 means the latest one when the reference is used.
	Version int64
}

// String writes the reference as it is parsed.
func (r Ref) String() string {
	if r.Version == 0 {
		return Prefix + r.Name
	}
	return Prefix + r.Name + "@" + strconv.FormatInt(r.Version, 10)
}

// Pinned reports whether the reference names a version.
func (r Ref) Pinned() bool { return r.Version != 0 }

// IsRef reports whether v is written as a reference (starts with "secret:"), well
// formed or not.
func IsRef(v string) bool { return strings.HasPrefix(v, Prefix) }

// Parse reads "secret:NAME" or "secret:NAME@VERSION". The error says what is wrong
// without repeating the value, which might be a secret pasted by mistake.
func Parse(v string) (Ref, error) {
	rest, ok := strings.CutPrefix(v, Prefix)
	if !ok {
		return Ref{}, fmt.Errorf("a secret reference is written secret:NAME or secret:NAME@VERSION")
	}
	name, version, pinned := strings.Cut(rest, "@")
	if !ValidName(name) {
		return Ref{}, fmt.Errorf("malformed secret reference: the name after secret: must be 1 to 128 characters, a letter or digit, then letters, digits, '.', '_' or '-' (secret:NAME or secret:NAME@VERSION)")
	}
	r := Ref{Name: name}
	if pinned {
		n, err := strconv.ParseInt(version, 10, 64)
		if err != nil || n < 1 || strconv.FormatInt(n, 10) != version {
			return Ref{}, fmt.Errorf("malformed secret reference: the version after '@' must be a positive whole number (secret:NAME@VERSION)")
		}
		r.Version = n
	}
	return r, nil
}
