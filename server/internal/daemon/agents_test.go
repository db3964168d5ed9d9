package daemon_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	"buf.build/go/protovalidate"
	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"

	accessv1 "github.com/palyra/palyra/gen/go/palyra/access/v1"
	agentsv1 "github.com/palyra/palyra/gen/go/palyra/agents/v1"
	"github.com/palyra/palyra/gen/go/palyra/agents/v1/agentsv1connect"
	"github.com/palyra/palyra/internal/eventually"
	"github.com/palyra/palyra/server/internal/store/storetest"
)

func (td *testDaemon) agentsClient(token string) agentsv1connect.AgentServiceClient {
	return agentsv1connect.NewAgentServiceClient(td.client(token), td.baseURL)
}

// startAgents starts a daemon serving the model palyra-echo.
func startAgents(t *testing.T) *accessBundle {
	t.Helper()
	dbURL := storetest.URL(t)
	return &accessBundle{testDaemon: startDaemon(t, "--database-url", dbURL, "--data-dir", t.TempDir(), "--compat-model", "palyra-echo"), dbURL: dbURL}
}

// connectDetails returns the fields at fault (of the domain's or the proto's rules) and
// the ErrorInfo of err.
func connectDetails(err error) (fields []string, info *errdetails.ErrorInfo) {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return nil, nil
	}
	for _, d := range ce.Details() {
		v, derr := d.Value()
		if derr != nil {
			continue
		}
		switch v := v.(type) {
		case *errdetails.BadRequest:
			for _, f := range v.GetFieldViolations() {
				fields = append(fields, f.GetField())
			}
		case *validate.Violations: // refused by the proto's rules
			for _, f := range v.GetViolations() {
				fields = append(fields, protovalidate.FieldPathString(f.GetField()))
			}
		case *errdetails.ErrorInfo:
			info = v
		}
	}
	return fields, info
}

// TestAgentServiceWarnsAboutToolsNoOnlineNodeOffers creates an agent whose tools name
// capabilities a real attached node offers and does not offer: it is saved, with a
// warning for each tool no online node offers, and the warnings follow the node's
// presence.
func TestAgentServiceWarnsAboutToolsNoOnlineNodeOffers(t *testing.T) {
	t.Parallel()
	b := startAgents(t)
	ctx := t.Context()
	dev := b.enroll(t, time.Hour)
	node, _ := attachNode(t, b.testDaemon, dev) // offers shell.execute and system.info; filesystem.read unavailable
	c := b.agentsClient(b.owner)
	spec := &agentsv1.AgentSpec{Name: "fleet", Model: "palyra-echo", Tools: []*agentsv1.Tool{
		{Capability: "system.info", Target: &agentsv1.Tool_NodeId{NodeId: dev.deviceID}},
		{Capability: "shell.execute", Target: &agentsv1.Tool_NodeSelector{NodeSelector: "region=eu-west"}, Policy: agentsv1.ToolPolicy_TOOL_POLICY_ASK},
		{Capability: "filesystem.read"},
		{Capability: "camera.capture"},
	}}
	// The welcome comes once the node is registered, online.
	res, err := c.CreateAgent(ctx, connect.NewRequest(&agentsv1.CreateAgentRequest{Spec: spec}))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"tool filesystem_read: no online node offers filesystem.read", "tool camera_capture: no online node offers camera.capture"}
	if got := res.Msg.GetWarnings(); !slices.Equal(got, want) {
		t.Errorf("warnings %q, want %q", got, want)
	}
	ag := res.Msg.GetAgent()
	if ag.GetRevision() != 1 || ag.GetSpec().GetTools()[1].GetName() != "shell_execute" || ag.GetSpec().GetLimits().GetMaxSteps() != 8 {
		t.Errorf("created %v", ag)
	}

	// Gone offline, the node offers nothing.
	node.close()
	eventually.True(t, "the agent warns about every tool once the node is offline", func() bool {
		res, err := c.GetAgent(ctx, connect.NewRequest(&agentsv1.GetAgentRequest{Agent: &agentsv1.GetAgentRequest_Id{Id: ag.GetId()}}))
		if err != nil {
			t.Fatal(err)
		}
		w := res.Msg.GetWarnings()
		return len(w) == 4 && strings.Contains(w[0], "tool system_info: node ") && strings.HasSuffix(w[0], "is offline") &&
			w[1] == `tool shell_execute: no online node matching "region=eu-west" offers shell.execute`
	})
}

