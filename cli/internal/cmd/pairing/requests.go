package pairing

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	"github.com/palyra/palyra/cli/internal/client"
	"github.com/palyra/palyra/cli/internal/cliflag"
	"github.com/palyra/palyra/cli/internal/cmd/deps"
	"github.com/palyra/palyra/cli/internal/output"
	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	"github.com/palyra/palyra/gen/go/palyra/controlplane/v1/controlplanev1connect"
	nodev1 "github.com/palyra/palyra/gen/go/palyra/node/v1"
	"github.com/palyra/palyra/internal/cliusage"
)

// states maps the --state names to the API's pairing states. "pending_approval" is
// the state's full name, which people coming from other tools type.
var states = map[string]nodev1.PairingState{
	"pending":          nodev1.PairingState_PAIRING_STATE_PENDING_APPROVAL,
	"pending_approval": nodev1.PairingState_PAIRING_STATE_PENDING_APPROVAL,
	"approved":         nodev1.PairingState_PAIRING_STATE_APPROVED,
	"completed":        nodev1.PairingState_PAIRING_STATE_COMPLETED,
	"rejected":         nodev1.PairingState_PAIRING_STATE_REJECTED,
	"expired":          nodev1.PairingState_PAIRING_STATE_EXPIRED,
}

// listRequests returns the RunE of a command that lists the pairing requests in the
// state that state returns; `pairing requests list` and `nodes pending` share it.
func listRequests(d *deps.Deps, paging *cliflag.Paging, state func() nodev1.PairingState) func(*cobra.Command, []string) error {
	return deps.List[*controlplanev1.PairingRequest, *controlplanev1.ListPairingRequestsResponse]{
		Paging: paging,
		Noun:   "requests",
		Page: func(ctx context.Context, c *client.Client, page string) (*controlplanev1.ListPairingRequestsResponse, error) {
			return deps.Msg(c.Pairing.ListPairingRequests(ctx, connect.NewRequest(&controlplanev1.ListPairingRequestsRequest{
				State: state(), PageSize: paging.Limit, PageToken: page,
			})))
		},
		Items: (*controlplanev1.ListPairingRequestsResponse).GetPairingRequests,
		Response: func(reqs []*controlplanev1.PairingRequest, next string) *controlplanev1.ListPairingRequestsResponse {
			return &controlplanev1.ListPairingRequestsResponse{PairingRequests: reqs, NextPageToken: next}
		},
		Table: func(w io.Writer, reqs []*controlplanev1.PairingRequest) { requestListTable(w, reqs, d.Clock()) },
	}.RunE(d)
}

func newRequestListCommand(d *deps.Deps) *cobra.Command {
	var (
		paging cliflag.Paging
		state  = cliflag.NewChoice("pending", "pending_approval", "approved", "completed", "rejected", "expired")
	)
	c := &cobra.Command{
		Use:   "list",
		Short: "List pairing requests, newest first",
		Example: `  palyra pairing requests list --state pending
  palyra pairing requests list --all -o json`,
		Args: cobra.NoArgs,
		RunE: listRequests(d, &paging, func() nodev1.PairingState { return states[state.Value] }),
	}
	c.Flags().Var(state, "state", "list only the requests in this state")
	paging.Bind(c.Flags(), "requests", "every request")
	return c
}

// NewPendingCommand returns `pending`: the pairing requests waiting for approval, as
// `palyra pairing requests list --state pending` lists them. `palyra nodes pending` is
// this command.
func NewPendingCommand(d *deps.Deps) *cobra.Command {
	var paging cliflag.Paging
	c := &cobra.Command{
		Use:     "pending",
		Short:   "List the pairing requests waiting for approval (palyra pairing requests list --state pending)",
		Example: "  palyra nodes pending",
		Args:    cobra.NoArgs,
		RunE: listRequests(d, &paging, func() nodev1.PairingState {
			return nodev1.PairingState_PAIRING_STATE_PENDING_APPROVAL
		}),
	}
	paging.Bind(c.Flags(), "requests", "every request")
	return c
}

