package daemon_test

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/types/known/timestamppb"

	accessv1 "github.com/palyra/palyra/gen/go/palyra/access/v1"
	agentsv1 "github.com/palyra/palyra/gen/go/palyra/agents/v1"
	browserv1 "github.com/palyra/palyra/gen/go/palyra/browser/v1"
	"github.com/palyra/palyra/gen/go/palyra/browser/v1/browserv1connect"
	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	nodev1 "github.com/palyra/palyra/gen/go/palyra/node/v1"
	"github.com/palyra/palyra/internal/eventually"
	"github.com/palyra/palyra/server/internal/store/storetest"
)

func (td *testDaemon) browserClient(token string) browserv1connect.BrowserProfileServiceClient {
	return browserv1connect.NewBrowserProfileServiceClient(td.client(token), td.baseURL)
}

// browserHello is the hello of a node offering browser.navigate.
func browserHello(dev *enrolled) *nodev1.AttachRequest {
	h := helloFor(dev)
	h.GetHello().Capabilities = append(h.GetHello().Capabilities, &nodev1.Capability{
		Name: "browser.navigate", Description: "browses", Available: true,
		InputSchema: `{"type":"object","required":["url","profile"],"properties":{"url":{"type":"string"},"profile":{"type":"string"}}}`,
	})
	return h
}

// attachBrowserNode attaches dev offering browser.navigate.
func attachBrowserNode(t *testing.T, td *testDaemon, dev *enrolled) *testNode {
	t.Helper()
	n := openAttach(t, td, dev, browserHello(dev))
	if n.next().GetWelcome() == nil {
		t.Fatal("the first message down is not a welcome")
	}
	return n
}

// browsed is the result of a browser.navigate that ended with state.
func browsed(id, profileID string, base int64, state string) *nodev1.AttachRequest {
	return &nodev1.AttachRequest{Message: &nodev1.AttachRequest_Result{Result: &nodev1.DispatchResult{
		DispatchId: id, Outcome: nodev1.DispatchOutcome_DISPATCH_OUTCOME_SUCCEEDED, FinishTime: timestamppb.Now(),
		ResultJson:   `{"title":"Welcome","final_url":"http://127.0.0.1:8080/"}`,
		BrowserState: &nodev1.BrowserState{ProfileId: profileID, BaseVersion: base, StorageState: []byte(state)},
	}}}
}

// The secrets of the test, which must show nowhere but on the attach stream.
const (
	testCookie   = "c00kie-s3cr3t-v4lue"
	testProxyURL = "http://shopper:pr0xy-pa55@proxy.internal:3128"
)

