package deps

import (
	"context"
	"io"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	"github.com/palyra/palyra/cli/internal/client"
	"github.com/palyra/palyra/cli/internal/output"
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
