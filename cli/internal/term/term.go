// Package term tells whether a file is an interactive terminal, so that the CLI asks
// questions only of a person and refuses, rather than hangs, when it runs in a script.
// It uses the standard library's syscall package: a terminal is a file descriptor that
// answers the "get terminal attributes" ioctl.
package term

import "os"

// IsTerminal reports whether f is a terminal. A character device is not enough:
// /dev/null is one too, and is what a script's stdin often is.
func IsTerminal(f *os.File) bool {
	if f == nil {
		return false
	}
	return isTerminal(f.Fd())
}