// TestBrowserDispatchesCarryTheProfileAndSaveItsState runs browser.navigate dispatches
// on nodes that speak the protocol by hand: the profile goes down with each dispatch,
// proxy resolved and newest state included; the state a result carries is the next
// version, which the next dispatch gets, on another node too; a dispatch naming an
// unknown profile or a URL off the allowed domains is refused when created; one whose
// profile was deleted before it was sent fails unsent. No state or proxy URL is in a
// dispatch's row, the audit log or the logs.
func TestBrowserDispatchesCarryTheProfileAndSaveItsState(t *testing.T) {
	t.Parallel()
	logs := &lockedBuffer{}
	dbURL := storetest.URL(t)
	b := &accessBundle{testDaemon: startDaemonLogging(t, io.MultiWriter(logs, t.Output()), "--database-url", dbURL, "--data-dir", t.TempDir()), dbURL: dbURL}
	ctx := t.Context()
	b.putSecret(t, b.owner, "shop-proxy", testProxyURL)
	bc := b.browserClient(b.owner)
	created, err := bc.CreateBrowserProfile(ctx, connect.NewRequest(&browserv1.CreateBrowserProfileRequest{Spec: &browserv1.BrowserProfileSpec{
		Name: "shop", Locale: "en-GB", TimeZone: "Europe/London", Proxy: "secret:shop-proxy", AllowedDomains: []string{"127.0.0.1"},
	}}))
	if err != nil {
		t.Fatal(err)
	}
	profileID := created.Msg.GetProfile().GetId()

	dev1, dev2 := b.enroll(t, time.Hour), b.enroll(t, time.Hour)
	node1 := attachBrowserNode(t, b.testDaemon, dev1)
	input := `{"url":"http://127.0.0.1:8080/login","profile":"shop"}`

	// Refused when created: an unknown profile, a host off the allowed domains; by
	// ExecuteCapability as by CreateDispatch.
	dc := b.dispatchClient()
	for in, field := range map[string]string{
		`{"url":"http://127.0.0.1:8080/","profile":"nope"}`:         "input.profile",
		`{"url":"http://evil.example.com/","profile":"shop"}`:       "input.url",
		`{"url":"http://127.0.0.1.evil.example/","profile":"shop"}`: "input.url",
	} {
		_, err := dc.CreateDispatch(ctx, connect.NewRequest(&controlplanev1.CreateDispatchRequest{NodeId: dev1.deviceID, Capability: "browser.navigate", InputJson: in}))
		wantCode(t, in, err, connect.CodeInvalidArgument)
		if err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("%s: %v does not name %s", in, err, field)
		}
		_, err = dc.ExecuteCapability(ctx, connect.NewRequest(&controlplanev1.ExecuteCapabilityRequest{NodeId: dev1.deviceID, Capability: "browser.navigate", InputJson: in}))
		wantCode(t, "execute "+in, err, connect.CodeInvalidArgument)
	}

	first := createDispatch(t, b.testDaemon, &controlplanev1.CreateDispatchRequest{NodeId: dev1.deviceID, Capability: "browser.navigate", InputJson: input})
	got := node1.nextDispatch()
	p := got.GetBrowserProfile()
	if got.GetDispatchId() != first.GetId() || p.GetId() != profileID || p.GetName() != "shop" || p.GetStateVersion() != 0 ||
		len(p.GetStorageState()) != 0 || p.GetProxyUrl() != testProxyURL || p.GetLocale() != "en-GB" || p.GetTimeZone() != "Europe/London" ||
		p.GetViewportWidth() != 1280 || p.GetViewportHeight() != 800 || len(p.GetAllowedDomains()) != 1 {
		t.Errorf("the first dispatch's profile: %v", p)
	}
	state1 := `{"cookies":[{"name":"session","value":"` + testCookie + `-1","domain":"127.0.0.1","path":"/"}],"origins":[]}`
	node1.send(accepted(first.GetId()))
	node1.send(browsed(first.GetId(), profileID, 0, state1))
	waitState(t, b.testDaemon, first.GetId(), controlplanev1.DispatchState_DISPATCH_STATE_SUCCEEDED)
	shown, err := bc.GetBrowserProfile(ctx, connect.NewRequest(&browserv1.GetBrowserProfileRequest{Profile: &browserv1.GetBrowserProfileRequest_Name{Name: "shop"}}))
	if err != nil {
		t.Fatal(err)
	}
	if pr := shown.Msg.GetProfile(); pr.GetStateVersion() != 1 || pr.GetStateSizeBytes() != int64(len(state1)) || pr.GetStateSaveTime() == nil {
		t.Errorf("after the first dispatch: %v", pr)
	}

	// The next dispatch, on another node, starts from that state.
	node2 := attachBrowserNode(t, b.testDaemon, dev2)
	second := createDispatch(t, b.testDaemon, &controlplanev1.CreateDispatchRequest{NodeId: dev2.deviceID, Capability: "browser.navigate", InputJson: input})
	got = node2.nextDispatch()
	if got.GetBrowserProfile().GetStateVersion() != 1 || string(got.GetBrowserProfile().GetStorageState()) != state1 {
		t.Errorf("the second node's profile: v%d %q", got.GetBrowserProfile().GetStateVersion(), got.GetBrowserProfile().GetStorageState())
	}
	state2 := strings.Replace(state1, "-1", "-2", 1)
	node2.send(browsed(second.GetId(), profileID, 1, state2))
	waitState(t, b.testDaemon, second.GetId(), controlplanev1.DispatchState_DISPATCH_STATE_SUCCEEDED)
	third := createDispatch(t, b.testDaemon, &controlplanev1.CreateDispatchRequest{NodeId: dev1.deviceID, Capability: "browser.navigate", InputJson: input})
	if got := node1.nextDispatch(); got.GetBrowserProfile().GetStateVersion() != 2 || string(got.GetBrowserProfile().GetStorageState()) != state2 {
		t.Errorf("the third dispatch's profile: v%d", got.GetBrowserProfile().GetStateVersion())
	}
	node1.send(browsed(third.GetId(), profileID, 2, strings.Replace(state1, "-1", "-3", 1)))
	waitState(t, b.testDaemon, third.GetId(), controlplanev1.DispatchState_DISPATCH_STATE_SUCCEEDED)

	// Deleted before it was sent: the dispatch fails, unsent.
	node2.close()
	if err := node2.ended(); err != nil && connect.CodeOf(err) != connect.CodeCanceled {
		t.Logf("node 2's stream ended: %v", err)
	}
	eventually.NoError(t, "node 2 offline", func() error {
		n, err := b.nodesClient().GetNode(ctx, connect.NewRequest(&controlplanev1.GetNodeRequest{Id: dev2.deviceID}))
		if err != nil {
			return err
		}
		if n.Msg.GetNode().GetAttachedReplica() != "" {
			return fmt.Errorf("still attached to %s", n.Msg.GetNode().GetAttachedReplica())
		}
		return nil
	})
	orphan := createDispatch(t, b.testDaemon, &controlplanev1.CreateDispatchRequest{NodeId: dev2.deviceID, Capability: "browser.navigate", InputJson: input})
	if _, err := bc.DeleteBrowserProfile(ctx, connect.NewRequest(&browserv1.DeleteBrowserProfileRequest{Profile: &browserv1.DeleteBrowserProfileRequest_Name{Name: "shop"}})); err != nil {
		t.Fatal(err)
	}
	node2 = attachBrowserNode(t, b.testDaemon, dev2)
	failed := waitState(t, b.testDaemon, orphan.GetId(), controlplanev1.DispatchState_DISPATCH_STATE_FAILED)
	if !strings.Contains(failed.GetError(), `browser profile "shop" no longer exists`) {
		t.Errorf("the orphan's error: %q", failed.GetError())
	}
	// The node was sent nothing: the next dispatch down is a later one.
	if _, err := bc.CreateBrowserProfile(ctx, connect.NewRequest(&browserv1.CreateBrowserProfileRequest{Spec: &browserv1.BrowserProfileSpec{
		Name: "shop", AllowedDomains: []string{"127.0.0.1"}}})); err != nil {
		t.Fatal(err)
	}
	later := createDispatch(t, b.testDaemon, &controlplanev1.CreateDispatchRequest{NodeId: dev2.deviceID, Capability: "browser.navigate", InputJson: input})
	got = node2.nextDispatch()
	if got.GetDispatchId() != later.GetId() || got.GetBrowserProfile().GetId() == profileID || got.GetBrowserProfile().GetStateVersion() != 0 {
		t.Errorf("after the orphan, node 2 got %s with profile %s v%d", got.GetDispatchId(), got.GetBrowserProfile().GetId(), got.GetBrowserProfile().GetStateVersion())
	}
	// A state for the deleted profile (same name, another id) is discarded.
	node2.send(browsed(later.GetId(), profileID, 0, state1))
	waitState(t, b.testDaemon, later.GetId(), controlplanev1.DispatchState_DISPATCH_STATE_SUCCEEDED)
	shown, err = bc.GetBrowserProfile(ctx, connect.NewRequest(&browserv1.GetBrowserProfileRequest{Profile: &browserv1.GetBrowserProfileRequest_Name{Name: "shop"}}))
	if err != nil || shown.Msg.GetProfile().GetStateVersion() != 0 {
		t.Errorf("a state for the deleted profile was saved on its successor: %v %v", shown.Msg.GetProfile(), err)
	}

	// The state and the proxy URL are nowhere but on the stream.
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var rows, audit string
	if err := conn.QueryRow(ctx, `select string_agg(d::text, E'\n') from dispatches d`).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(ctx, `select string_agg(procedure || ' ' || target, E'\n' order by sequence) from audit_events`).Scan(&audit); err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{testCookie, "pr0xy-pa55", "storage_state", "cookies"} {
		for where, text := range map[string]string{"the dispatches' rows": rows, "the audit log": audit, "the logs": logs.String()} {
			if strings.Contains(text, secret) {
				t.Errorf("%s hold %q", where, secret)
			}
		}
	}
	for _, v := range []int{1, 2, 3} {
		if !strings.Contains(audit, fmt.Sprintf("browser.state.save browser_profile:shop state_version:%d dispatch:", v)) {
			t.Errorf("no browser.state.save of version %d in the audit log:\n%s", v, audit)
		}
	}
	if !strings.Contains(logs.String(), "browser state discarded") {
		t.Error("the discarded state is not logged")
	}
}

