package nodes

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/palyra/palyra/cli/internal/client"
	"github.com/palyra/palyra/cli/internal/cliflag"
	"github.com/palyra/palyra/cli/internal/cmd/deps"
	"github.com/palyra/palyra/cli/internal/cmd/pairing"
	"github.com/palyra/palyra/cli/internal/output"
	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	nodev1 "github.com/palyra/palyra/gen/go/palyra/node/v1"
	"github.com/palyra/palyra/internal/cliusage"
)

// presences maps the --presence names to the API's presences.
var presences = map[string]controlplanev1.Presence{
	"online":  controlplanev1.Presence_PRESENCE_ONLINE,
	"stale":   controlplanev1.Presence_PRESENCE_STALE,
	"offline": controlplanev1.Presence_PRESENCE_OFFLINE,
}

// maxLabelFilters is the most --label filters ListNodes takes.
const maxLabelFilters = 16

func newListCommand(d *deps.Deps) *cobra.Command {
	var (
		presence       = cliflag.NewChoice("online", "stale", "offline")
		capability     string
		labels         []string
		labelFilter    map[string]string // labels, parsed
		includeRevoked bool
		paging         cliflag.Paging
	)
	c := &cobra.Command{
		Use:   "list",
		Short: "List the paired nodes, newest first: presence, last contact, capabilities",
		Long: `list lists the paired nodes with their presence (online while attached, stale
after three missed heartbeats, offline), when they were last seen, and their
capabilities; a capability the node knows but cannot run now is marked (off).
Revoked devices are left out unless --include-revoked is given.`,
		Example: `  palyra nodes list --presence online --capability shell.execute
  palyra nodes list --label site=lab --all -o json`,
		Args: cobra.NoArgs,
		RunE: deps.List[*controlplanev1.Node, *controlplanev1.ListNodesResponse]{
			Paging: &paging,
			Noun:   "nodes",
			Check: func() error {
				l, err := pairing.ParseLabels(labels)
				if err != nil {
					return err
				}
				switch {
				case len(l) > maxLabelFilters:
					return cliusage.Wrap(fmt.Errorf("%d --label filters given; at most %d", len(l), maxLabelFilters))
				case len(capability) > 128:
					return cliusage.Wrap(fmt.Errorf("--capability is %d bytes long; at most 128", len(capability)))
				}
				labelFilter = l
				return nil
			},
			Page: func(ctx context.Context, c *client.Client, page string) (*controlplanev1.ListNodesResponse, error) {
				return deps.Msg(c.Nodes.ListNodes(ctx, connect.NewRequest(&controlplanev1.ListNodesRequest{
					Presence: presences[presence.Value], Capability: capability, Labels: labelFilter, IncludeRevoked: includeRevoked,
					PageSize: paging.Limit, PageToken: page,
				})))
			},
			Items: (*controlplanev1.ListNodesResponse).GetNodes,
			Response: func(list []*controlplanev1.Node, next string) *controlplanev1.ListNodesResponse {
				return &controlplanev1.ListNodesResponse{Nodes: list, NextPageToken: next}
			},
			Table: func(w io.Writer, list []*controlplanev1.Node) { nodeListTable(w, list, d.Clock()) },
		}.RunE(d),
	}
	c.Flags().Var(presence, "presence", "list only the nodes with this presence")
	c.Flags().StringVar(&capability, "capability", "", "list only the nodes that offer this capability (available or not), e.g. shell.execute")
	c.Flags().StringArrayVar(&labels, "label", nil, "list only the nodes with this label key=value, given or reported (repeatable; all must match)")
	c.Flags().BoolVar(&includeRevoked, "include-revoked", false, "also list revoked devices")
	paging.Bind(c.Flags(), "nodes", "every node")
	return c
}

// nodeListTable writes nodes as a table.
func nodeListTable(w io.Writer, nodes []*controlplanev1.Node, now time.Time) {
	fmt.Fprintln(w, "ID\tNAME\tPLATFORM\tPRESENCE\tLAST SEEN\tCAPABILITIES\tCERT EXPIRES")
	for _, n := range nodes {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", n.GetId(), output.Cell(n.GetName()), output.Cell(n.GetPlatform()),
			presenceCell(n), lastSeen(n, now), capabilityList(n.GetCapabilities()), output.Time(n.GetCertificateExpireTime(), "-"))
	}
}