// requestAge is how long ago a request was made: the server's age, else computed from
// its creation time.
func requestAge(r *controlplanev1.PairingRequest, now time.Time) string {
	switch {
	case r.GetAge() != nil:
		return output.Age(r.GetAge().AsDuration())
	case r.GetCreateTime() != nil:
		return output.Age(now.Sub(r.GetCreateTime().AsTime()))
	}
	return "-"
}

func requestListTable(w io.Writer, reqs []*controlplanev1.PairingRequest, now time.Time) {
	fmt.Fprintln(w, "ID\tSTATE\tDEVICE NAME\tPLATFORM\tSOURCE\tKEY FINGERPRINT\tREPLACES\tAGE")
	for _, r := range reqs {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.GetId(), output.Enum(r.GetState()), output.Cell(r.GetDeviceName()),
			output.Cell(r.GetPlatform()), output.Cell(r.GetSourceAddress()), output.ShortFingerprint(r.GetPublicKeyFingerprint()),
			replacesCell(r), requestAge(r, now))
	}
}

// replacesCell says which existing device a request would replace, and whether its node
// proved to be that device: "-" for a new device, else the device id and "proven",
// "UNPROVEN" or "REVOKED" (the last two need the approver's choice).
func replacesCell(r *controlplanev1.PairingRequest) string {
	switch r.GetDeviceClaim() {
	case nodev1.DeviceClaim_DEVICE_CLAIM_PROVEN:
		return r.GetPreviousDeviceId() + " proven"
	case nodev1.DeviceClaim_DEVICE_CLAIM_UNPROVEN, nodev1.DeviceClaim_DEVICE_CLAIM_REVOKED:
		return r.GetPreviousDeviceId() + " " + strings.ToUpper(output.Enum(r.GetDeviceClaim()))
	}
	return "-"
}

// claimText explains a request's device claim in a sentence, with what an approver of
// a pending request must pass.
func claimText(r *controlplanev1.PairingRequest) string {
	prev, pending := r.GetPreviousDeviceId(), r.GetState() == nodev1.PairingState_PAIRING_STATE_PENDING_APPROVAL
	switch r.GetDeviceClaim() {
	case nodev1.DeviceClaim_DEVICE_CLAIM_PROVEN:
		return fmt.Sprintf("re-pairs device %s: the node proved it holds its key (certificate %s)", prev, r.GetPossessionCertificateFingerprint())
	case nodev1.DeviceClaim_DEVICE_CLAIM_UNPROVEN:
		text := fmt.Sprintf("NOT PROVEN: the node names device %s but did not prove it holds that device's key", prev)
		if pending {
			text += fmt.Sprintf("; approve with --replace-device %s to replace that device (its certificates are revoked and "+
				"its dispatches go to this node), or with --new-device", prev)
		}
		return text
	case nodev1.DeviceClaim_DEVICE_CLAIM_REVOKED:
		text := fmt.Sprintf("REVOKED: the node names device %s, which is revoked", prev)
		if pending {
			text += fmt.Sprintf("; approve with --replace-device %s --reinstate to let it back under its id, or with --new-device", prev)
		}
		return text
	}
	return "none: a new device"
}

// requestTable writes every field of a request as rows of a name and a value, with the
// whole key fingerprint.
func requestTable(w io.Writer, r *controlplanev1.PairingRequest, now time.Time) {
	row := func(k, v string) { fmt.Fprintf(w, "%s\t%s\n", k, v) }
	row("ID", r.GetId())
	row("State", output.Enum(r.GetState()))
	row("Device name", output.Cell(r.GetDeviceName()))
	row("Platform", output.Cell(r.GetPlatform()))
	row("Agent version", output.Cell(r.GetAgentVersion()))
	row("Source", output.Cell(r.GetSourceAddress()))
	row("Key fingerprint", output.Cell(r.GetPublicKeyFingerprint()))
	row("Created", fmt.Sprintf("%s (%s ago)", output.Time(r.GetCreateTime(), "-"), requestAge(r, now)))
	row("Expires", output.Time(r.GetExpireTime(), "-"))
	row("Code", output.Cell(r.GetCodeId()))
	row("Previous device", output.Cell(r.GetPreviousDeviceId()))
	row("Replaces", claimText(r))
	decided := "-"
	if r.GetDecideTime() != nil || r.GetDecidedBy() != "" {
		decided = fmt.Sprintf("%s by %s", output.Time(r.GetDecideTime(), "-"), output.Cell(r.GetDecidedBy()))
	}
	row("Decided", decided)
	row("Reason", output.Cell(r.GetReason()))
	row("Device", output.Cell(r.GetDeviceId()))
	row("Certificate", output.Cell(r.GetCertificateFingerprint()))
	row("Labels", Labels(r.GetLabels()))
}