// TestBrowserPermissions checks the roles: operators read profiles, admins and owners
// change them.
func TestBrowserPermissions(t *testing.T) {
	t.Parallel()
	b := startAccess(t)
	ctx := t.Context()
	_, operator := b.createToken(t, &accessv1.CreateTokenRequest{Label: "ops", Role: accessv1.Role_ROLE_OPERATOR})
	_, admin := b.createToken(t, &accessv1.CreateTokenRequest{Label: "admin", Role: accessv1.Role_ROLE_ADMIN})
	spec := &browserv1.BrowserProfileSpec{Name: "web", AllowedDomains: []string{"example.com"}}
	_, err := b.browserClient(operator).CreateBrowserProfile(ctx, connect.NewRequest(&browserv1.CreateBrowserProfileRequest{Spec: spec}))
	wantCode(t, "an operator creates a profile", err, connect.CodePermissionDenied)
	if _, err := b.browserClient(admin).CreateBrowserProfile(ctx, connect.NewRequest(&browserv1.CreateBrowserProfileRequest{Spec: spec})); err != nil {
		t.Fatalf("an admin creates a profile: %v", err)
	}
	list, err := b.browserClient(operator).ListBrowserProfiles(ctx, connect.NewRequest(&browserv1.ListBrowserProfilesRequest{}))
	if err != nil || len(list.Msg.GetProfiles()) != 1 {
		t.Errorf("an operator lists profiles: %v %v", list, err)
	}
	_, err = b.browserClient(operator).ResetBrowserProfileState(ctx, connect.NewRequest(&browserv1.ResetBrowserProfileStateRequest{
		Profile: &browserv1.ResetBrowserProfileStateRequest_Name{Name: "web"}}))
	wantCode(t, "an operator resets a profile's state", err, connect.CodePermissionDenied)
	_, err = b.browserClient(operator).DeleteBrowserProfile(ctx, connect.NewRequest(&browserv1.DeleteBrowserProfileRequest{
		Profile: &browserv1.DeleteBrowserProfileRequest_Name{Name: "web"}}))
	wantCode(t, "an operator deletes a profile", err, connect.CodePermissionDenied)
	_, err = b.browserClient(b.owner).UpdateBrowserProfile(ctx, connect.NewRequest(&browserv1.UpdateBrowserProfileRequest{
		Profile: &browserv1.UpdateBrowserProfileRequest_Name{Name: "web"}, Spec: spec}))
	wantCode(t, "an update without expected_revision", err, connect.CodeInvalidArgument)
	_, err = b.browserClient(b.owner).CreateBrowserProfile(ctx, connect.NewRequest(&browserv1.CreateBrowserProfileRequest{
		Spec: &browserv1.BrowserProfileSpec{Name: "x", AllowedDomains: []string{"a.com:1"}}}))
	wantCode(t, "a domain with a port", err, connect.CodeInvalidArgument)
	if err == nil || !strings.Contains(err.Error(), "allowed_domains[0]") {
		t.Errorf("the error does not name the field: %v", err)
	}
}