// TestAgentServiceRefusesBadInput checks the service's answers to bad definitions and
// stale revisions: the code, the fields at fault, the current revision.
func TestAgentServiceRefusesBadInput(t *testing.T) {
	t.Parallel()
	b := startAgents(t)
	ctx := t.Context()
	c := b.agentsClient(b.owner)
	create := func(spec *agentsv1.AgentSpec) error {
		_, err := c.CreateAgent(ctx, connect.NewRequest(&agentsv1.CreateAgentRequest{Spec: spec}))
		return err
	}
	tests := []struct {
		name  string
		spec  *agentsv1.AgentSpec
		field string
		says  string
	}{
		{"missing model", &agentsv1.AgentSpec{Name: "a", Model: "gpt-none"}, "spec.model", `no model "gpt-none": they are palyra-echo`},
		{"bad name", &agentsv1.AgentSpec{Name: "Not_A_Label", Model: "palyra-echo"}, "spec.name", ""},
		{"missing node", &agentsv1.AgentSpec{Name: "a", Model: "palyra-echo", Tools: []*agentsv1.Tool{
			{Capability: "system.info", Target: &agentsv1.Tool_NodeId{NodeId: "01JD0000000000000000000009"}},
		}}, "spec.tools[0].node_id", "there is no node"},
		{"bad selector", &agentsv1.AgentSpec{Name: "a", Model: "palyra-echo", Tools: []*agentsv1.Tool{
			{Capability: "system.info", Target: &agentsv1.Tool_NodeSelector{NodeSelector: "a in (b"}},
		}}, "spec.tools[0].node_selector", ""},
		{"max_steps", &agentsv1.AgentSpec{Name: "a", Model: "palyra-echo", Limits: &agentsv1.AgentLimits{MaxSteps: 65}}, "spec.limits.max_steps", ""},
	}
	for _, tt := range tests {
		err := create(tt.spec)
		wantCode(t, tt.name, err, connect.CodeInvalidArgument)
		if fields, _ := connectDetails(err); !slices.Contains(fields, tt.field) || !strings.Contains(err.Error(), tt.says) {
			t.Errorf("%s: fields %q in %v, want %s saying %q", tt.name, fields, err, tt.field, tt.says)
		}
	}
	list, err := c.ListAgents(ctx, connect.NewRequest(&agentsv1.ListAgentsRequest{}))
	if err != nil || len(list.Msg.GetAgents()) != 0 {
		t.Fatalf("bad input stored agents: %v, %v", list.Msg.GetAgents(), err)
	}

	if err := create(&agentsv1.AgentSpec{Name: "a", Model: "palyra-echo"}); err != nil {
		t.Fatal(err)
	}
	wantCode(t, "duplicate name", create(&agentsv1.AgentSpec{Name: "a", Model: "palyra-echo"}), connect.CodeAlreadyExists)
	update := func(revision int64) error {
		_, err := c.UpdateAgent(ctx, connect.NewRequest(&agentsv1.UpdateAgentRequest{
			Agent: &agentsv1.UpdateAgentRequest_Name{Name: "a"}, Spec: &agentsv1.AgentSpec{Name: "a", Model: "palyra-echo", Description: "new"},
			ExpectedRevision: &revision,
		}))
		return err
	}
	if err := update(1); err != nil {
		t.Fatal(err)
	}
	err = update(1)
	wantCode(t, "stale revision", err, connect.CodeAborted)
	if _, info := connectDetails(err); info.GetReason() != "STALE_REVISION" || info.GetMetadata()["current_revision"] != "2" ||
		!strings.Contains(err.Error(), "revision 2, not 1") {
		t.Errorf("stale revision: %v, info %v", err, info)
	}
	_, err = c.UpdateAgent(ctx, connect.NewRequest(&agentsv1.UpdateAgentRequest{
		Agent: &agentsv1.UpdateAgentRequest_Name{Name: "a"}, Spec: &agentsv1.AgentSpec{Name: "a", Model: "palyra-echo"},
	}))
	wantCode(t, "no expected revision", err, connect.CodeInvalidArgument)
	_, err = c.SetDefaultAgent(ctx, connect.NewRequest(&agentsv1.SetDefaultAgentRequest{Agent: &agentsv1.SetDefaultAgentRequest_Name{Name: "b"}}))
	wantCode(t, "missing default", err, connect.CodeNotFound)
}

