// Package labels parses and matches label selectors in the syntax of Kubernetes: a
// comma-separated list of requirements that must all hold (AND).
//
//	k=v, k==v        k is set and its value is v
//	k!=v             k is not set, or its value is not v
//	k                k is set (to any value, the empty one included)
//	!k               k is not set
//	k in (a,b)       k is set and its value is a or b
//	k notin (a,b)    k is not set, or its value is neither a nor b
//
// Spaces may surround every token. A key is 1 to 253 letters, digits, '.', '_', '-' and
// '/', starting and ending with a letter or digit (gpu, example.com/zone); a value is at
// most 255 letters, digits, '.', '_', '-', '/', ':', '@' and '+', and may be empty (k=
// asks for the empty value). The empty selector matches everything. A selector that does
// not parse is a *SyntaxError naming the position (1-based, in bytes) where it goes wrong.
//
// The package also holds what serves every list filtered by a selector (Page) and the
// rules of the labels of agents and browser profiles (Check).
package labels

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

const (
	// maxKey and maxValue bound a key's and a value's length, in bytes.
	maxKey   = 253
	maxValue = 255
	// maxSelector bounds a selector's length, in bytes.
	maxSelector = 4096
)

// Operator is what a Requirement asks of its key.
type Operator string

// The operators.
const (
	Equals       Operator = "="
	NotEquals    Operator = "!="
	Exists       Operator = "exists"
	DoesNotExist Operator = "!"
	In           Operator = "in"
	NotIn        Operator = "notin"
)

// Requirement is one condition on one key.
type Requirement struct {
	Key      string
	Operator Operator
	// Values are the values of in and notin (sorted, without duplicates), and the one
	// value of = and !=; none for exists and !.
	Values []string
}

// Matches reports whether labels satisfy r.
func (r Requirement) Matches(labels map[string]string) bool {
	v, ok := labels[r.Key]
	switch r.Operator {
	case Equals, In:
		return ok && slices.Contains(r.Values, v)
	case NotEquals, NotIn:
		return !ok || !slices.Contains(r.Values, v)
	case Exists:
		return ok
	case DoesNotExist:
		return !ok
	}
	return false
}

// String is r in the selector syntax.
func (r Requirement) String() string {
	switch r.Operator {
	case Exists:
		return r.Key
	case DoesNotExist:
		return "!" + r.Key
	case In, NotIn:
		return r.Key + " " + string(r.Operator) + " (" + strings.Join(r.Values, ",") + ")"
	}
	return r.Key + string(r.Operator) + r.Values[0]
}

// Effective returns a node's labels as selectors see them: those it reported, overridden
// by those an administrator gave its device. The given win, so that a node cannot
// relabel itself to attract work or to escape a selector. Every reader of a node's
// labels uses it (the ListNodes query's filter does the same in SQL). The result is a
// new map; neither argument changes.
func Effective(given, reported map[string]string) map[string]string {
	out := make(map[string]string, len(given)+len(reported))
	maps.Copy(out, reported)
	maps.Copy(out, given)
	return out
}

// Selector is a parsed selector: requirements that must all hold. The zero Selector is
// the empty one, which matches everything.
type Selector struct {
	reqs []Requirement
}

// Empty reports whether s has no requirement (and so matches everything).
func (s Selector) Empty() bool { return len(s.reqs) == 0 }

// Matches reports whether labels satisfy every requirement of s.
func (s Selector) Matches(labels map[string]string) bool {
	for _, r := range s.reqs {
		if !r.Matches(labels) {
			return false
		}
	}
	return true
}

// The rules of the labels that describe agents and browser profiles.
const (
	// MaxLabels is the most labels a thing has.
	MaxLabels = 32
	// maxValueBytes bounds a label's value.
	maxValueBytes = 255
)

