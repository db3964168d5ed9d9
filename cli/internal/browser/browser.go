// Package browser opens a URL in the user's web browser, for `palyra console`: with
// xdg-open, on a machine that has one and a graphical session (DISPLAY or
// WAYLAND_DISPLAY). Elsewhere (a server over SSH, CI) there is no opener, and the
// command prints the URL for the user to open.
package browser

import (
	"context"
	"fmt"
	"os/exec"
)

// Opener returns the function that opens a URL, or nil when this machine has no way to
// open one. getenv reads the environment and lookPath finds a program (os.Getenv and
// exec.LookPath in palyra).
func Opener(getenv func(string) string, lookPath func(string) (string, error)) func(ctx context.Context, url string) error {
	if getenv("DISPLAY") == "" && getenv("WAYLAND_DISPLAY") == "" {
		return nil
	}
	path, err := lookPath("xdg-open")
	if err != nil {
		return nil
	}
	return func(ctx context.Context, url string) error {
		// xdg-open hands the URL to the browser and returns; its output is the
		// browser's chatter, not ours.
		if err := exec.CommandContext(ctx, path, url).Run(); err != nil {
			return fmt.Errorf("xdg-open: %w", err)
		}
		return nil
	}
}