// Labels formats labels for a table cell as k=v pairs sorted by key, or "-".
func Labels(labels map[string]string) string {
	var pairs []string
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		pairs = append(pairs, k+"="+labels[k])
	}
	return output.Cell(strings.Join(pairs, ","))
}

func newRequestShowCommand(d *deps.Deps) *cobra.Command {
	return &cobra.Command{
		Use:     "show ID",
		Short:   "Show a pairing request with its whole key fingerprint",
		Example: "  palyra pairing requests show 01JD5ZJ8Q0W1X2Y3Z4A5B6C7D8",
		Args:    cobra.ExactArgs(1),
		RunE: deps.ByID[*controlplanev1.GetPairingRequestResponse]{
			ParseID: parseRequestID,
			Call: func(ctx context.Context, c *client.Client, id string) (*controlplanev1.GetPairingRequestResponse, error) {
				return deps.Msg(c.Pairing.GetPairingRequest(ctx, connect.NewRequest(&controlplanev1.GetPairingRequestRequest{Id: id})))
			},
			Table: func(w io.Writer, m *controlplanev1.GetPairingRequestResponse) {
				requestTable(w, m.GetPairingRequest(), d.Clock())
			},
		}.RunE(d),
	}
}

// labelKeyPattern is the form of a device label's key, as palyrad checks it.
var labelKeyPattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$`)

// ParseLabels parses --label k=v values: keys of 1 to 63 lower-case letters, digits,
// '.', '_' and '-' (starting and ending with a letter or digit), values of at most 255
// bytes, each key once, at most 32 labels.
func ParseLabels(in []string) (map[string]string, error) {
	if len(in) > 32 {
		return nil, cliusage.Wrap(fmt.Errorf("%d labels given; at most 32", len(in)))
	}
	labels := make(map[string]string, len(in))
	for _, kv := range in {
		k, v, ok := strings.Cut(kv, "=")
		switch {
		case !ok:
			return nil, cliusage.Wrap(fmt.Errorf("--label %q is not key=value", kv))
		case len(k) > 63 || !labelKeyPattern.MatchString(k):
			return nil, cliusage.Wrap(fmt.Errorf("--label key %q must be 1 to 63 lower-case letters, digits, '.', '_' or '-', "+
				"starting and ending with a letter or digit", k))
		case len(v) > 255:
			return nil, cliusage.Wrap(fmt.Errorf("--label %s has a value of %d bytes; at most 255", k, len(v)))
		}
		if _, dup := labels[k]; dup {
			return nil, cliusage.Wrap(fmt.Errorf("--label %s is given twice", k))
		}
		labels[k] = v
	}
	return labels, nil
}

// NewApproveCommand returns `approve ID`: approve a pending pairing request, which has
// palyrad's CA sign the node's key. It serves as `palyra pairing requests approve` and
// `palyra nodes approve`.
func NewApproveCommand(d *deps.Deps) *cobra.Command {
	var (
		a      approval
		labels []string
	)
	c := &cobra.Command{
		Use:   "approve ID",
		Short: "Approve a pending pairing request: palyrad's CA signs the node's key",
		Long: `approve approves a pending pairing request: palyrad's CA signs the node's key and
registers the device, and the node collects its certificate. Compare the key
fingerprint that the node shows with the request's first; --expect-fingerprint makes
palyrad refuse the approval unless they are equal.

