package auth

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/palyra/palyra/cli/internal/cmd/deps"
	"github.com/palyra/palyra/cli/internal/profile"
)

func newLogoutCommand(d *deps.Deps) *cobra.Command {
	var forget bool
	c := &cobra.Command{
		Use:   "logout",
		Short: "Remove the token from the profile (or the whole profile with --forget)",
		Long: `logout removes the API token from the selected profile (--profile, else the current
one), keeping its URL and pinned CA for the next login; --forget removes the whole
profile. The token itself stays valid on the server until it expires or is revoked
(palyra auth tokens revoke ID).`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			path, file, err := d.Profiles()
			if err != nil {
				return err
			}
			name, _, err := d.ProfileName(file)
			if err != nil {
				return err
			}
			if name == "" {
				return errors.New("no profile is selected: pass --profile NAME (see `palyra auth profiles list`)")
			}
			p, ok := file.Get(name)
			if !ok {
				return fmt.Errorf("there is no profile %q in %s", name, path)
			}
			id := tokenID(p.Token)
			if forget {
				file.Delete(name)
			} else {
				p.Token = ""
			}
			if err := profile.Save(path, file); err != nil {
				return err
			}
			if forget {
				fmt.Fprintf(d.Stdout, "Removed profile %s (%s)\n", name, p.URL)
			} else {
				fmt.Fprintf(d.Stdout, "Logged out of profile %s (%s)\n", name, p.URL)
			}
			if id != "" {
				fmt.Fprintf(d.Stderr, "The token %s stays valid until it expires or is revoked: palyra auth tokens revoke %s\n", id, id)
			}
			return nil
		},
	}
	c.Flags().BoolVar(&forget, "forget", false, "remove the whole profile, not only its token")
	return c
}

// tokenID returns the public id in a token "plr_<id>_<secret>", or "" when token does
// not have that shape.
func tokenID(token string) string {
	rest, ok := strings.CutPrefix(token, "plr_")
	if !ok {
		return ""
	}
	id, _, ok := strings.Cut(rest, "_")
	if !ok || len(id) != 26 {
		return ""
	}
	return id
}
