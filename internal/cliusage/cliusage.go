// Package cliusage marks command-line mistakes (unknown commands and flags, wrong
// arguments) with a type, so that palyrad and palyra can tell them from failures and
// exit with code 2 without matching error strings.
package cliusage

import (
	"errors"

	"github.com/spf13/cobra"
)

// Error is a mistake in the command line.
type Error struct{ error }

// Wrap marks err as a command-line mistake, for checks a command makes itself.
func Wrap(err error) error { return Error{err} }

// Unwrap returns the underlying error.
func (e Error) Unwrap() error { return e.error }

// Is reports whether err is, or wraps, a command-line mistake.
func Is(err error) bool { return errors.As(err, new(Error)) }

// Mark makes root and all its subcommands report flag and argument errors as Error.
// Commands without an argument rule get cobra.NoArgs, which also catches unknown
// subcommands. Call it after the tree is complete.
func Mark(root *cobra.Command) {
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return Error{err} })
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		args := c.Args
		if args == nil {
			args = cobra.NoArgs
		}
		c.Args = func(cmd *cobra.Command, a []string) error {
			if err := args(cmd, a); err != nil {
				return Error{err}
			}
			return nil
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}
