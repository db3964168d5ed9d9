package deps

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	"github.com/palyra/palyra/cli/internal/client"
	"github.com/palyra/palyra/cli/internal/cliflag"
	"github.com/palyra/palyra/cli/internal/output"
)

// Paged is a list call's response: one page of items and the token of the next page.
type Paged interface {
	proto.Message
	GetNextPageToken() string
}

// List is a command that lists things with one paged call to palyrad: check the flags,
// connect, fetch a page (with --all every page), print the items (a table, or with
// -o json a response holding them all). When a page is left and the output is a table,
// it says so on stderr. T is an item, M the call's response.
type List[T any, M Paged] struct {
	// Paging is the command's --limit and --all, bound with Paging.Bind.
	Paging *cliflag.Paging
	// Noun names the items in the note "more <Noun> follow: pass --all to list them all".
	Noun string
	// Check, when set, checks the other flags, before --limit.
	Check func() error
	// Page fetches the page of pageToken ("" for the first) with Paging.Limit items at
	// most: return deps.Msg(c.Secrets.ListSecrets(ctx, connect.NewRequest(req))).
	Page func(ctx context.Context, c *client.Client, pageToken string) (M, error)
	// Items returns a page's items, e.g. (*ListSecretsResponse).GetSecrets.
	Items func(M) []T
	// Response returns the response printed with -o json: the items and the next page's
	// token, "" when none is left.
	Response func(items []T, next string) M
	// Table writes the items as a table.
	Table func(w io.Writer, items []T)
}

// RunE returns the command's RunE.
func (l List[T, M]) RunE(d *Deps) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, _ []string) error {
		if l.Check != nil {
			if err := l.Check(); err != nil {
				return err
			}
		}
		if err := l.Paging.Check(cmd.Flags()); err != nil {
			return err
		}
		c, err := d.Client()
		if err != nil {
			return err
		}
		items, next, err := client.Pages(l.Paging.All, func(page string) ([]T, string, error) {
			m, err := l.Page(cmd.Context(), c, page)
			if err != nil {
				return nil, "", err
			}
			return l.Items(m), m.GetNextPageToken(), nil
		})
		if err != nil {
			return err
		}
		if next != "" && d.Output != output.JSON {
			fmt.Fprintf(d.Stderr, "more %s follow: pass --all to list them all\n", l.Noun)
		}
		return output.Print(d.Stdout, d.Output, l.Response(items, next), func(w io.Writer) { l.Table(w, items) })
	}
}