// presenceCell is a node's presence, or "revoked" for a revoked device.
func presenceCell(n *controlplanev1.Node) string {
	if n.GetRevoked() {
		return "revoked"
	}
	return output.Enum(n.GetPresence())
}

// lastSeen says how long ago a node was last seen: "12s ago", or "never".
func lastSeen(n *controlplanev1.Node, now time.Time) string {
	if n.GetLastSeenTime() == nil {
		return "never"
	}
	return output.Age(now.Sub(n.GetLastSeenTime().AsTime())) + " ago"
}

// capabilityList formats capabilities for a table cell: their names in order, each
// that is not available now marked "(off)".
func capabilityList(caps []*nodev1.Capability) string {
	names := make([]string, 0, len(caps))
	for _, c := range sortedCapabilities(caps) {
		name := output.Cell(c.GetName())
		if !c.GetAvailable() {
			name += "(off)"
		}
		names = append(names, name)
	}
	return output.List(names)
}

// sortedCapabilities returns capabilities sorted by name.
func sortedCapabilities(caps []*nodev1.Capability) []*nodev1.Capability {
	return slices.SortedFunc(slices.Values(caps), func(a, b *nodev1.Capability) int { return cmp.Compare(a.GetName(), b.GetName()) })
}

func newShowCommand(d *deps.Deps) *cobra.Command {
	return &cobra.Command{
		Use:   "show ID",
		Short: "Show a node: presence, capabilities, labels, and its certificates",
		Long: `show shows a node as the inventory has it (presence, the replica it is attached to,
its capabilities with a summary of their input, its labels) and the device's
certificates. With -o json it prints {"node": ..., "device": ...}, the protojson of
the node and of the device.`,
		Example: "  palyra nodes show 01JD5ZJ8Q0W1X2Y3Z4A5B6C7D8 -o json",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseDeviceID(args[0])
			if err != nil {
				return err
			}
			c, err := d.Client()
			if err != nil {
				return err
			}
			nodeRes, err := c.Nodes.GetNode(cmd.Context(), connect.NewRequest(&controlplanev1.GetNodeRequest{Id: id}))
			var node *controlplanev1.Node
			switch {
			case err == nil:
				node = nodeRes.Msg.GetNode()
			case connect.CodeOf(err) == connect.CodeUnimplemented:
				// A palyrad from before the node inventory still has the device.
				output.Fprintf(d.Stderr, "palyra: %v; showing the device only\n", err)
			default:
				return err
			}
			devRes, err := c.Devices.GetDevice(cmd.Context(), connect.NewRequest(&controlplanev1.GetDeviceRequest{Id: id}))
			if err != nil {
				return err
			}
			dev := devRes.Msg.GetDevice()
			v, err := nodeJSON(node, dev)
			if err != nil {
				return err
			}
			now := d.Clock()
			return output.PrintValue(d.Stdout, d.Output, v, func(w io.Writer) {
				if node == nil {
					deviceTable(w, dev)
					return
				}
				nodeTable(w, node, dev, now)
			})
		},
	}
}

// shownNode is what `nodes show -o json` prints: the protojson of the node and of the
// device (null for a missing one), which PrintValue re-indents into one stable form.
type shownNode struct {
	Node   json.RawMessage `json:"node"`
	Device json.RawMessage `json:"device"`
}

// nodeJSON encodes a node and its device for `nodes show -o json`.
func nodeJSON(node *controlplanev1.Node, dev *controlplanev1.Device) (shownNode, error) {
	encode := func(m proto.Message, present bool) (json.RawMessage, error) {
		if !present {
			return json.RawMessage("null"), nil
		}
		b, err := protojson.MarshalOptions{EmitUnpopulated: true}.Marshal(m)
		if err != nil {
			return nil, fmt.Errorf("encode JSON: %w", err)
		}
		return b, nil
	}
	var (
		v   shownNode
		err error
	)
	if v.Node, err = encode(node, node != nil); err != nil {
		return v, err
	}
	v.Device, err = encode(dev, dev != nil)
	return v, err
}

