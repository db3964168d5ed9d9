package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"connectrpc.com/connect"

	agentsv1 "github.com/palyra/palyra/gen/go/palyra/agents/v1"
	"github.com/palyra/palyra/gen/go/palyra/agents/v1/agentsv1connect"
	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	"github.com/palyra/palyra/gen/go/palyra/controlplane/v1/controlplanev1connect"
	"github.com/palyra/palyra/internal/eventually"
	"github.com/palyra/palyra/server/internal/store/storetest"
)

// TestSIGKILLMidRun kills the palyrad process running an agent's run while the run's
// tool call runs on a real node attached to another replica: that replica's reaper
// fails the run ("palyrad replica X stopped mid-run") and cancels its dispatch, and
// nothing of the run runs again, also once the killed replica is back.
func TestSIGKILLMidRun(t *testing.T) {
	t.Parallel()
	dbURL := storetest.URL(t)
	dirA := t.TempDir()
	listenA := "127.0.0.1:" + strconv.Itoa(freePort(t))
	argsA := []string{"--listen", listenA, "--data-dir", dirA, "--database-url", dbURL}
	a := startDaemonProcess(t, argsA...)
	b := startDaemon(t, map[string]string{"PALYRA_MASTER_KEY": masterKey(t, dirA)},
		"--listen", "127.0.0.1:0", "--data-dir", t.TempDir(), "--database-url", dbURL)
	admin := newCLIUser(t).with("PALYRA_TOKEN", bootstrapToken(t, dirA), "PALYRA_URL", "https://"+b.addr,
		"PALYRA_CA_FILE", filepath.Join(dirA, "ca.pem"))

	// The tool's program logs each run, then works for a minute.
	node, record, ranLog := startRecordingNode(t, admin, "https://"+b.addr, caFingerprint(t, dirA), "sleep 60")

	// The model calls the tool, and would answer with its result.
	model := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		args, _ := json.Marshal(map[string]any{"argv": []string{record, "the-call"}})
		chunk, _ := json.Marshal(map[string]any{"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
			"choices": []any{map[string]any{"index": 0, "finish_reason": "tool_calls", "delta": map[string]any{"tool_calls": []any{
				map[string]any{"index": 0, "id": "call_1", "type": "function", "function": map[string]any{"name": "shell_execute", "arguments": string(args)}}}}}}})
		fmt.Fprintf(w, "data: %s\n\ndata: [DONE]\n\n", chunk)
	}))
	t.Cleanup(model.Close)

	hc, owner := ownerClient(t, dirA)
	urlA := "https://" + listenA
	text := func(s string) *controlplanev1.ConfigValue {
		return &controlplanev1.ConfigValue{Kind: &controlplanev1.ConfigValue_Text{Text: s}}
	}
	_, err := controlplanev1connect.NewConfigServiceClient(hc, urlA, owner).UpdateConfig(t.Context(), connect.NewRequest(&controlplanev1.UpdateConfigRequest{
		Change: &controlplanev1.ConfigChangeSpec{Set: []*controlplanev1.ConfigSet{
			{Key: "compat.providers.scripted.base_url", Value: text(model.URL + "/v1")},
			{Key: "compat.providers.scripted.models", Value: text("scripted-model")},
		}},
		ExpectedRevision: new(int64), Reason: "test",
	}))
	if err != nil {
		t.Fatal(err)
	}
	agentsA := agentsv1connect.NewAgentServiceClient(hc, urlA, owner)
	if _, err := agentsA.CreateAgent(t.Context(), connect.NewRequest(&agentsv1.CreateAgentRequest{Spec: &agentsv1.AgentSpec{
		Name: "doomed", Model: "scripted-model",
		Tools: []*agentsv1.Tool{{Capability: "shell.execute", Target: &agentsv1.Tool_NodeId{NodeId: node.deviceID}}},
	}})); err != nil {
		t.Fatal(err)
	}

	req := connect.NewRequest(&agentsv1.RunRequest{Agent: &agentsv1.RunRequest_Name{Name: "doomed"}, Prompt: "go"})
	req.Header().Set("Authorization", "Bearer "+bootstrapToken(t, dirA))
	stream, err := agentsA.Run(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	if !stream.Receive() || stream.Msg().GetStarted() == nil {
		t.Fatalf("the run did not start: %v %v", stream.Msg(), stream.Err())
	}
	runID := stream.Msg().GetStarted().GetId()
	go func() {
		for stream.Receive() { // until palyrad dies
		}
	}()
	eventually.NoError(t, "the tool call running on the node", func() error {
		if b, _ := os.ReadFile(ranLog); string(b) != "the-call\n" {
			return fmt.Errorf("the log holds %q", b)
		}
		return nil
	})
	a.kill(t)

	agentsB := agentsv1connect.NewAgentServiceClient(hc, "https://"+b.addr, owner)
	var run *agentsv1.GetRunResponse
	eventually.NoError(t, "the run failed by the other replica's reaper", func() error {
		res, err := agentsB.GetRun(t.Context(), connect.NewRequest(&agentsv1.GetRunRequest{Id: runID}))
		if err != nil {
			return err
		}
		run = res.Msg
		if s := run.GetRun().GetState(); s != agentsv1.RunState_RUN_STATE_FAILED {
			return fmt.Errorf("it is %v", s)
		}
		return nil
	})
	if want := "palyrad replica " + run.GetRun().GetReplicaId() + " stopped mid-run"; run.GetRun().GetReason() != want {
		t.Errorf("reason %q, want %q", run.GetRun().GetReason(), want)
	}
	var dispatchID string
	for _, s := range run.GetSteps() {
		if tc := s.GetToolCall(); tc != nil {
			dispatchID = tc.GetDispatchId()
			if tc.GetOutcome() != agentsv1.ToolCallOutcome_TOOL_CALL_OUTCOME_CANCELLED || s.GetFinishTime() == nil {
				t.Errorf("the tool call: %v", s)
			}
		}
	}
	api := controlplanev1connect.NewDispatchServiceClient(hc, "https://"+b.addr, owner)
	waitTerminal(t, api, map[string]string{"the-call": dispatchID})
	res, err := api.GetDispatch(t.Context(), connect.NewRequest(&controlplanev1.GetDispatchRequest{Id: dispatchID}))
	if err != nil || res.Msg.GetDispatch().GetState() != controlplanev1.DispatchState_DISPATCH_STATE_CANCELLED {
		t.Errorf("the run's dispatch: %v %v", res, err)
	}

	// Back again, the killed replica resumes nothing: the run stays failed, the call ran
	// once, and its node got no other dispatch.
	a = startDaemonProcess(t, argsA...)
	got, err := agentsA.GetRun(t.Context(), connect.NewRequest(&agentsv1.GetRunRequest{Id: runID}))
	if err != nil || got.Msg.GetRun().GetState() != agentsv1.RunState_RUN_STATE_FAILED || len(got.Msg.GetSteps()) != 2 {
		t.Errorf("the run after the restart: %v %v", got, err)
	}
	if n := countLines(t, ranLog)["the-call"]; n != 1 {
		t.Errorf("the tool call ran %d times", n)
	}
	if states := dispatchStates(t, api, node.deviceID); len(states) != 1 || states["cancelled"] != 1 {
		t.Errorf("the node's dispatches: %v", states)
	}
	node.stop(t)
	a.stop(t)
}
