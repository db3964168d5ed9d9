// Package flags is `palyra flags`: list palyrad's feature flags and turn them on or
// off. The daemon enforces their dependencies: a flag turns on only while the flags it
// depends on are on.
package flags

import (
	"fmt"
	"io"
	"regexp"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	"github.com/palyra/palyra/cli/internal/cliflag"
	"github.com/palyra/palyra/cli/internal/cmd/deps"
	"github.com/palyra/palyra/cli/internal/output"
	accessv1 "github.com/palyra/palyra/gen/go/palyra/access/v1"
	"github.com/palyra/palyra/internal/cliusage"
)

// NewCommand returns `palyra flags` and its subcommands.
func NewCommand(d *deps.Deps) *cobra.Command {
	c := &cobra.Command{
		Use:   "flags",
		Short: "List feature flags, turn them on or off",
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	c.AddCommand(newListCommand(d), newSetCommand(d))
	return c
}

func newListCommand(d *deps.Deps) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the feature flags: state, stage, dependencies, description",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := d.Client()
			if err != nil {
				return err
			}
			res, err := c.Flags.ListFlags(cmd.Context(), connect.NewRequest(&accessv1.ListFlagsRequest{}))
			if err != nil {
				return err
			}
			return output.Print(d.Stdout, d.Output, res.Msg, func(w io.Writer) { table(w, res.Msg.GetFlags()...) })
		},
	}
}

var keyPattern = regexp.MustCompile(`^[a-z][a-z0-9_]{0,63}$`)

// ParseSetArgs parses the arguments of `flags set`: a flag key and a state (on, off,
// true, false, enable, disable). Bad arguments are usage errors.
func ParseSetArgs(args []string) (key string, enabled bool, err error) {
	if len(args) != 2 {
		return "", false, cliusage.Wrap(fmt.Errorf("flags set takes a key and a state (on or off), got %d arguments", len(args)))
	}
	if !keyPattern.MatchString(args[0]) {
		return "", false, cliusage.Wrap(fmt.Errorf("invalid flag key %q: keys are lower-case, like compat_api (see `palyra flags list`)", args[0]))
	}
	enabled, err = cliflag.ParseSwitch(args[1])
	if err != nil {
		return "", false, cliusage.Wrap(err)
	}
	return args[0], enabled, nil
}

func newSetCommand(d *deps.Deps) *cobra.Command {
	return &cobra.Command{
		Use:   "set KEY on|off",
		Short: "Turn a feature flag on or off",
		Long: `set turns a feature flag on or off (it needs the flags.manage permission). A flag turns
on only while the flags it depends on are on, and off only while no flag that is on
depends on it.`,
		Example: `  palyra flags set compat_api on
  palyra flags set compat_streaming off`,
		// The arguments are checked by ParseSetArgs, with messages that say what is wrong.
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			key, enabled, err := ParseSetArgs(args)
			if err != nil {
				return err
			}
			c, err := d.Client()
			if err != nil {
				return err
			}
			res, err := c.Flags.SetFlag(cmd.Context(), connect.NewRequest(&accessv1.SetFlagRequest{Key: key, Enabled: enabled}))
			if err != nil {
				return err
			}
			return output.Print(d.Stdout, d.Output, res.Msg, func(w io.Writer) { table(w, res.Msg.GetFlag()) })
		},
	}
}

// table writes flags as a table with a header.
func table(w io.Writer, flags ...*accessv1.Flag) {
	fmt.Fprintln(w, "KEY\tSTATE\tSTAGE\tDEPENDS ON\tDESCRIPTION")
	for _, f := range flags {
		state := "off"
		if f.GetEnabled() {
			state = "on"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", f.GetKey(), state, output.Enum(f.GetStage()),
			output.List(f.GetDependsOn()), output.Cell(f.GetDescription()))
	}
}