// keyPattern is a label's key: 1 to 63 of a-z, 0-9, '.', '_' and '-', starting and
// ending with a letter or digit.
var keyPattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$`)

// Check reports through bad, as field or field[key], what is wrong with labels of a
// thing (an agent, a browser profile): more than MaxLabels, a bad key, a value longer
// than 255 bytes or not UTF-8 without NUL.
func Check(field, thing string, labels map[string]string, bad func(field, format string, args ...any)) {
	if len(labels) > MaxLabels {
		bad(field, "%s has at most %d labels, not %d", thing, MaxLabels, len(labels))
	}
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		v := labels[k]
		switch {
		case !keyPattern.MatchString(k):
			bad(field+"["+k+"]", "a label's key is 1 to 63 letters a-z, digits, '.', '_' and '-', starting and ending with a letter or digit")
		case len(v) > maxValueBytes || !utf8.ValidString(v) || strings.ContainsRune(v, 0):
			bad(field+"["+k+"]", "a label's value is at most %d bytes of UTF-8", maxValueBytes)
		}
	}
}

// Page collects a page of up to size items that s matches, reading the items in the
// order of their keys with read (up to limit items after the key after, and whether
// more may follow), starting after the key after. next is the key of the page's last
// item when another item matches beyond it, "" on the last page.
func Page[T any](s Selector, size int, after string, key func(T) string, labels func(T) map[string]string,
	read func(after string, limit int) ([]T, bool, error)) (page []T, next string, err error) {
	for {
		items, more, err := read(after, size+1)
		if err != nil {
			return nil, "", err
		}
		for _, it := range items {
			after = key(it)
			if !s.Matches(labels(it)) {
				continue
			}
			if len(page) == size {
				// One more matches: the page is full and there is a next one.
				return page, key(page[len(page)-1]), nil
			}
			page = append(page, it)
		}
		if !more {
			return page, "", nil
		}
	}
}

// String is s in its canonical form (what Parse reads back as the same selector):
// the requirements in the order written, joined by ",".
func (s Selector) String() string {
	parts := make([]string, len(s.reqs))
	for i, r := range s.reqs {
		parts[i] = r.String()
	}
	return strings.Join(parts, ",")
}

// SyntaxError is a selector that does not parse.
type SyntaxError struct {
	// Pos is the 1-based byte position where the selector goes wrong (its length + 1
	// at its end).
	Pos int
	// Msg says what was expected there.
	Msg string
}

// Error implements error.
func (e *SyntaxError) Error() string {
	return fmt.Sprintf("at position %d: %s", e.Pos, e.Msg)
}

// Parse reads a selector; "" (or only spaces) is the empty selector.
func Parse(s string) (Selector, error) {
	if len(s) > maxSelector {
		return Selector{}, &SyntaxError{Pos: maxSelector + 1, Msg: fmt.Sprintf("the selector is longer than %d bytes", maxSelector)}
	}
	p := &parser{src: s}
	var sel Selector
	if p.skip(); p.pos == len(s) {
		return sel, nil
	}
	for {
		r, err := p.requirement()
		if err != nil {
			return Selector{}, err
		}
		sel.reqs = append(sel.reqs, r)
		p.skip()
		if p.pos == len(s) {
			return sel, nil
		}
		if s[p.pos] != ',' {
			return Selector{}, p.errorf(`want "," between requirements, found %s`, p.found())
		}
		p.pos++
		p.skip()
	}
}

// parser reads src from pos.
type parser struct {
	src string
	pos int
}

// skip skips spaces.
func (p *parser) skip() {
	for p.pos < len(p.src) && (p.src[p.pos] == ' ' || p.src[p.pos] == '\t') {
		p.pos++
	}
}

// errorf is a SyntaxError at the current position.
func (p *parser) errorf(format string, args ...any) error {
	return &SyntaxError{Pos: p.pos + 1, Msg: fmt.Sprintf(format, args...)}
}

// found names what is at the current position, for an error.
func (p *parser) found() string {
	if p.pos >= len(p.src) {
		return "the end"
	}
	rest := p.src[p.pos:]
	if w := p.peekWord(); w != "" {
		rest = w
	} else {
		rest = rest[:1]
	}
	return strconv.Quote(rest)
}

// wordByte reports whether c may be part of a key or a value.
func wordByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		strings.IndexByte("._-/:@+", c) >= 0
}

// peekWord returns the word at the current position, without moving.
func (p *parser) peekWord() string {
	end := p.pos
	for end < len(p.src) && wordByte(p.src[end]) {
		end++
	}
	return p.src[p.pos:end]
}

// requirement reads one requirement.
func (p *parser) requirement() (Requirement, error) {
	if p.pos == len(p.src) {
		return Requirement{}, p.errorf(`want a requirement after ",", found the end`)
	}
	if p.src[p.pos] == '!' {
		p.pos++
		p.skip()
		key, err := p.key()
		if err != nil {
			return Requirement{}, err
		}
		return Requirement{Key: key, Operator: DoesNotExist}, nil
	}
	key, err := p.key()
	if err != nil {
		return Requirement{}, err
	}
	p.skip()
	rest := p.src[p.pos:]
	switch {
	case rest == "" || rest[0] == ',':
		return Requirement{Key: key, Operator: Exists}, nil
	case strings.HasPrefix(rest, "=="), strings.HasPrefix(rest, "!="):
		op := Equals
		if rest[0] == '!' {
			op = NotEquals
		}
		p.pos += 2
		return p.single(key, op)
	case rest[0] == '=':
		p.pos++
		return p.single(key, Equals)
	}
	switch w := p.peekWord(); w {
	case "in", "notin":
		p.pos += len(w)
		return p.set(key, Operator(w))
	}
	return Requirement{}, p.errorf(`want "=", "==", "!=", "in", "notin", "," or the end after the key %q, found %s`, key, p.found())
}

// single reads the value of = or !=.
func (p *parser) single(key string, op Operator) (Requirement, error) {
	p.skip()
	v, err := p.value()
	if err != nil {
		return Requirement{}, err
	}
	return Requirement{Key: key, Operator: op, Values: []string{v}}, nil
}

// set reads the values of in and notin: "(a,b)", not empty.
func (p *parser) set(key string, op Operator) (Requirement, error) {
	p.skip()
	if p.pos == len(p.src) || p.src[p.pos] != '(' {
		return Requirement{}, p.errorf(`want "(" after %q, found %s`, string(op), p.found())
	}
	p.pos++
	var values []string
	for {
		p.skip()
		if p.pos < len(p.src) && p.src[p.pos] == ')' && len(values) == 0 {
			return Requirement{}, p.errorf("%s needs at least one value", op)
		}
		v, err := p.value()
		if err != nil {
			return Requirement{}, err
		}
		values = append(values, v)
		p.skip()
		switch {
		case p.pos < len(p.src) && p.src[p.pos] == ',':
			p.pos++
			continue
		case p.pos < len(p.src) && p.src[p.pos] == ')':
			p.pos++
			slices.Sort(values)
			return Requirement{Key: key, Operator: op, Values: slices.Compact(values)}, nil
		}
		return Requirement{}, p.errorf(`want "," or ")" in the values of %s, found %s`, op, p.found())
	}
}

// key reads a key.
func (p *parser) key() (string, error) {
	start := p.pos
	k := p.peekWord()
	switch {
	case k == "":
		return "", p.errorf("want a key, found %s", p.found())
	case len(k) > maxKey:
		return "", p.errorf("the key is longer than %d bytes", maxKey)
	case !alnum(k[0]) || !alnum(k[len(k)-1]) || strings.ContainsAny(k, ":@+"):
		return "", p.errorf("the key %q must be letters, digits, '.', '_', '-' and '/', starting and ending with a letter or digit", k)
	}
	p.pos = start + len(k)
	return k, nil
}

// value reads a value, which may be empty.
func (p *parser) value() (string, error) {
	v := p.peekWord()
	if len(v) > maxValue {
		return "", p.errorf("the value is longer than %d bytes", maxValue)
	}
	if v == "" && p.pos < len(p.src) && !strings.ContainsRune(",) \t", rune(p.src[p.pos])) {
		return "", p.errorf("want a value (letters, digits, '.', '_', '-', '/', ':', '@', '+'), found %s", p.found())
	}
	p.pos += len(v)
	return v, nil
}

// alnum reports whether c is an ASCII letter or digit.
func alnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}
