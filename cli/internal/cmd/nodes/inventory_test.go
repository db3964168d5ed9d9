package nodes_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/palyra/palyra/cli/internal/cmd/cmdtest"
	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	"github.com/palyra/palyra/gen/go/palyra/controlplane/v1/controlplanev1connect"
	nodev1 "github.com/palyra/palyra/gen/go/palyra/node/v1"
)

const offlineID = "01JD5ZJ8Q0W1X2Y3Z4A5B6C7V3"

// fakeNodes is a NodeInventoryService of two nodes that records the list requests and pages
// the list one node at a time unless asked for more.
type fakeNodes struct {
	controlplanev1connect.UnimplementedNodeInventoryServiceHandler
	mu    sync.Mutex // guards lists
	lists []*controlplanev1.ListNodesRequest
}

var _ controlplanev1connect.NodeInventoryServiceHandler = (*fakeNodes)(nil)

const shellSchema = `{"type":"object","required":["argv"],"properties":{"argv":{"type":"array"},"cwd":{"type":"string"},` +
	`"env":{"type":"object"},"timeout_ms":{"type":["integer","null"]}}}`

func ts(d time.Duration) *timestamppb.Timestamp { return timestamppb.New(cmdtest.Now.Add(d)) }

// inventory is the fake's nodes, newest first.
func inventory() []*controlplanev1.Node {
	return []*controlplanev1.Node{
		{
			Id: deviceID, Name: "build-01", Platform: "linux/arm64", AgentVersion: "v0.3.0", ProtocolVersion: 1,
			Labels: map[string]string{"site": "lab"}, ReportedLabels: map[string]string{"arch": "arm64", "zone": "b"},
			Capabilities: []*nodev1.Capability{
				{Name: "system.info", Description: "Describe the host", Available: true},
				{Name: "shell.execute", Description: "Run a program (argv, no shell)", InputSchema: shellSchema, Available: true},
				{Name: "filesystem.read", Description: "Read a file", InputSchema: `{"type":"object","required":["path"],"properties":{"path":{"type":"string"}}}`},
			},
			CreateTime: ts(-48 * time.Hour), LastSeenTime: ts(-12 * time.Second), Presence: controlplanev1.Presence_PRESENCE_ONLINE,
			AttachedReplica: "replica-a", CertificateExpireTime: ts(23 * time.Hour),
		},
		{
			Id: offlineID, Name: "laptop", Platform: "darwin/arm64", CreateTime: ts(-72 * time.Hour),
			Presence: controlplanev1.Presence_PRESENCE_OFFLINE, CertificateExpireTime: ts(-time.Hour), Revoked: true,
		},
	}
}

func (f *fakeNodes) requests() []*controlplanev1.ListNodesRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*controlplanev1.ListNodesRequest(nil), f.lists...)
}

func (f *fakeNodes) ListNodes(_ context.Context, req *connect.Request[controlplanev1.ListNodesRequest]) (*connect.Response[controlplanev1.ListNodesResponse], error) {
	f.mu.Lock()
	f.lists = append(f.lists, proto.Clone(req.Msg).(*controlplanev1.ListNodesRequest))
	f.mu.Unlock()
	nodes := inventory()
	size := int(req.Msg.GetPageSize())
	if size == 0 {
		size = 1
	}
	start := 0
	if req.Msg.GetPageToken() != "" {
		if _, err := fmt.Sscanf(req.Msg.GetPageToken(), "p%d", &start); err != nil {
			return nil, connect.NewError(connect.CodeInvalidArgument, err)
		}
	}
	end := min(start+size, len(nodes))
	res := &controlplanev1.ListNodesResponse{Nodes: nodes[start:end]}
	if end < len(nodes) {
		res.NextPageToken = fmt.Sprintf("p%d", end)
	}
	return connect.NewResponse(res), nil
}

func (f *fakeNodes) GetNode(_ context.Context, req *connect.Request[controlplanev1.GetNodeRequest]) (*connect.Response[controlplanev1.GetNodeResponse], error) {
	for _, n := range inventory() {
		if n.GetId() == req.Msg.GetId() {
			return connect.NewResponse(&controlplanev1.GetNodeResponse{Node: n}), nil
		}
	}
	return nil, connect.NewError(connect.CodeNotFound, errors.New("no node "+req.Msg.GetId()))
}

// TestNodesList checks the table, the filters, paging with --all, and JSON.
func TestNodesList(t *testing.T) {
	t.Parallel()
	b := newBench(t)
	res := cmdtest.Run(t.Context(), b.env, "nodes", "list")
	if res.Code != 0 {
		t.Fatalf("list: exit %d: %s", res.Code, res.Stderr)
	}
	want := "ID                          NAME      PLATFORM     PRESENCE  LAST SEEN  CAPABILITIES                                    CERT EXPIRES\n" +
		deviceID + "  build-01  linux/arm64  online    12s ago    filesystem.read(off),shell.execute,system.info  2025-06-02T11:00:00Z\n"
	if res.Stdout != want {
		t.Errorf("list:\n%s\nwant:\n%s", res.Stdout, want)
	}
	cmdtest.WantOutput(t, "list stderr", res.Stderr, "more nodes follow: pass --all to list them all")

	res = cmdtest.Run(t.Context(), b.env, "nodes", "list", "--all")
	cmdtest.WantOutput(t, "list --all", res.Stdout, offlineID+"  laptop    darwin/arm64  revoked   never      -")
	if n := strings.Count(res.Stdout, "\n"); n != 3 || res.Stderr != "" {
		t.Errorf("list --all: %d lines, stderr %q:\n%s", n, res.Stderr, res.Stdout)
	}
	if reqs := b.nodes.requests(); len(reqs) != 3 || reqs[2].GetPageToken() != "p1" {
		t.Errorf("list --all did not follow the page token: %v", reqs)
	}

	res = cmdtest.Run(t.Context(), b.env, "nodes", "list", "--presence", "stale", "--capability", "shell.execute",
		"--label", "site=lab", "--label", "arch=arm64", "--include-revoked", "--limit", "5", "-o", "json")
	reqs := b.nodes.requests()
	last := reqs[len(reqs)-1]
	if last.GetPresence() != controlplanev1.Presence_PRESENCE_STALE || last.GetCapability() != "shell.execute" ||
		len(last.GetLabels()) != 2 || last.GetLabels()["arch"] != "arm64" || !last.GetIncludeRevoked() || last.GetPageSize() != 5 {
		t.Errorf("list filters sent as %v", last)
	}
	var got controlplanev1.ListNodesResponse
	if err := protojson.Unmarshal([]byte(res.Stdout), &got); err != nil || len(got.GetNodes()) != 2 || got.GetNextPageToken() != "" {
		t.Errorf("list -o json: %v\n%s", err, res.Stdout)
	}
}

