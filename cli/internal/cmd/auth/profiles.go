package auth

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/palyra/palyra/cli/internal/cmd/deps"
	"github.com/palyra/palyra/cli/internal/output"
	"github.com/palyra/palyra/cli/internal/profile"
	"github.com/palyra/palyra/internal/cliusage"
)

func newProfilesCommand(d *deps.Deps) *cobra.Command {
	c := &cobra.Command{
		Use:   "profiles",
		Short: "List the saved profiles, or choose the current one",
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	c.AddCommand(newProfilesListCommand(d), newProfilesUseCommand(d))
	return c
}

// profileView is a profile as `profiles list -o json` shows it: never with its token.
type profileView struct {
	Name          string `json:"name"`
	Current       bool   `json:"current"`
	URL           string `json:"url"`
	CAFingerprint string `json:"caFingerprint"`
	HasToken      bool   `json:"hasToken"`
}

// profilesView is the output of `profiles list -o json`.
type profilesView struct {
	Path     string        `json:"path"`
	Current  string        `json:"current"`
	Profiles []profileView `json:"profiles"`
}

// viewProfiles returns what `profiles list` shows of f: everything but the tokens.
func viewProfiles(path string, f *profile.File) profilesView {
	v := profilesView{Path: path, Current: f.Current, Profiles: []profileView{}}
	for _, name := range f.Names() {
		p, _ := f.Get(name)
		v.Profiles = append(v.Profiles, profileView{
			Name: name, Current: name == f.Current, URL: p.URL,
			CAFingerprint: p.CAFingerprint, HasToken: p.Token != "",
		})
	}
	return v
}

func newProfilesListCommand(d *deps.Deps) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the profiles: name, URL, pinned CA, whether a token is saved; * marks the current one",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			path, file, err := d.Profiles()
			if err != nil {
				return err
			}
			v := viewProfiles(path, file)
			if len(v.Profiles) == 0 && d.Output != output.JSON {
				fmt.Fprintf(d.Stderr, "no profiles in %s; create one with `palyra auth login`\n", path)
				return nil
			}
			return output.PrintValue(d.Stdout, d.Output, v, func(w io.Writer) { profilesTable(w, v) })
		},
	}
}

func profilesTable(w io.Writer, v profilesView) {
	fmt.Fprintln(w, "CURRENT\tNAME\tURL\tCA FINGERPRINT\tTOKEN")
	for _, p := range v.Profiles {
		current, token := "", "no"
		if p.Current {
			current = "*"
		}
		if p.HasToken {
			token = "yes"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", current, p.Name, p.URL, output.Cell(p.CAFingerprint), token)
	}
}

func newProfilesUseCommand(d *deps.Deps) *cobra.Command {
	return &cobra.Command{
		Use:     "use NAME",
		Short:   "Make a profile the current one",
		Example: "  palyra auth profiles use prod",
		Args:    cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			name := args[0]
			if err := profile.CheckName(name); err != nil {
				return cliusage.Wrap(err)
			}
			path, file, err := d.Profiles()
			if err != nil {
				return err
			}
			p, ok := file.Get(name)
			if !ok {
				return fmt.Errorf("there is no profile %q in %s (see `palyra auth profiles list`)", name, path)
			}
			file.Current = name
			if err := profile.Save(path, file); err != nil {
				return err
			}
			fmt.Fprintf(d.Stdout, "Now using profile %s (%s)\n", name, p.URL)
			return nil
		},
	}
}
