package capability

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Argument rules: what a [[shell.program]] table of node.toml allows a run to pass to its
// program. A rule is one allowed argument list (argv without argv[0]), matched element by
// element, like a Cmnd with arguments in sudoers but with no wildcard that spans
// arguments:
//
//	args = [
//	  ["-C", "/src"],                                  # exactly make -C /src
//	  ["-C", "/src", { regex = "test|build|lint" }],   # one argument matching the regex
//	  ["status", { rest = "[a-z0-9@._-]+" }],          # then any number of such arguments
//	]
//
// A string matches exactly that argument. { regex = "…" } matches one argument that the
// regular expression (RE2) matches as a whole: it is anchored at both ends. { rest = "…" }
// may only end a rule: it matches zero or more further arguments, each matched as a
// whole. A run is allowed when its arguments match at least one rule.

// ArgPattern is one element of an argument rule: a literal argument, a regular expression
// that one argument must match as a whole (Regex), or one that every remaining argument
// must match (Rest). It is written in TOML as a string, { regex = "…" } or
// { rest = "…" }.
type ArgPattern struct {
	// Literal is the argument itself, when the pattern is a TOML string.
	Literal string `toml:"-"`
	// Regex is a regular expression one argument must match as a whole.
	Regex string `toml:"regex"`
	// Rest is a regular expression each of the remaining arguments (zero or more) must
	// match as a whole; only the last pattern of a rule may be one.
	Rest string `toml:"rest"`

	literal bool           // the pattern was a string (an empty literal matches "")
	re      *regexp.Regexp // Regex or Rest compiled, anchored; set by compile
}

// Lit returns the pattern of the literal argument s.
func Lit(s string) ArgPattern { return ArgPattern{Literal: s, literal: true} }

// UnmarshalText makes a TOML string a literal pattern.
func (p *ArgPattern) UnmarshalText(b []byte) error {
	*p = Lit(string(b))
	return nil
}

// isLiteral reports whether p matches one argument exactly.
func (p *ArgPattern) isLiteral() bool { return p.literal }

// compile checks p and compiles its regular expression into p.re; last says whether p
// ends its rule.
func (p *ArgPattern) compile(last bool) error {
	switch {
	case p.literal:
		if p.Regex != "" || p.Rest != "" {
			return errors.New("a pattern is a string, { regex = ... } or { rest = ... }, not several")
		}
		return nil
	case p.Regex != "" && p.Rest != "":
		return errors.New("a pattern has regex or rest, not both")
	case p.Regex == "" && p.Rest == "":
		return errors.New(`a pattern is a string, { regex = "..." } or { rest = "..." } with a non-empty expression`)
	case p.Rest != "" && !last:
		return errors.New("{ rest = ... } may only end an argument list")
	}
	expr := p.Regex + p.Rest
	re, err := regexp.Compile(`^(?:` + expr + `)$`)
	if err != nil {
		return fmt.Errorf("regular expression %q: %w", expr, unwrapSyntax(err))
	}
	p.re = re
	return nil
}

// unwrapSyntax drops the repeated expression from a *syntax.Error message.
func unwrapSyntax(err error) error {
	msg := err.Error()
	if i := strings.Index(msg, ": `"); i > 0 {
		return errors.New(strings.TrimPrefix(msg[:i], "error parsing regexp: "))
	}
	return err
}

// String writes p as it reads in a refusal: a literal quoted when it needs it, a regex
// in angle brackets, rest followed by "...".
func (p ArgPattern) String() string {
	switch {
	case p.literal:
		return quoteArg(p.Literal)
	case p.Rest != "":
		return "<" + p.Rest + ">..."
	}
	return "<" + p.Regex + ">"
}

// ArgRule is one allowed argument list: argv without argv[0], element by element.
type ArgRule []ArgPattern

// compiled returns a copy of r with its patterns checked and compiled, for match.
func (r ArgRule) compiled() (ArgRule, error) {
	out := slices.Clone(r)
	for i := range out {
		if err := out[i].compile(i == len(out)-1); err != nil {
			return nil, fmt.Errorf("argument %d: %w", i+1, err)
		}
	}
	return out, nil
}

// literal reports whether every pattern of r is a literal argument.
func (r ArgRule) literal() bool {
	for i := range r {
		if !r[i].isLiteral() {
			return false
		}
	}
	return true
}

// match reports whether args (argv without argv[0]) fits r, which compiled returned.
func (r ArgRule) match(args []string) bool {
	for i, p := range r {
		switch {
		case p.Rest != "":
			for _, a := range args[i:] {
				if !p.re.MatchString(a) {
					return false
				}
			}
			return true
		case i >= len(args):
			return false
		case p.literal:
			if args[i] != p.Literal {
				return false
			}
		case !p.re.MatchString(args[i]):
			return false
		}
	}
	return len(args) == len(r)
}

// format writes r as a command line of program, for a refusal.
func (r ArgRule) format(program string) string {
	parts := make([]string, 0, len(r)+1)
	parts = append(parts, program)
	for _, p := range r {
		parts = append(parts, p.String())
	}
	return strings.Join(parts, " ")
}

// quoteArg quotes an argument for a message when it is empty or holds anything but
// characters that need no quoting in a shell.
func quoteArg(s string) string {
	const plain = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:@%+=,"
	if s != "" && strings.Trim(s, plain) == "" {
		return s
	}
	return strconv.Quote(s)
}