// nodeTable writes a node and its device as rows of a name and a value, then its
// capabilities and its certificates as tables.
func nodeTable(w io.Writer, n *controlplanev1.Node, dev *controlplanev1.Device, now time.Time) {
	row := func(k, v string) { fmt.Fprintf(w, "%s\t%s\n", k, v) }
	row("ID", n.GetId())
	row("Name", output.Cell(n.GetName()))
	row("Platform", output.Cell(n.GetPlatform()))
	row("Agent version", output.Cell(n.GetAgentVersion()))
	if n.GetProtocolVersion() != 0 {
		row("Protocol version", fmt.Sprint(n.GetProtocolVersion()))
	}
	presence := presenceCell(n)
	if n.GetAttachedReplica() != "" {
		presence += " (attached to replica " + output.Cell(n.GetAttachedReplica()) + ")"
	}
	row("Presence", presence)
	seen := "never"
	if n.GetLastSeenTime() != nil {
		seen = fmt.Sprintf("%s (%s)", output.Time(n.GetLastSeenTime(), "-"), lastSeen(n, now))
	}
	row("Last seen", seen)
	row("Labels", pairing.Labels(n.GetLabels()))
	row("Reported labels", pairing.Labels(n.GetReportedLabels()))
	row("Paired", output.Time(n.GetCreateTime(), "-"))
	row("Certificate expires", output.Time(n.GetCertificateExpireTime(), "-"))
	revocationRows(w, dev)
	fmt.Fprintln(w)
	fmt.Fprintln(w, "CAPABILITY\tAVAILABLE\tINPUT\tDESCRIPTION")
	for _, c := range sortedCapabilities(n.GetCapabilities()) {
		available := "yes"
		if !c.GetAvailable() {
			available = "no"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", output.Cell(c.GetName()), available, schemaSummary(c.GetInputSchema()),
			output.Cell(c.GetDescription()))
	}
	modelTable(w, n.GetCapabilities())
	fmt.Fprintln(w)
	certificateTable(w, dev.GetCertificates())
}

// modelTable lists the models each capability serves (llm.chat, llm.embed), after a
// blank line; nothing when none serves any.
func modelTable(w io.Writer, caps []*nodev1.Capability) {
	header := false
	for _, c := range sortedCapabilities(caps) {
		if len(c.GetModels()) == 0 {
			continue
		}
		if !header {
			fmt.Fprintln(w)
			fmt.Fprintln(w, "CAPABILITY\tMODELS")
			header = true
		}
		models := make([]string, 0, len(c.GetModels()))
		for _, m := range c.GetModels() {
			models = append(models, output.Cell(m))
		}
		fmt.Fprintf(w, "%s\t%s\n", output.Cell(c.GetName()), output.List(models))
	}
}

// maxschemaSummary is the longest schema summary, in characters.
const maxschemaSummary = 60

// schemaSummary summarises a capability's JSON input schema for a table cell: the
// properties of an object with their types, optional ones marked with "?", as in
// "{argv: array, cwd?: string}"; the type of another schema; "-" for none. It is cut
// at maxschemaSummary characters.
func schemaSummary(schema string) string {
	if strings.TrimSpace(schema) == "" {
		return "-"
	}
	type property struct {
		Type any `json:"type"`
	}
	var s struct {
		Type       any                 `json:"type"`
		Properties map[string]property `json:"properties"`
		Required   []string            `json:"required"`
	}
	if err := json.Unmarshal([]byte(schema), &s); err != nil {
		return "(not a JSON schema)"
	}
	if len(s.Properties) == 0 {
		return output.Cell(schemaType(s.Type))
	}
	// Required properties first, in the schema's order; then the others by name.
	var parts []string
	for _, name := range s.Required {
		if p, ok := s.Properties[name]; ok {
			parts = append(parts, name+": "+schemaType(p.Type))
		}
	}
	for _, name := range slices.Sorted(maps.Keys(s.Properties)) {
		if !slices.Contains(s.Required, name) {
			parts = append(parts, name+"?: "+schemaType(s.Properties[name].Type))
		}
	}
	sum := output.Cell("{" + strings.Join(parts, ", ") + "}")
	if utf8.RuneCountInString(sum) > maxschemaSummary {
		sum = string([]rune(sum)[:maxschemaSummary-1]) + "…"
	}
	return sum
}

// schemaType formats a JSON schema "type": "string", "string|null", or "any".
func schemaType(t any) string {
	switch t := t.(type) {
	case string:
		return t
	case []any:
		var names []string
		for _, n := range t {
			if s, ok := n.(string); ok {
				names = append(names, s)
			}
		}
		if len(names) > 0 {
			return strings.Join(names, "|")
		}
	}
	return "any"
}