A node that pairs again names the device it was, and proves it by signing the request
with that device's key: the approval then re-pairs the device. A request that names a
device without that proof (REPLACES shows UNPROVEN) could be anyone holding a pairing
code: approving it needs a choice, --new-device to pair it as a new device, or
--replace-device ID to give it that device's identity (its certificates are revoked and
its dispatches go to this node). On a terminal, approve asks. When the device was
revoked, only --replace-device with --reinstate lets it back under its old id.`,
		Example: `  palyra pairing requests approve 01JD5ZJ8Q0W1X2Y3Z4A5B6C7D8 --expect-fingerprint sha256:3f2a...
  palyra nodes approve 01JD5ZJ8Q0W1X2Y3Z4A5B6C7D8 --label site=lab --label role=builder
  palyra nodes approve 01JD5ZJ8Q0W1X2Y3Z4A5B6C7D8 --replace-device 01JD5ZJ8Q0W1X2Y3Z4A5B6C7V1`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseRequestID(args[0])
			if err != nil {
				return err
			}
			req, err := a.request(id)
			if err != nil {
				return err
			}
			if req.Labels, err = ParseLabels(labels); err != nil {
				return err
			}
			c, err := d.Client()
			if err != nil {
				return err
			}
			if err := a.confirm(cmd.Context(), d, c.Pairing, req); err != nil {
				return err
			}
			res, err := c.Pairing.ApprovePairingRequest(cmd.Context(), connect.NewRequest(req))
			if err != nil {
				return err
			}
			r := res.Msg.GetPairingRequest()
			if d.Output != output.JSON {
				output.Fprintf(d.Stderr, "%s\n", approvedText(r))
			}
			now := d.Clock()
			return output.Print(d.Stdout, d.Output, res.Msg, func(w io.Writer) { requestTable(w, r, now) })
		},
	}
	c.Flags().StringVar(&a.expect, "expect-fingerprint", "", "refuse unless the request's key fingerprint is this sha256:..., as the node shows it")
	c.Flags().StringArrayVar(&labels, "label", nil, "give the device a label key=value (repeatable)")
	c.Flags().BoolVar(&a.reinstate, "reinstate", false, "let a revoked device pair again under its old id (with --replace-device)")
	c.Flags().StringVar(&a.replace, "replace-device", "", "give the node the identity of this device, which the request names without proof: "+
		"its certificates are revoked and its dispatches go to this node")
	c.Flags().BoolVar(&a.asNew, "new-device", false, "pair the node as a new device although the request names an existing one, which is left as it is")
	return c
}

// approval is what the approve command's flags ask for.
type approval struct {
	expect, replace  string
	reinstate, asNew bool
}

// request checks the flags and returns the approval to send (without labels).
func (a *approval) request(id string) (*controlplanev1.ApprovePairingRequestRequest, error) {
	if a.expect != "" && !client.ValidFingerprint(a.expect) {
		return nil, cliusage.Wrap(fmt.Errorf("--expect-fingerprint must look like sha256:<64 lower-case hex digits>, as the node shows it; got %q", a.expect))
	}
	req := &controlplanev1.ApprovePairingRequestRequest{Id: id, ExpectedKeyFingerprint: a.expect, ReinstateRevokedDevice: a.reinstate, NewDevice: a.asNew}
	if a.replace != "" {
		if a.asNew {
			return nil, cliusage.Wrap(errors.New("give either --replace-device or --new-device, not both"))
		}
		device, err := cliflag.ParseID(a.replace, "device", "palyra pairing requests show "+id)
		if err != nil {
			return nil, err
		}
		req.ReplaceDeviceId = device
	}
	return req, nil
}

// confirm shows what approving req does to the device its request names, when that is
// not a plain new device or a proven re-pairing; without a choice of the approver's, a
// person on a terminal is asked whether to pair the node as a new device instead
// (replacing a device takes typing its id). Elsewhere palyrad's refusal says what to
// pass.
func (a *approval) confirm(ctx context.Context, d *deps.Deps, pairing controlplanev1connect.PairingServiceClient, req *controlplanev1.ApprovePairingRequestRequest) error {
	if d.Output == output.JSON || a.asNew {
		return nil
	}
	res, err := pairing.GetPairingRequest(ctx, connect.NewRequest(&controlplanev1.GetPairingRequestRequest{Id: req.GetId()}))
	if err != nil {
		return err
	}
	r := res.Msg.GetPairingRequest()
	claim := r.GetDeviceClaim()
	if claim != nodev1.DeviceClaim_DEVICE_CLAIM_UNPROVEN && claim != nodev1.DeviceClaim_DEVICE_CLAIM_REVOKED {
		return nil
	}
	from := fmt.Sprintf("Pairing request %s (%s, key %s, from %s)", r.GetId(), output.Cell(r.GetDeviceName()),
		r.GetPublicKeyFingerprint(), output.Cell(r.GetSourceAddress()))
	if a.replace != "" {
		output.Fprintf(d.Stderr, "%s names device %s without proving it holds that device's key: --replace-device gives it that "+
			"device's identity; the device's certificates are revoked and its dispatches go to this node.\n", from, r.GetPreviousDeviceId())
		return nil
	}
	output.Fprintf(d.Stderr, "%s: %s.\n", from, claimText(r))
	if !d.StdinIsTerminal {
		return nil
	}
	output.Fprintf(d.Stderr, "Pair it as a NEW device instead (device %s is left as it is)? [y/N] ", r.GetPreviousDeviceId())
	answer, _ := bufio.NewReader(d.Stdin).ReadString('\n')
	switch strings.ToLower(strings.TrimSpace(answer)) {
	case "y", "yes":
		req.NewDevice = true
		return nil
	}
	return fmt.Errorf("pairing request %s was not approved; to replace device %s with its node, pass --replace-device %s",
		r.GetId(), r.GetPreviousDeviceId(), r.GetPreviousDeviceId())
}

// approvedText says what an approval did to the device.
func approvedText(r *controlplanev1.PairingRequest) string {
	device := output.Cell(r.GetDeviceId())
	switch {
	case r.GetPreviousDeviceId() == "" || r.GetDeviceId() != r.GetPreviousDeviceId():
		return fmt.Sprintf("Approved: the node collects its certificate for device %s.", device)
	case r.GetDeviceClaim() == nodev1.DeviceClaim_DEVICE_CLAIM_PROVEN:
		return fmt.Sprintf("Approved: device %s is re-paired (its node proved it holds the device's key); its older certificates are revoked.", device)
	}
	return fmt.Sprintf("Approved: the node replaces device %s; the device's older certificates are revoked and its dispatches go to this node.", device)
}

// NewRejectCommand returns `reject ID --reason R`: reject a pending pairing request;
// the node is told the reason. It serves as `palyra pairing requests reject` and
// `palyra nodes reject`.
func NewRejectCommand(d *deps.Deps) *cobra.Command {
	var reason string
	c := &cobra.Command{
		Use:     "reject ID --reason R",
		Short:   "Reject a pending pairing request; the node is told the reason",
		Example: `  palyra pairing requests reject 01JD5ZJ8Q0W1X2Y3Z4A5B6C7D8 --reason "unknown machine"`,
		Args:    cobra.ExactArgs(1),
		RunE: deps.ByID[*controlplanev1.RejectPairingRequestResponse]{
			ParseID: parseRequestID,
			Check:   func() error { return cliflag.CheckReason(reason) },
			Call: func(ctx context.Context, c *client.Client, id string) (*controlplanev1.RejectPairingRequestResponse, error) {
				return deps.Msg(c.Pairing.RejectPairingRequest(ctx, connect.NewRequest(&controlplanev1.RejectPairingRequestRequest{Id: id, Reason: reason})))
			},
			Table: func(w io.Writer, m *controlplanev1.RejectPairingRequestResponse) {
				requestTable(w, m.GetPairingRequest(), d.Clock())
			},
		}.RunE(d),
	}
	c.Flags().StringVar(&reason, "reason", "", "why, shown to the node (required, at most 256 bytes)")
	return c
}
