// Package pairing is `palyra pairing`: pairing codes (create, list, delete) and the
// pairing requests that nodes make with them (list, show, approve, reject).
//
// A node pairs in three steps (DESIGN §3): an administrator creates a single-use code;
// the node presents it with a certificate signing request for a key that it generated
// and keeps; an administrator compares the request's key fingerprint with the one the
// node shows and approves, which has palyrad's CA sign the request. The request
// commands are also reachable as `palyra nodes pending|approve|reject`, built by the
// same constructors.
package pairing

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/palyra/palyra/cli/internal/cliflag"
	"github.com/palyra/palyra/cli/internal/cmd/deps"
	"github.com/palyra/palyra/cli/internal/output"
	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
)

// NewCommand returns `palyra pairing` and its subcommands.
func NewCommand(d *deps.Deps) *cobra.Command {
	c := &cobra.Command{
		Use:   "pairing",
		Short: "Create pairing codes; approve or reject the nodes that pair with them",
		Long: `pairing manages how nodes join: single-use pairing codes (PIN or QR) that an
administrator hands to a node's operator, and the pairing requests that nodes make with
them. Approving a request has palyrad's CA sign the node's key; compare the key
fingerprint the node shows with the request's before approving.`,
		Example: `  palyra pairing codes create --method pin --ttl 10m
  palyra pairing requests list --state pending
  palyra pairing requests approve 01JD5ZJ8Q0W1X2Y3Z4A5B6C7D8 --expect-fingerprint sha256:...`,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	c.AddCommand(newCodesCommand(d), newRequestsCommand(d))
	return c
}

func newCodesCommand(d *deps.Deps) *cobra.Command {
	c := &cobra.Command{
		Use:   "codes",
		Short: "Create, list and delete pairing codes",
		Long: `codes manages pairing codes (it needs the nodes.pair permission). A code is single
use, expires (10 minutes unless --ttl says otherwise), is burned after five wrong
attempts, and is shown once: palyrad keeps only its hash.`,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	c.AddCommand(newCodeCreateCommand(d), newCodeListCommand(d), newCodeDeleteCommand(d))
	return c
}

func newRequestsCommand(d *deps.Deps) *cobra.Command {
	c := &cobra.Command{
		Use:   "requests",
		Short: "List, show, approve and reject pairing requests",
		Long: `requests shows the nodes that asked to pair (nodes.read) and decides on them
(nodes.approve). A request is pending until approved, rejected or expired; an approved
request is completed once the node has collected its certificate.`,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	c.AddCommand(newRequestListCommand(d), newRequestShowCommand(d), NewApproveCommand(d), NewRejectCommand(d))
	return c
}

// parseCodeID parses the ID argument of a pairing code.
func parseCodeID(arg string) (string, error) {
	return cliflag.ParseID(arg, "pairing code", "palyra pairing codes list")
}

// parseRequestID parses the ID argument of a pairing request.
func parseRequestID(arg string) (string, error) {
	return cliflag.ParseID(arg, "pairing request", "palyra pairing requests list")
}

// codeTable writes one pairing code as rows of a name and a value.
func codeTable(w io.Writer, c *controlplanev1.PairingCode) {
	row := func(k, v string) { fmt.Fprintf(w, "%s\t%s\n", k, v) }
	row("ID", c.GetId())
	row("Method", output.Enum(c.GetMethod()))
	row("State", output.Enum(c.GetState()))
	row("Label", output.Cell(c.GetLabel()))
	row("Expires", output.Time(c.GetExpireTime(), "-"))
	row("Created", fmt.Sprintf("%s by %s", output.Time(c.GetCreateTime(), "-"), output.Cell(c.GetCreatedBy())))
	row("Failed attempts", fmt.Sprint(c.GetFailedAttempts()))
	if c.GetRequestId() != "" {
		row("Request", c.GetRequestId())
	}
}
