// Package nodes is `palyra nodes`: the paired devices that run the node agent. It lists
// the inventory (presence, capabilities, labels), shows a node with its certificates,
// runs a capability on a node (invoke, which creates a dispatch and follows it with
// the machinery of package dispatches), revokes a device, and rotates its
// certificates; its pending, approve and reject commands are `palyra pairing requests
// ...` under the names that OpenClaw and Palyra's Rust CLI use, built by package
// pairing.
package nodes

import (
	"context"
	"fmt"
	"io"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/palyra/palyra/cli/internal/client"
	"github.com/palyra/palyra/cli/internal/cliflag"
	"github.com/palyra/palyra/cli/internal/cmd/deps"
	"github.com/palyra/palyra/cli/internal/cmd/pairing"
	"github.com/palyra/palyra/cli/internal/output"
	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	"github.com/palyra/palyra/internal/cliusage"
)

// maxGrace is the longest grace a rotation allows the current certificates.
const maxGrace = 7 * 24 * time.Hour

// NewCommand returns `palyra nodes` and its subcommands.
func NewCommand(d *deps.Deps) *cobra.Command {
	c := &cobra.Command{
		Use:   "nodes",
		Short: "List, show and invoke paired nodes; revoke and rotate them; approve the ones waiting",
		Long: `nodes manages the paired devices that run the node agent: list them and show one
with its capabilities and certificates (nodes.read), run a capability on one
(invoke, nodes.dispatch), revoke it or rotate its certificates (nodes.revoke).
pending, approve and reject are palyra pairing requests list --state pending, approve
and reject.`,
		Example: `  palyra nodes list --presence online
  palyra nodes invoke 01JD5ZJ8Q0W1X2Y3Z4A5B6C7D8 shell.execute --input '{"argv":["uname","-a"]}'`,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	pending := pairing.NewPendingCommand(d)
	approve := pairing.NewApproveCommand(d)
	approve.Short += " (palyra pairing requests approve)"
	reject := pairing.NewRejectCommand(d)
	reject.Short += " (palyra pairing requests reject)"
	c.AddCommand(newListCommand(d), newShowCommand(d), newInvokeCommand(d), newRevokeCommand(d), newRotateCommand(d),
		pending, approve, reject)
	return c
}

// parseDeviceID parses the ID argument of a device.
func parseDeviceID(arg string) (string, error) {
	return cliflag.ParseID(arg, "device", "palyra nodes list")
}

func newRevokeCommand(d *deps.Deps) *cobra.Command {
	var reason string
	c := &cobra.Command{
		Use:   "revoke ID --reason R",
		Short: "Revoke a device and all its certificates; its connections close at once",
		Long: `revoke revokes a device and every certificate it holds: each replica of palyrad
refuses them at the TLS handshake and closes the device's open streams within a second.
The device cannot renew, nor pair again under its id unless an approver reinstates it
(palyra pairing requests approve --reinstate).`,
		Example: `  palyra nodes revoke 01JD5ZJ8Q0W1X2Y3Z4A5B6C7D8 --reason lost`,
		Args:    cobra.ExactArgs(1),
		RunE: deps.ByID[*controlplanev1.RevokeDeviceResponse]{
			ParseID: parseDeviceID,
			Check:   func() error { return cliflag.CheckReason(reason) },
			Call: func(ctx context.Context, c *client.Client, id string) (*controlplanev1.RevokeDeviceResponse, error) {
				return deps.Msg(c.Devices.RevokeDevice(ctx, connect.NewRequest(&controlplanev1.RevokeDeviceRequest{Id: id, Reason: reason})))
			},
			Table: func(w io.Writer, m *controlplanev1.RevokeDeviceResponse) { deviceTable(w, m.GetDevice()) },
		}.RunE(d),
	}
	c.Flags().StringVar(&reason, "reason", "", "why, recorded with the revocation (required, at most 256 bytes)")
	return c
}

func newRotateCommand(d *deps.Deps) *cobra.Command {
	var grace cliflag.Duration
	c := &cobra.Command{
		Use:   "rotate-cert ID",
		Short: "Make a device's certificates expire early, so that it renews with a new key",
		Long: `rotate-cert revokes the device's current certificates after a grace period (1h unless
--grace says otherwise, at most 7d). The node renews before then, with a new key; one
that does not loses its connection when the grace ends.`,
		Example: `  palyra nodes rotate-cert 01JD5ZJ8Q0W1X2Y3Z4A5B6C7D8 --grace 10m`,
		Args:    cobra.ExactArgs(1),
		RunE: deps.ByID[*controlplanev1.RotateDeviceCertificateResponse]{
			ParseID: parseDeviceID,
			Check: func() error {
				if grace.Value > maxGrace {
					return cliusage.Wrap(fmt.Errorf("--grace is at most 7d, got %s", grace.Value))
				}
				return nil
			},
			Call: func(ctx context.Context, c *client.Client, id string) (*controlplanev1.RotateDeviceCertificateResponse, error) {
				req := &controlplanev1.RotateDeviceCertificateRequest{Id: id}
				if grace.Value != 0 {
					req.Grace = durationpb.New(grace.Value)
				}
				return deps.Msg(c.Devices.RotateDeviceCertificate(ctx, connect.NewRequest(req)))
			},
			Table: func(w io.Writer, m *controlplanev1.RotateDeviceCertificateResponse) { deviceTable(w, m.GetDevice()) },
		}.RunE(d),
	}
	c.Flags().Var(&grace, "grace", "how long the current certificates keep working, up to 7d (default: palyrad's, 1h)")
	return c
}

// deviceTable writes a device as rows of a name and a value, then its certificates as
// a table.
func deviceTable(w io.Writer, dev *controlplanev1.Device) {
	row := func(k, v string) { fmt.Fprintf(w, "%s\t%s\n", k, v) }
	row("ID", dev.GetId())
	row("Name", output.Cell(dev.GetName()))
	row("Platform", output.Cell(dev.GetPlatform()))
	row("Agent version", output.Cell(dev.GetAgentVersion()))
	row("Labels", pairing.Labels(dev.GetLabels()))
	row("Paired", output.Time(dev.GetCreateTime(), "-"))
	revocationRows(w, dev)
	fmt.Fprintln(w)
	certificateTable(w, dev.GetCertificates())
}

// revocationRows writes whether a device is revoked, and when a rotation was asked.
func revocationRows(w io.Writer, dev *controlplanev1.Device) {
	if dev.GetRevokeTime() != nil {
		fmt.Fprintf(w, "Revoked\t%s (%s)\n", output.Time(dev.GetRevokeTime(), "-"), output.Cell(dev.GetRevokeReason()))
	} else {
		fmt.Fprintln(w, "Revoked\tno")
	}
	if dev.GetRotateTime() != nil {
		fmt.Fprintf(w, "Rotation asked\t%s\n", output.Time(dev.GetRotateTime(), "-"))
	}
}

// certificateTable writes a device's certificates as a table.
func certificateTable(w io.Writer, certs []*controlplanev1.DeviceCertificate) {
	fmt.Fprintln(w, "CERTIFICATE\tSERIAL\tNOT BEFORE\tNOT AFTER\tREVOKED")
	for _, c := range certs {
		revoked := "-"
		if c.GetRevokeTime() != nil {
			revoked = fmt.Sprintf("%s (%s)", output.Time(c.GetRevokeTime(), "-"), output.Cell(c.GetRevokeReason()))
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", c.GetFingerprint(), output.Cell(c.GetSerial()), output.Time(c.GetNotBefore(), "-"),
			output.Time(c.GetNotAfter(), "-"), revoked)
	}
}
