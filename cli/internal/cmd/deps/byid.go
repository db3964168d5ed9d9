package deps

import (
	"context"
	"fmt"
	"io"
	"regexp"
	"strings"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	"github.com/palyra/palyra/cli/internal/client"
	"github.com/palyra/palyra/cli/internal/output"
	"github.com/palyra/palyra/internal/cliusage"
)

// ByID is a command that acts on one thing named by its ID argument with one call to
// palyrad: parse the id, check the other flags, connect, call, print the answer (a
// table, or with -o json the answer's protojson). M is the answer.
type ByID[M proto.Message] struct {
	// ParseID checks the ID argument and returns the id to send.
	ParseID func(arg string) (string, error)
	// Check, when set, checks the other flags (e.g. --reason) before connecting.
	Check func() error
	// Call makes the call with the parsed id.
	Call func(ctx context.Context, c *client.Client, id string) (M, error)
	// Table writes the answer as a table.
	Table func(w io.Writer, m M)
}

// RunE returns the command's RunE; the command takes exactly one argument, the id.
func (b ByID[M]) RunE(d *Deps) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		id, err := b.ParseID(args[0])
		if err != nil {
			return err
		}
		if b.Check != nil {
			if err := b.Check(); err != nil {
				return err
			}
		}
		c, err := d.Client()
		if err != nil {
			return err
		}
		m, err := b.Call(cmd.Context(), c, id)
		if err != nil {
			return err
		}
		return output.Print(d.Stdout, d.Output, m, func(w io.Writer) { b.Table(w, m) })
	}
}

// Msg returns the message of a unary call's response, for ByID.Call:
// return deps.Msg(c.Access.GetToken(ctx, req)).
func Msg[T any](res *connect.Response[T], err error) (*T, error) {
	if err != nil {
		return nil, err
	}
	return res.Msg, nil
}

var (
	namePattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	idPattern   = regexp.MustCompile(`^[0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{26}$`)
)

// ParseNameOrID reads the argument naming a thing whose name is a lower-case DNS label
// (an agent, a browser profile) by its name or its id: a ULID is an id (upper-cased), a
// name otherwise; a string that is both is a name. A bad one is a usage error naming
// noun.
func ParseNameOrID(noun, arg string) (id, name string, err error) {
	switch {
	case idPattern.MatchString(arg) && !namePattern.MatchString(arg):
		return strings.ToUpper(arg), "", nil
	case namePattern.MatchString(arg):
		return "", arg, nil
	}
	return "", "", cliusage.Wrap(fmt.Errorf("invalid %s %q: its name (1 to 63 lower-case letters, digits and '-', "+
		"starting and ending with a letter or digit) or its id", noun, arg))
}
