// Package version is `palyra version`.
package version

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/palyra/palyra/cli/internal/cmd/deps"
	"github.com/palyra/palyra/internal/buildinfo"
)

// NewCommand returns `palyra version`.
func NewCommand(d *deps.Deps) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version of the palyra CLI",
		Args:  cobra.NoArgs,
		Run: func(*cobra.Command, []string) {
			fmt.Fprintln(d.Stdout, "palyra", buildinfo.Version())
		},
	}
}