// TestNodesShow checks that show combines the node and its device, in a table and in
// JSON.
func TestNodesShow(t *testing.T) {
	t.Parallel()
	b := newBench(t)
	res := cmdtest.Run(t.Context(), b.env, "nodes", "show", strings.ToLower(deviceID))
	if res.Code != 0 || res.Stderr != "" {
		t.Fatalf("show: exit %d: %s", res.Code, res.Stderr)
	}
	cmdtest.WantOutput(t, "show", res.Stdout,
		"ID                   "+deviceID,
		"Name                 build-01",
		"Platform             linux/arm64",
		"Agent version        v0.3.0",
		"Protocol version     1",
		"Presence             online (attached to replica replica-a)",
		"Last seen            2025-06-01T11:59:48Z (12s ago)",
		"Labels               site=lab",
		"Reported labels      arch=arm64,zone=b",
		"Paired               2025-05-30T12:00:00Z",
		"Certificate expires  2025-06-02T11:00:00Z",
		"Revoked              no",
		"CAPABILITY       AVAILABLE  INPUT                                                         DESCRIPTION",
		"filesystem.read  no         {path: string}                                                Read a file",
		"shell.execute    yes        {argv: array, cwd?: string, env?: object, timeout_ms?: inte…  Run a program (argv, no shell)",
		"system.info      yes        -                                                             Describe the host",
		certFP+"  0a1b    2025-06-01T11:00:00Z  2025-06-02T11:00:00Z  -",
		oldFP+"  09ff    2025-05-31T11:00:00Z  2025-06-01T11:00:00Z  2025-06-01T10:00:00Z (renewed)")

	res = cmdtest.Run(t.Context(), b.env, "nodes", "show", deviceID, "-o", "json")
	var got struct {
		Node, Device json.RawMessage
	}
	if err := json.Unmarshal([]byte(res.Stdout), &got); err != nil {
		t.Fatalf("show -o json: %v\n%s", err, res.Stdout)
	}
	var node controlplanev1.Node
	var dev controlplanev1.Device
	if err := protojson.Unmarshal(got.Node, &node); err != nil || node.GetPresence() != controlplanev1.Presence_PRESENCE_ONLINE || len(node.GetCapabilities()) != 3 {
		t.Errorf("show -o json: node %v, %v", &node, err)
	}
	if err := protojson.Unmarshal(got.Device, &dev); err != nil || len(dev.GetCertificates()) != 2 {
		t.Errorf("show -o json: device %v, %v", &dev, err)
	}
	if !strings.HasPrefix(res.Stdout, "{\n  \"node\": {\n    \"id\": \""+deviceID+"\",") {
		t.Errorf("show -o json is not in its stable form:\n%s", res.Stdout)
	}
	if again := cmdtest.Run(t.Context(), b.env, "nodes", "show", deviceID, "-o", "json"); again.Stdout != res.Stdout {
		t.Error("show -o json changed between calls")
	}

	res = cmdtest.Run(t.Context(), b.env, "nodes", "show", "01JD5ZJ8Q0W1X2Y3Z4A5B6C7V9")
	if res.Code != 1 || !strings.Contains(res.Stderr, "not found: no node 01JD5ZJ8Q0W1X2Y3Z4A5B6C7V9") {
		t.Errorf("show of an unknown node: exit %d, %s", res.Code, res.Stderr)
	}
}

// TestNodesShowOlderServer checks that show still shows the device of a palyrad
// without the node inventory.
func TestNodesShowOlderServer(t *testing.T) {
	t.Parallel()
	f := &fakeDevices{}
	srv := cmdtest.NewServer(t, func(mux *http.ServeMux) { mux.Handle(controlplanev1connect.NewDeviceServiceHandler(f)) })
	res := cmdtest.Run(t.Context(), srv.Env(), "nodes", "show", deviceID)
	if res.Code != 0 || !strings.Contains(res.Stderr, "showing the device only") {
		t.Fatalf("show: exit %d: %s", res.Code, res.Stderr)
	}
	cmdtest.WantOutput(t, "show", res.Stdout, "ID             "+deviceID, "Revoked        no", "CERTIFICATE")
	res = cmdtest.Run(t.Context(), srv.Env(), "nodes", "show", deviceID, "-o", "json")
	if !strings.HasPrefix(res.Stdout, "{\n  \"node\": null,\n  \"device\": {") {
		t.Errorf("show -o json:\n%s", res.Stdout)
	}
}