// TestAgentServicePermissions lets operators read agents and only admins and owners
// change them.
func TestAgentServicePermissions(t *testing.T) {
	t.Parallel()
	b := startAgents(t)
	ctx := t.Context()
	_, operator := b.createToken(t, &accessv1.CreateTokenRequest{Label: "op", Role: accessv1.Role_ROLE_OPERATOR})
	_, admin := b.createToken(t, &accessv1.CreateTokenRequest{Label: "admin", Role: accessv1.Role_ROLE_ADMIN})
	op, adm := b.agentsClient(operator), b.agentsClient(admin)
	spec := &agentsv1.AgentSpec{Name: "helper", Model: "palyra-echo"}
	_, err := op.CreateAgent(ctx, connect.NewRequest(&agentsv1.CreateAgentRequest{Spec: spec}))
	wantCode(t, "operator creates", err, connect.CodePermissionDenied)
	if err != nil && !strings.Contains(err.Error(), "agents.write") {
		t.Errorf("the refusal does not name agents.write: %v", err)
	}
	created, err := adm.CreateAgent(ctx, connect.NewRequest(&agentsv1.CreateAgentRequest{Spec: spec}))
	if err != nil {
		t.Fatal(err)
	}
	if by := created.Msg.GetAgent().GetCreatedBy(); !strings.HasPrefix(by, "token:") {
		t.Errorf("created by %q", by)
	}
	list, err := op.ListAgents(ctx, connect.NewRequest(&agentsv1.ListAgentsRequest{}))
	if err != nil || len(list.Msg.GetAgents()) != 1 {
		t.Errorf("operator lists: %v, %v", list, err)
	}
	ref := &agentsv1.GetAgentRequest{Agent: &agentsv1.GetAgentRequest_Name{Name: "helper"}}
	if _, err := op.GetAgent(ctx, connect.NewRequest(ref)); err != nil {
		t.Errorf("operator gets: %v", err)
	}
	one := int64(1)
	_, err = op.UpdateAgent(ctx, connect.NewRequest(&agentsv1.UpdateAgentRequest{Agent: &agentsv1.UpdateAgentRequest_Name{Name: "helper"}, Spec: spec, ExpectedRevision: &one}))
	wantCode(t, "operator updates", err, connect.CodePermissionDenied)
	_, err = op.SetDefaultAgent(ctx, connect.NewRequest(&agentsv1.SetDefaultAgentRequest{Agent: &agentsv1.SetDefaultAgentRequest_Name{Name: "helper"}}))
	wantCode(t, "operator sets the default", err, connect.CodePermissionDenied)
	_, err = op.DeleteAgent(ctx, connect.NewRequest(&agentsv1.DeleteAgentRequest{Agent: &agentsv1.DeleteAgentRequest_Name{Name: "helper"}}))
	wantCode(t, "operator deletes", err, connect.CodePermissionDenied)
	if _, err := adm.SetDefaultAgent(ctx, connect.NewRequest(&agentsv1.SetDefaultAgentRequest{Agent: &agentsv1.SetDefaultAgentRequest_Name{Name: "helper"}})); err != nil {
		t.Errorf("admin sets the default: %v", err)
	}
	if _, err := adm.DeleteAgent(ctx, connect.NewRequest(&agentsv1.DeleteAgentRequest{Agent: &agentsv1.DeleteAgentRequest_Name{Name: "helper"}})); err != nil {
		t.Errorf("admin deletes: %v", err)
	}
}