// TestRunBrowserToolBrowsesWithItsProfile runs an agent whose browser.navigate tool
// fixes the profile "shop": the model is offered no "profile", each call's dispatch
// browses with shop, and the model gets the result without the screenshot's bytes; a
// call that names a profile (another identity) is refused and dispatches nothing.
// Creating a browser tool without a profile, with one that does not exist, or a
// profile on another tool, is refused naming the field.
func TestRunBrowserToolBrowsesWithItsProfile(t *testing.T) {
	t.Parallel()
	const shot = "\x89PNG\r\n\x1a\n-not-text-\xff\xfe"
	b := startRuns(t, func(req map[string]any) modelReply {
		last := lastMessage(req)
		if last["role"] == "tool" {
			return modelReply{text: "told: " + fmt.Sprint(last["content"])}
		}
		if last["content"] == "switch" {
			return modelReply{calls: []modelCall{{"browser_navigate", `{"url":"http://127.0.0.1:8080/","profile":"bank"}`}}}
		}
		return modelReply{calls: []modelCall{{"browser_navigate", `{"url":"http://127.0.0.1:8080/login"}`}}}
	})
	bc := b.browserClient(b.owner)
	for _, name := range []string{"shop", "bank"} {
		if _, err := bc.CreateBrowserProfile(t.Context(), connect.NewRequest(&browserv1.CreateBrowserProfileRequest{Spec: &browserv1.BrowserProfileSpec{
			Name: name, AllowedDomains: []string{"127.0.0.1"},
		}})); err != nil {
			t.Fatal(err)
		}
	}
	dev := b.enroll(t, time.Hour)
	node := attachBrowserNode(t, b.testDaemon, dev)

	ac := b.agentsClient(b.owner)
	for what, tc := range map[string]struct {
		tool  *agentsv1.Tool
		field string
	}{
		"no profile":          {&agentsv1.Tool{Capability: "browser.navigate"}, "spec.tools[0].browser_profile"},
		"a missing profile":   {&agentsv1.Tool{Capability: "browser.navigate", BrowserProfile: "gone"}, "spec.tools[0].browser_profile"},
		"a non-browser tool":  {&agentsv1.Tool{Capability: "system.info", BrowserProfile: "shop"}, "spec.tools[0].browser_profile"},
		"a malformed profile": {&agentsv1.Tool{Capability: "browser.navigate", BrowserProfile: "Shop"}, "tools[0].browser_profile"},
	} {
		_, err := ac.CreateAgent(t.Context(), connect.NewRequest(&agentsv1.CreateAgentRequest{Spec: &agentsv1.AgentSpec{
			Name: "shopper", Model: "scripted-model", Tools: []*agentsv1.Tool{tc.tool},
		}}))
		wantCode(t, what, err, connect.CodeInvalidArgument)
		if err == nil || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s: %v does not name %s", what, err, tc.field)
		}
	}
	b.createAgent(t, "shopper", nil, &agentsv1.Tool{Capability: "browser.navigate", BrowserProfile: "shop"})

	events := runEvents(t, b.testDaemon, b.owner, "shopper", "log in")
	d := node.nextDispatch()
	if d.GetCapability() != "browser.navigate" || !jsonEqual(d.GetInputJson(), `{"url":"http://127.0.0.1:8080/login","profile":"shop"}`) ||
		d.GetBrowserProfile().GetName() != "shop" {
		t.Errorf("dispatch %s with profile %q", d.GetInputJson(), d.GetBrowserProfile().GetName())
	}
	res := fmt.Sprintf(`{"title":"Welcome","screenshot":{"offset":0,"length":%d,"content_type":"image/png","width":1280,"height":800}}`, len(shot))
	node.send(accepted(d.GetDispatchId()))
	node.send(output(d.GetDispatchId(), 0, shot))
	node.send(&nodev1.AttachRequest{Message: &nodev1.AttachRequest_Result{Result: &nodev1.DispatchResult{
		DispatchId: d.GetDispatchId(), Outcome: nodev1.DispatchOutcome_DISPATCH_OUTCOME_SUCCEEDED, OutputBytes: uint64(len(shot)),
		ResultJson: res, FinishTime: timestamppb.Now(),
	}}})
	run, _ := finished(t, events)
	if run.GetState() != agentsv1.RunState_RUN_STATE_SUCCEEDED || !strings.Contains(run.GetAnswer(), "Welcome") {
		t.Fatalf("run %v: %q", run.GetState(), run.GetAnswer())
	}
	// Offered without "profile"; told the result, not the screenshot's bytes.
	tools, _ := b.model.request(0)["tools"].([]any)
	params := fmt.Sprint(tools[0].(map[string]any)["function"].(map[string]any)["parameters"])
	if len(tools) != 1 || strings.Contains(params, "profile") || !strings.Contains(params, "url") {
		t.Errorf("the model was offered %s", params)
	}
	if last := lastMessage(b.model.request(1)); last["role"] != "tool" || !jsonEqual(fmt.Sprint(last["content"]), res) {
		t.Errorf("the tool message: %v", last)
	}

	run, _ = finished(t, runEvents(t, b.testDaemon, b.owner, "shopper", "switch"))
	if run.GetState() != agentsv1.RunState_RUN_STATE_SUCCEEDED || !strings.Contains(run.GetAnswer(), `give no \"profile\"`) {
		t.Errorf("a call naming a profile: run %v, %q", run.GetState(), run.GetAnswer())
	}
	_, steps := getRun(t, b.testDaemon, run.GetId())
	if calls := toolSteps(steps); len(calls) != 1 || calls[0].GetOutcome() != agentsv1.ToolCallOutcome_TOOL_CALL_OUTCOME_REFUSED || calls[0].GetDispatchId() != "" {
		t.Errorf("a call naming a profile: %v", calls)
	}
	if n := dispatchCount(t, b.testDaemon, dev.deviceID); n != 1 {
		t.Errorf("%d dispatches, want the first call's alone", n)
	}
}
