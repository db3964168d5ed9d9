package daemon_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/openai/openai-go/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	accessv1 "github.com/palyra/palyra/gen/go/palyra/access/v1"
	agentsv1 "github.com/palyra/palyra/gen/go/palyra/agents/v1"
	"github.com/palyra/palyra/gen/go/palyra/agents/v1/agentsv1connect"
	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	nodev1 "github.com/palyra/palyra/gen/go/palyra/node/v1"
	"github.com/palyra/palyra/internal/eventually"
	"github.com/palyra/palyra/server/internal/store/storetest"
)

// modelReply is what the scripted model answers: text, or tool calls.
type modelReply struct {
	text  string
	calls []modelCall
}

// modelCall is a tool call the scripted model makes.
type modelCall struct{ name, args string }

// scriptedModel is an OpenAI-compatible provider on loopback whose answers a test
// scripts: script gets each request (as JSON) and says what to answer, in one
// completion or streamed (tool call arguments in two pieces, as OpenAI streams them).
type scriptedModel struct {
	*httptest.Server
	mu       sync.Mutex
	requests []map[string]any
	script   func(req map[string]any) modelReply
}

func newScriptedModel(t *testing.T, script func(req map[string]any) modelReply) *scriptedModel {
	m := &scriptedModel{script: script}
	m.Server = httptest.NewServer(http.HandlerFunc(m.serve))
	t.Cleanup(m.Close)
	return m
}

func (m *scriptedModel) serve(w http.ResponseWriter, r *http.Request) {
	var req map[string]any
	if r.URL.Path != "/v1/chat/completions" || json.NewDecoder(r.Body).Decode(&req) != nil {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	m.mu.Lock()
	m.requests = append(m.requests, req)
	m.mu.Unlock()
	rep := m.script(req)
	usage := map[string]any{"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
	finish := "stop"
	if len(rep.calls) > 0 {
		finish = "tool_calls"
	}
	var calls []any
	for i, c := range rep.calls {
		calls = append(calls, map[string]any{"index": i, "id": fmt.Sprintf("call_%d_%d", len(m.requests), i), "type": "function",
			"function": map[string]any{"name": c.name, "arguments": c.args}})
	}
	if req["stream"] != true {
		msg := map[string]any{"role": "assistant", "content": rep.text}
		if calls != nil {
			msg["tool_calls"] = calls
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"id": "chatcmpl-s", "object": "chat.completion", "created": 1700000000,
			"model": req["model"], "choices": []any{map[string]any{"index": 0, "message": msg, "finish_reason": finish}}, "usage": usage})
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	rc := http.NewResponseController(w)
	send := func(choices []any, usage any) {
		b, _ := json.Marshal(map[string]any{"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1700000000,
			"model": req["model"], "choices": choices, "usage": usage})
		fmt.Fprintf(w, "data: %s\n\n", b)
		_ = rc.Flush()
	}
	delta := func(d map[string]any, finish any) []any {
		return []any{map[string]any{"index": 0, "delta": d, "finish_reason": finish}}
	}
	send(delta(map[string]any{"role": "assistant", "content": ""}, nil), nil)
	for i, word := range strings.Fields(rep.text) {
		if i > 0 {
			word = " " + word
		}
		send(delta(map[string]any{"content": word}, nil), nil)
	}
	for i, c := range rep.calls {
		half := len(c.args) / 2
		send(delta(map[string]any{"tool_calls": []any{map[string]any{"index": i, "id": fmt.Sprintf("call_%d_%d", len(m.requests), i),
			"type": "function", "function": map[string]any{"name": c.name, "arguments": c.args[:half]}}}}, nil), nil)
		send(delta(map[string]any{"tool_calls": []any{map[string]any{"index": i, "function": map[string]any{"arguments": c.args[half:]}}}}, nil), nil)
	}
	send(delta(map[string]any{}, finish), nil)
	if so, _ := req["stream_options"].(map[string]any); so["include_usage"] == true {
		send([]any{}, usage)
	}
	fmt.Fprint(w, "data: [DONE]\n\n")
}

// request is the i-th request the model received.
func (m *scriptedModel) request(i int) map[string]any {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.requests[i]
}

// calls counts the requests the model received.
func (m *scriptedModel) calls() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.requests)
}

// lastMessage is the last message of a request.
func lastMessage(req map[string]any) map[string]any {
	msgs, _ := req["messages"].([]any)
	last, _ := msgs[len(msgs)-1].(map[string]any)
	return last
}

// toolThenAnswer scripts a model that calls tool with args, then answers with the
// tool's message: "answer: <content>".
func toolThenAnswer(tool, args string) func(map[string]any) modelReply {
	return func(req map[string]any) modelReply {
		last := lastMessage(req)
		if last["role"] == "tool" {
			return modelReply{text: "answer: " + fmt.Sprint(last["content"])}
		}
		return modelReply{calls: []modelCall{{tool, args}}}
	}
}

// runBed is a daemon whose provider "scripted" serves the model "scripted-model".
type runBed struct {
	*accessBundle
	model *scriptedModel
}

// startRuns starts a daemon on a new database with the scripted model.
func startRuns(t *testing.T, script func(map[string]any) modelReply) *runBed {
	t.Helper()
	dbURL := storetest.URL(t)
	b := &runBed{accessBundle: &accessBundle{testDaemon: startDaemon(t, "--database-url", dbURL, "--data-dir", t.TempDir(), "--compat-model", "palyra-echo"), dbURL: dbURL},
		model: newScriptedModel(t, script)}
	b.useModel(t)
	return b
}

// useModel configures the provider "scripted" to serve "scripted-model" from b.model.
func (b *runBed) useModel(t *testing.T) {
	t.Helper()
	cfg := b.configClient(b.owner)
	current, err := cfg.GetConfig(t.Context(), connect.NewRequest(&controlplanev1.GetConfigRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	_, err = cfg.UpdateConfig(t.Context(), connect.NewRequest(&controlplanev1.UpdateConfigRequest{
		Change: &controlplanev1.ConfigChangeSpec{Set: []*controlplanev1.ConfigSet{
			{Key: "compat.providers.scripted.base_url", Value: textValue(b.model.URL + "/v1")},
			{Key: "compat.providers.scripted.models", Value: textValue("scripted-model")},
		}},
		ExpectedRevision: &current.Msg.Revision, Reason: "test",
	}))
	if err != nil {
		t.Fatal(err)
	}
}

// createAgent creates an agent on the scripted model with tools.
func (b *runBed) createAgent(t *testing.T, name string, limits *agentsv1.AgentLimits, tools ...*agentsv1.Tool) {
	t.Helper()
	_, err := b.agentsClient(b.owner).CreateAgent(t.Context(), connect.NewRequest(&agentsv1.CreateAgentRequest{Spec: &agentsv1.AgentSpec{
		Name: name, Model: "scripted-model", SystemPrompt: "You run a fleet.", Tools: tools, Limits: limits,
	}}))
	if err != nil {
		t.Fatalf("create agent %s: %v", name, err)
	}
}

// runEvents starts a run of agent with prompt through AgentService.Run and returns its
// events as they come; the channel closes after the last.
func runEvents(t *testing.T, td *testDaemon, token, agent, prompt string) <-chan *agentsv1.RunResponse {
	t.Helper()
	stream, err := td.agentsClient(token).Run(t.Context(), connect.NewRequest(&agentsv1.RunRequest{Agent: &agentsv1.RunRequest_Name{Name: agent}, Prompt: prompt}))
	if err != nil {
		t.Fatal(err)
	}
	out := make(chan *agentsv1.RunResponse, 1024)
	go func() {
		defer close(out)
		defer stream.Close()
		for stream.Receive() {
			out <- stream.Msg()
			if stream.Msg().GetFinished() != nil {
				return // the test may end before the stream's trailers come
			}
		}
		if err := stream.Err(); err != nil {
			t.Errorf("run stream: %v", err)
		}
	}()
	return out
}

// finished collects a run's events until it finished.
func finished(t *testing.T, events <-chan *agentsv1.RunResponse) (*agentsv1.Run, []*agentsv1.RunResponse) {
	t.Helper()
	var all []*agentsv1.RunResponse
	deadline := time.After(eventually.Deadline)
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatalf("the run's stream ended without finished: %v", all)
			}
			all = append(all, ev)
			if f := ev.GetFinished(); f != nil {
				return f, all
			}
		case <-deadline:
			t.Fatalf("the run did not finish within %v: %v", eventually.Deadline, all)
		}
	}
}

// awaitApproval reads a run's events until the run waits for a human's decision on a
// call, and returns the pending approval.
func awaitApproval(t *testing.T, events <-chan *agentsv1.RunResponse) *agentsv1.Approval {
	t.Helper()
	deadline := time.After(eventually.Deadline)
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatal("the run's stream ended without asking")
			}
			if a := ev.GetApprovalPending(); a != nil {
				return a
			}
			if ev.GetFinished() != nil {
				t.Fatalf("the run finished without asking: %v", ev)
			}
		case <-deadline:
			t.Fatalf("the run did not ask within %v", eventually.Deadline)
		}
	}
}

// askingRun is a run waiting for a human's decision on its call.
type askingRun struct {
	events   <-chan *agentsv1.RunResponse
	approval *agentsv1.Approval // pending
	dev      *enrolled          // the node the call would run on
	node     *testNode
}

// startAskingRun creates the agent name, whose shell.execute tool asks and runs on a
// node of its own attached to b, and starts a run of it as the owner, which waits for
// an approval. The scripted model must call shell_execute.
func (b *runBed) startAskingRun(t *testing.T, name string) *askingRun {
	t.Helper()
	r := &askingRun{dev: b.enroll(t, time.Hour)}
	r.node, _ = attachNode(t, b.testDaemon, r.dev)
	b.createAgent(t, name, nil, &agentsv1.Tool{Capability: "shell.execute", Target: &agentsv1.Tool_NodeId{NodeId: r.dev.deviceID},
		Policy: agentsv1.ToolPolicy_TOOL_POLICY_ASK})
	r.events = runEvents(t, b.testDaemon, b.owner, name, "how long has it been up?")
	r.approval = awaitApproval(t, r.events)
	return r
}

// answerDispatch has the node answer its next dispatch with resultJSON, and returns it.
func answerDispatch(t *testing.T, node *testNode, resultJSON string) *nodev1.Dispatch {
	t.Helper()
	d := node.nextDispatch()
	node.send(accepted(d.GetDispatchId()))
	node.send(&nodev1.AttachRequest{Message: &nodev1.AttachRequest_Result{Result: &nodev1.DispatchResult{
		DispatchId: d.GetDispatchId(), Outcome: nodev1.DispatchOutcome_DISPATCH_OUTCOME_SUCCEEDED, ResultJson: resultJSON, FinishTime: timestamppb.Now(),
	}}})
	return d
}

// getRun returns a run and its steps.
func getRun(t *testing.T, td *testDaemon, id string) (*agentsv1.Run, []*agentsv1.RunStep) {
	t.Helper()
	res, err := td.agentsClient(td.owner).GetRun(t.Context(), connect.NewRequest(&agentsv1.GetRunRequest{Id: id}))
	if err != nil {
		t.Fatalf("get run %s: %v", id, err)
	}
	return res.Msg.GetRun(), res.Msg.GetSteps()
}

// toolSteps are the tool-call steps of a run.
func toolSteps(steps []*agentsv1.RunStep) []*agentsv1.ToolCall {
	var out []*agentsv1.ToolCall
	for _, s := range steps {
		if tc := s.GetToolCall(); tc != nil {
			out = append(out, tc)
		}
	}
	return out
}

// dispatchCount counts the dispatches created on node.
func dispatchCount(t *testing.T, td *testDaemon, node string) int {
	t.Helper()
	res, err := td.dispatchClient().ListDispatches(t.Context(), connect.NewRequest(&controlplanev1.ListDispatchesRequest{NodeId: node}))
	if err != nil {
		t.Fatal(err)
	}
	return len(res.Msg.GetDispatches())
}

// TestRunCallsSystemInfoAndAnswersWithTheHostname runs an agent whose model calls
// system.info on the node the tool names and answers with the hostname the node
// reported: the events stream in order, the dispatch has the run's idempotency key, and
// every step is stored.
func TestRunCallsSystemInfoAndAnswersWithTheHostname(t *testing.T) {
	t.Parallel()
	b := startRuns(t, toolThenAnswer("system_info", "{}"))
	dev := b.enroll(t, time.Hour)
	node, _ := attachNode(t, b.testDaemon, dev)
	b.createAgent(t, "fleet", nil, &agentsv1.Tool{Capability: "system.info", Target: &agentsv1.Tool_NodeId{NodeId: dev.deviceID}})

	events := runEvents(t, b.testDaemon, b.owner, "fleet", "Which host is it?")
	d := answerDispatch(t, node, `{"hostname":"node-7.example"}`)
	if d.GetCapability() != "system.info" || d.GetInputJson() != "{}" {
		t.Errorf("dispatch: %v", d)
	}
	run, all := finished(t, events)
	if run.GetState() != agentsv1.RunState_RUN_STATE_SUCCEEDED || !strings.Contains(run.GetAnswer(), "node-7.example") {
		t.Fatalf("run: %v", run)
	}
	if all[0].GetStarted() == nil || all[0].GetStarted().GetId() != run.GetId() {
		t.Errorf("first event: %v", all[0])
	}
	var kinds []string
	var text strings.Builder
	for _, ev := range all {
		switch e := ev.GetEvent().(type) {
		case *agentsv1.RunResponse_ToolCallStarted:
			kinds = append(kinds, "started")
		case *agentsv1.RunResponse_ToolCallFinished:
			kinds = append(kinds, "finished:"+e.ToolCallFinished.GetToolCall().GetOutcome().String())
		case *agentsv1.RunResponse_TextDelta:
			text.WriteString(e.TextDelta.GetText())
		}
	}
	if strings.Join(kinds, ",") != "started,finished:TOOL_CALL_OUTCOME_SUCCEEDED" || !strings.Contains(text.String(), "node-7.example") {
		t.Errorf("events: %v, text %q", kinds, text.String())
	}
	got, steps := getRun(t, b.testDaemon, run.GetId())
	if len(steps) != 4 || steps[0].GetModelCall() == nil || steps[1].GetToolCall() == nil || steps[2].GetModelCall() == nil || steps[3].GetAnswer() == nil {
		t.Fatalf("steps: %v", steps)
	}
	tc := steps[1].GetToolCall()
	if tc.GetNodeId() != dev.deviceID || tc.GetDispatchId() != d.GetDispatchId() || tc.GetCapability() != "system.info" ||
		!jsonEqual(tc.GetResultJson(), `{"hostname":"node-7.example"}`) || steps[1].GetFinishTime() == nil {
		t.Errorf("tool call: %v", tc)
	}
	if got.GetModelCalls() != 2 || got.GetToolCalls() != 1 || got.GetPromptTokens() != 20 || got.GetCompletionTokens() != 10 ||
		got.GetAgentName() != "fleet" || got.GetAgent().GetSystemPrompt() != "You run a fleet." || got.GetFinishTime() == nil {
		t.Errorf("stored run: %v", got)
	}
	disp, _ := getDispatch(t, b.testDaemon, d.GetDispatchId())
	if disp.GetIdempotencyKey() != fmt.Sprintf("run:%s:2", run.GetId()) {
		t.Errorf("idempotency key %q", disp.GetIdempotencyKey())
	}
	// The model was offered the tool, saw the system prompt first and got the result.
	first := b.model.request(0)
	tools, _ := first["tools"].([]any)
	if len(tools) != 1 || !strings.Contains(fmt.Sprint(tools[0]), "system_info") {
		t.Errorf("tools offered: %v", first["tools"])
	}
	if msgs, _ := first["messages"].([]any); msgs[0].(map[string]any)["content"] != "You run a fleet." {
		t.Errorf("first message: %v", msgs[0])
	}
	if last := lastMessage(b.model.request(1)); last["role"] != "tool" || last["content"] != `{"hostname":"node-7.example"}` {
		t.Errorf("tool message: %v", last)
	}
	// The dispatch and the end are audited, as the run's principal.
	eventually.NoError(t, "the run's audit events", func() error {
		want := map[string]string{
			"agents.run.dispatch": fmt.Sprintf("run:%s step:2 dispatch:%s node:%s", run.GetId(), d.GetDispatchId(), dev.deviceID),
			"agents.run.finish":   "run:" + run.GetId() + " state:succeeded",
		}
		for _, r := range auditLog(t, b.dbURL) {
			if want[r.Procedure] == r.Target && r.Principal == run.GetStartedBy() {
				delete(want, r.Procedure)
			}
		}
		if len(want) > 0 {
			return fmt.Errorf("missing %v", want)
		}
		return nil
	})
	list, err := b.agentsClient(b.owner).ListRuns(t.Context(), connect.NewRequest(&agentsv1.ListRunsRequest{AgentName: "fleet"}))
	if err != nil || len(list.Msg.GetRuns()) != 1 || list.Msg.GetRuns()[0].GetId() != run.GetId() {
		t.Errorf("list runs: %v %v", list, err)
	}
}

// TestRunRefusesCallsWithoutDispatchingThem covers the calls palyrad refuses and tells
// the model about, none of which reaches a node: a deny-policy tool, input that the
// capability's schema refuses, a node the tool does not allow (a prompt-injected
// node_id), and an unknown tool.
func TestRunRefusesCallsWithoutDispatchingThem(t *testing.T) {
	t.Parallel()
	b := startRuns(t, func(req map[string]any) modelReply {
		last := lastMessage(req)
		if last["role"] == "tool" {
			return modelReply{text: "told: " + fmt.Sprint(last["content"])}
		}
		switch last["content"] {
		case "deny":
			return modelReply{calls: []modelCall{{"system_info", "{}"}}}
		case "schema":
			return modelReply{calls: []modelCall{{"shell_execute", `{"argv": "rm -rf /"}`}}}
		case "other-node":
			return modelReply{calls: []modelCall{{"shell_execute", `{"argv": ["id"], "node_id": "01JD5ZJ8Q0W1X2Y3Z4A5B6C7D8"}`}}}
		case "unknown":
			return modelReply{calls: []modelCall{{"format_disk", "{}"}}}
		}
		return modelReply{text: "?"}
	})
	dev := b.enroll(t, time.Hour)
	attachNode(t, b.testDaemon, dev)
	b.createAgent(t, "careful", nil,
		&agentsv1.Tool{Capability: "system.info", Policy: agentsv1.ToolPolicy_TOOL_POLICY_DENY},
		&agentsv1.Tool{Capability: "shell.execute", Target: &agentsv1.Tool_NodeSelector{NodeSelector: "region=eu-west"}},
	)
	for prompt, want := range map[string]struct {
		outcome agentsv1.ToolCallOutcome
		told    string
	}{
		"deny":       {agentsv1.ToolCallOutcome_TOOL_CALL_OUTCOME_DENIED, "denied by the agent's policy"},
		"schema":     {agentsv1.ToolCallOutcome_TOOL_CALL_OUTCOME_REFUSED, "capability shell.execute"},
		"other-node": {agentsv1.ToolCallOutcome_TOOL_CALL_OUTCOME_REFUSED, "may not run on node 01JD5ZJ8Q0W1X2Y3Z4A5B6C7D8"},
		"unknown":    {agentsv1.ToolCallOutcome_TOOL_CALL_OUTCOME_REFUSED, `there is no tool \"format_disk\"`},
	} {
		run, _ := finished(t, runEvents(t, b.testDaemon, b.owner, "careful", prompt))
		if run.GetState() != agentsv1.RunState_RUN_STATE_SUCCEEDED || !strings.Contains(run.GetAnswer(), want.told) {
			t.Errorf("%s: run %v %q, want the model told %q", prompt, run.GetState(), run.GetAnswer(), want.told)
			continue
		}
		_, steps := getRun(t, b.testDaemon, run.GetId())
		calls := toolSteps(steps)
		if len(calls) != 1 || calls[0].GetOutcome() != want.outcome || calls[0].GetDispatchId() != "" {
			t.Errorf("%s: tool calls %v, want one %v without a dispatch", prompt, calls, want.outcome)
		}
	}
	if n := dispatchCount(t, b.testDaemon, dev.deviceID); n != 0 {
		t.Errorf("%d dispatches reached the node, want none", n)
	}
}

// TestRunReportsWhatItsAgentLacks runs agents that were saved with what palyrad cannot
// serve now: a tool whose capability no node offers is refused to the model with the
// reason (as CreateAgent warned), and a model the compat API stopped serving fails the
// run with the reason, before any model call.
func TestRunReportsWhatItsAgentLacks(t *testing.T) {
	t.Parallel()
	b := startRuns(t, toolThenAnswer("camera_capture", `{"url": "https://example.com"}`))
	dev := b.enroll(t, time.Hour)
	attachNode(t, b.testDaemon, dev) // offers shell.execute and system.info
	res, err := b.agentsClient(b.owner).CreateAgent(t.Context(), connect.NewRequest(&agentsv1.CreateAgentRequest{Spec: &agentsv1.AgentSpec{
		Name: "filming", Model: "scripted-model", Tools: []*agentsv1.Tool{{Capability: "camera.capture"}},
	}}))
	if err != nil || !slices.Equal(res.Msg.GetWarnings(), []string{"tool camera_capture: no online node offers camera.capture"}) {
		t.Fatalf("create: %v %v", res, err)
	}
	run, _ := finished(t, runEvents(t, b.testDaemon, b.owner, "filming", "film it"))
	if run.GetState() != agentsv1.RunState_RUN_STATE_SUCCEEDED || !strings.Contains(run.GetAnswer(), "no online node offers camera.capture") {
		t.Errorf("run: %v %q", run.GetState(), run.GetAnswer())
	}
	_, steps := getRun(t, b.testDaemon, run.GetId())
	if calls := toolSteps(steps); len(calls) != 1 || calls[0].GetOutcome() != agentsv1.ToolCallOutcome_TOOL_CALL_OUTCOME_REFUSED || calls[0].GetDispatchId() != "" {
		t.Errorf("tool calls: %v", calls)
	}

	// The provider stops serving the agent's model.
	revision := int64(1) // startRuns's
	_, err = b.configClient(b.owner).UpdateConfig(t.Context(), connect.NewRequest(&controlplanev1.UpdateConfigRequest{
		Change: &controlplanev1.ConfigChangeSpec{Set: []*controlplanev1.ConfigSet{
			{Key: "compat.providers.scripted.models", Value: textValue("another-model")},
		}},
		ExpectedRevision: &revision, Reason: "test",
	}))
	if err != nil {
		t.Fatal(err)
	}
	calls := b.model.calls()
	eventually.NoError(t, "the run fails for want of its model", func() error {
		run, _ := finished(t, runEvents(t, b.testDaemon, b.owner, "filming", "film it"))
		if run.GetState() != agentsv1.RunState_RUN_STATE_FAILED || run.GetReason() != `the agent's model "scripted-model" is not served now (palyra compat models lists those that are)` {
			return fmt.Errorf("run %v: %q", run.GetState(), run.GetReason())
		}
		return nil
	})
	if n := b.model.calls(); n != calls {
		t.Errorf("the model was called %d more times", n-calls)
	}
}

// TestRunStopsAtItsStepLimit runs a model that never stops calling tools: the run fails
// with max_steps after that many model calls.
func TestRunStopsAtItsStepLimit(t *testing.T) {
	t.Parallel()
	b := startRuns(t, func(map[string]any) modelReply { return modelReply{calls: []modelCall{{"system_info", "{}"}}} })
	b.createAgent(t, "loopy", &agentsv1.AgentLimits{MaxSteps: 3},
		&agentsv1.Tool{Capability: "system.info", Policy: agentsv1.ToolPolicy_TOOL_POLICY_DENY})
	run, _ := finished(t, runEvents(t, b.testDaemon, b.owner, "loopy", "go"))
	if run.GetState() != agentsv1.RunState_RUN_STATE_FAILED || run.GetReason() != "max_steps" || run.GetModelCalls() != 3 {
		t.Errorf("run: %v", run)
	}
	if n := b.model.calls(); n != 3 {
		t.Errorf("the model was called %d times, want 3", n)
	}

	b.createAgent(t, "busy", &agentsv1.AgentLimits{MaxToolCalls: 2},
		&agentsv1.Tool{Capability: "system.info", Policy: agentsv1.ToolPolicy_TOOL_POLICY_DENY})
	run, _ = finished(t, runEvents(t, b.testDaemon, b.owner, "busy", "go"))
	if run.GetState() != agentsv1.RunState_RUN_STATE_FAILED || run.GetReason() != "max_tool_calls" || run.GetToolCalls() != 2 {
		t.Errorf("run: %v", run)
	}

	b.createAgent(t, "hungry", &agentsv1.AgentLimits{MaxTokens: 20},
		&agentsv1.Tool{Capability: "system.info", Policy: agentsv1.ToolPolicy_TOOL_POLICY_DENY})
	run, _ = finished(t, runEvents(t, b.testDaemon, b.owner, "hungry", "go"))
	if run.GetState() != agentsv1.RunState_RUN_STATE_FAILED || run.GetReason() != "max_tokens" {
		t.Errorf("run: %v", run)
	}
}

// TestCancelRunCancelsItsDispatchOnTheNode cancels a run whose tool call runs on a node:
// the node is told to cancel the dispatch, and the run ends cancelled with the reason.
// A run that ended cannot be cancelled; another principal's run needs agents.write.
func TestCancelRunCancelsItsDispatchOnTheNode(t *testing.T) {
	t.Parallel()
	b := startRuns(t, toolThenAnswer("system_info", "{}"))
	dev := b.enroll(t, time.Hour)
	node, _ := attachNode(t, b.testDaemon, dev)
	b.createAgent(t, "slow", &agentsv1.AgentLimits{Deadline: durationpb.New(time.Hour)},
		&agentsv1.Tool{Capability: "system.info"})

	events := runEvents(t, b.testDaemon, b.owner, "slow", "go")
	started := (<-events).GetStarted()
	d := node.nextDispatch()
	node.send(accepted(d.GetDispatchId()))
	waitState(t, b.testDaemon, d.GetDispatchId(), controlplanev1.DispatchState_DISPATCH_STATE_RUNNING)

	_, operator := b.createToken(t, &accessv1.CreateTokenRequest{Label: "operator", Role: accessv1.Role_ROLE_OPERATOR})
	_, err := b.agentsClient(operator).CancelRun(t.Context(), connect.NewRequest(&agentsv1.CancelRunRequest{Id: started.GetId()}))
	wantCode(t, "an operator cancels the owner's run", err, connect.CodePermissionDenied)

	res, err := b.agentsClient(b.owner).CancelRun(t.Context(), connect.NewRequest(&agentsv1.CancelRunRequest{Id: started.GetId(), Reason: "enough"}))
	if err != nil || res.Msg.GetRun().GetCancelTime() == nil {
		t.Fatalf("cancel: %v %v", res, err)
	}
	var cancel *nodev1.Cancel
	for cancel == nil {
		cancel = node.next().GetCancel()
	}
	if cancel.GetDispatchId() != d.GetDispatchId() {
		t.Errorf("cancel down: %v", cancel)
	}
	node.send(result(d.GetDispatchId(), nodev1.DispatchOutcome_DISPATCH_OUTCOME_CANCELLED, 0, 0))
	run, _ := finished(t, events)
	if run.GetState() != agentsv1.RunState_RUN_STATE_CANCELLED || run.GetReason() != "enough" {
		t.Errorf("run: %v", run)
	}
	_, steps := getRun(t, b.testDaemon, run.GetId())
	if calls := toolSteps(steps); len(calls) != 1 || calls[0].GetOutcome() != agentsv1.ToolCallOutcome_TOOL_CALL_OUTCOME_CANCELLED {
		t.Errorf("tool calls: %v", calls)
	}
	waitState(t, b.testDaemon, d.GetDispatchId(), controlplanev1.DispatchState_DISPATCH_STATE_CANCELLED)
	_, err = b.agentsClient(b.owner).CancelRun(t.Context(), connect.NewRequest(&agentsv1.CancelRunRequest{Id: started.GetId()}))
	wantCode(t, "cancel an ended run", err, connect.CodeFailedPrecondition)
}

// TestRunsInParallelOnTwoReplicas runs two agents at once, one on each of two replicas
// of one database, on nodes attached to either: both succeed, each run belongs to the
// replica that started it, and WatchRun and CancelRun work from the other replica.
func TestRunsInParallelOnTwoReplicas(t *testing.T) {
	t.Parallel()
	b := startRuns(t, toolThenAnswer("system_info", "{}"))
	other := b.startReplica(t)
	other.owner = b.owner
	other.h2 = other.client(b.owner)
	devA, devB := b.enroll(t, time.Hour), b.enroll(t, time.Hour)
	nodeA, _ := attachNode(t, b.testDaemon, devA)
	nodeB, _ := attachNode(t, other, devB)
	b.createAgent(t, "on-a", nil, &agentsv1.Tool{Capability: "system.info", Target: &agentsv1.Tool_NodeId{NodeId: devA.deviceID}})
	b.createAgent(t, "on-b", nil, &agentsv1.Tool{Capability: "system.info", Target: &agentsv1.Tool_NodeId{NodeId: devB.deviceID}})

	// The run on the first replica uses the node attached to the second, and the reverse.
	eventsA := runEvents(t, b.testDaemon, b.owner, "on-b", "go")
	eventsB := runEvents(t, other, b.owner, "on-a", "go")
	startedA, startedB := (<-eventsA).GetStarted(), (<-eventsB).GetStarted()
	watch, err := other.agentsClient(b.owner).WatchRun(t.Context(), connect.NewRequest(&agentsv1.WatchRunRequest{Id: startedA.GetId()}))
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Close()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); answerDispatch(t, nodeA, `{"hostname":"a"}`) }()
	go func() { defer wg.Done(); answerDispatch(t, nodeB, `{"hostname":"b"}`) }()
	wg.Wait()
	runA, _ := finished(t, eventsA)
	runB, _ := finished(t, eventsB)
	if runA.GetState() != agentsv1.RunState_RUN_STATE_SUCCEEDED || runA.GetAnswer() != `answer: {"hostname":"b"}` || runA.GetReplicaId() != b.cfg.ReplicaID {
		t.Errorf("run A: %v", runA)
	}
	if runB.GetState() != agentsv1.RunState_RUN_STATE_SUCCEEDED || runB.GetAnswer() != `answer: {"hostname":"a"}` || runB.GetReplicaId() != other.cfg.ReplicaID {
		t.Errorf("run B: %v", runB)
	}
	if startedB.GetReplicaId() != other.cfg.ReplicaID {
		t.Errorf("run B started on %s", startedB.GetReplicaId())
	}
	// The watch from the other replica saw the run through to its end.
	var last *agentsv1.Run
	steps := map[int32]bool{}
	for watch.Receive() {
		if r := watch.Msg().GetRun(); r != nil {
			last = r
		}
		if s := watch.Msg().GetStep(); s != nil {
			steps[s.GetSeq()] = true
		}
	}
	if err := watch.Err(); err != nil || last.GetState() != agentsv1.RunState_RUN_STATE_SUCCEEDED || len(steps) != 4 {
		t.Errorf("watch: last %v, steps %v, err %v", last, steps, err)
	}

	// A cancel asked of the other replica reaches the loop on this one.
	b.createAgent(t, "waits", &agentsv1.AgentLimits{Deadline: durationpb.New(time.Hour)},
		&agentsv1.Tool{Capability: "system.info", Target: &agentsv1.Tool_NodeId{NodeId: devA.deviceID}})
	events := runEvents(t, b.testDaemon, b.owner, "waits", "go")
	started := (<-events).GetStarted()
	d := nodeA.nextDispatch()
	nodeA.send(accepted(d.GetDispatchId()))
	if _, err := other.agentsClient(b.owner).CancelRun(t.Context(), connect.NewRequest(&agentsv1.CancelRunRequest{Id: started.GetId()})); err != nil {
		t.Fatal(err)
	}
	run, _ := finished(t, events)
	if run.GetState() != agentsv1.RunState_RUN_STATE_CANCELLED || !strings.Contains(run.GetReason(), "cancelled by token:") {
		t.Errorf("run cancelled from the other replica: %v", run)
	}
}

// TestReaperFailsTheRunsOfAReplicaThatIsGone stores a run as a replica that never
// reported (as one killed would leave it, its tool call dispatched): the reaper of the
// live replica fails it with the reason, ends its step and cancels its dispatch, and
// nothing of it runs again.
func TestReaperFailsTheRunsOfAReplicaThatIsGone(t *testing.T) {
	t.Parallel()
	b := startRuns(t, toolThenAnswer("system_info", "{}"))
	dev := b.enroll(t, time.Hour)
	node, _ := attachNode(t, b.testDaemon, dev)
	runID := "01JD5ZJ8Q0W1X2Y3Z4A5B6C7D9"
	d := createDispatch(t, b.testDaemon, &controlplanev1.CreateDispatchRequest{NodeId: dev.deviceID, Capability: "system.info",
		IdempotencyKey: "run:" + runID + ":2"})
	got := node.nextDispatch()
	node.send(accepted(got.GetDispatchId()))
	b.sql(t,
		`insert into agent_runs (id, agent_id, agent_name, agent_revision, agent, input, started_by, replica_id, created_at, deadline)
		 values ('`+runID+`', '01JD5ZJ8Q0W1X2Y3Z4A5B6C7DA', 'gone', 1, '{"name":"gone","model":"scripted-model"}', '[]', 'token:x', 'replica-killed', now(), now() + interval '1 hour')`,
		`insert into agent_run_steps (run_id, seq, kind, started_at, tool, capability, node_id, dispatch_id)
		 values ('`+runID+`', 2, 'tool_call', now(), 'system_info', 'system.info', '`+dev.deviceID+`', '`+d.GetId()+`')`,
	)
	var run *agentsv1.Run
	eventually.NoError(t, "the run reaped", func() error {
		run, _ = getRun(t, b.testDaemon, runID)
		if run.GetState() != agentsv1.RunState_RUN_STATE_FAILED {
			return fmt.Errorf("it is %v", run.GetState())
		}
		return nil
	})
	if run.GetReason() != "palyrad replica replica-killed stopped mid-run" {
		t.Errorf("reason %q", run.GetReason())
	}
	_, steps := getRun(t, b.testDaemon, runID)
	if calls := toolSteps(steps); len(calls) != 1 || calls[0].GetOutcome() != agentsv1.ToolCallOutcome_TOOL_CALL_OUTCOME_CANCELLED || steps[0].GetFinishTime() == nil {
		t.Errorf("steps: %v", steps)
	}
	var cancel *nodev1.Cancel
	for cancel == nil {
		cancel = node.next().GetCancel()
	}
	if cancel.GetDispatchId() != d.GetId() {
		t.Errorf("cancel down: %v", cancel)
	}
	node.send(result(d.GetId(), nodev1.DispatchOutcome_DISPATCH_OUTCOME_CANCELLED, 0, 0))
	waitState(t, b.testDaemon, d.GetId(), controlplanev1.DispatchState_DISPATCH_STATE_CANCELLED)
	if n := dispatchCount(t, b.testDaemon, dev.deviceID); n != 1 {
		t.Errorf("%d dispatches, want the one", n)
	}
}

// jsonEqual reports whether two JSON texts hold the same value.
func jsonEqual(a, b string) bool {
	var x, y any
	return json.Unmarshal([]byte(a), &x) == nil && json.Unmarshal([]byte(b), &y) == nil && reflect.DeepEqual(x, y)
}

// TestAgentModelThroughTheOpenAISDK asks an agent through the official Go client, as
// the model "agent:NAME" and "agent:" (the default agent): /v1/models lists it, the
// unary answer is the run's, and the stream carries the text as content and each tool
// call's start and end as chunks without choices whose "palyra" member the SDK passes
// on untouched. A token without agents.run is refused.
func TestAgentModelThroughTheOpenAISDK(t *testing.T) {
	t.Parallel()
	b := startRuns(t, toolThenAnswer("system_info", "{}"))
	ctx := t.Context()
	dev := b.enroll(t, time.Hour)
	node, _ := attachNode(t, b.testDaemon, dev)
	b.createAgent(t, "fleet", nil, &agentsv1.Tool{Capability: "system.info", Target: &agentsv1.Tool_NodeId{NodeId: dev.deviceID}})
	for _, key := range []string{"compat_api", "compat_streaming"} {
		if _, err := b.flagsClient(b.owner).SetFlag(ctx, connect.NewRequest(&accessv1.SetFlagRequest{Key: key, Enabled: true})); err != nil {
			t.Fatal(err)
		}
	}
	_, operator := b.createToken(t, &accessv1.CreateTokenRequest{Label: "sdk", Role: accessv1.Role_ROLE_OPERATOR})
	sdk := (&compatBed{testDaemon: b.testDaemon}).sdk(operator)

	page, err := sdk.Models.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var listed []string
	for _, m := range page.Data {
		listed = append(listed, m.ID+"/"+m.OwnedBy)
	}
	if !slices.Contains(listed, "agent:fleet/agent") {
		t.Errorf("models: %v, want agent:fleet", listed)
	}

	params := openai.ChatCompletionNewParams{Model: "agent:fleet", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Which host?")}}
	go answerDispatch(t, node, `{"hostname":"node-7"}`)
	res, err := sdk.Chat.Completions.New(ctx, params)
	if err != nil {
		t.Fatal(err)
	}
	if res.Choices[0].Message.Content != `answer: {"hostname":"node-7"}` || res.Model != "agent:fleet" || res.Usage.TotalTokens != 30 ||
		!strings.HasPrefix(res.ID, "chatcmpl-") {
		t.Errorf("unary: %q model %q usage %+v id %q", res.Choices[0].Message.Content, res.Model, res.Usage, res.ID)
	}

	if _, err := b.agentsClient(b.owner).SetDefaultAgent(ctx, connect.NewRequest(&agentsv1.SetDefaultAgentRequest{Agent: &agentsv1.SetDefaultAgentRequest_Name{Name: "fleet"}})); err != nil {
		t.Fatal(err)
	}
	params.Model = "agent:"
	params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	go answerDispatch(t, node, `{"hostname":"node-8"}`)
	s := sdk.Chat.Completions.NewStreaming(ctx, params)
	var text strings.Builder
	var events []string
	var usage int64
	for s.Next() {
		c := s.Current()
		for _, ch := range c.Choices {
			text.WriteString(ch.Delta.Content)
		}
		if p, ok := c.JSON.ExtraFields["palyra"]; ok {
			if len(c.Choices) != 0 {
				t.Errorf("a palyra chunk with choices: %s", c.RawJSON())
			}
			var ev struct {
				Type string `json:"type"`
			}
			_ = json.Unmarshal([]byte(p.Raw()), &ev)
			events = append(events, ev.Type)
		}
		if c.JSON.Usage.Valid() && c.Usage.TotalTokens > 0 {
			usage = c.Usage.TotalTokens
		}
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	if text.String() != `answer: {"hostname":"node-8"}` || usage != 30 || strings.Join(events, ",") != "tool_call_started,tool_call_finished" {
		t.Errorf("stream: %q usage %d events %v", text.String(), usage, events)
	}

	_, scoped := b.createToken(t, &accessv1.CreateTokenRequest{Label: "chat only", Role: accessv1.Role_ROLE_OPERATOR, Scopes: []string{"compat.chat.create"}})
	chatOnly := (&compatBed{testDaemon: b.testDaemon}).sdk(scoped)
	_, err = chatOnly.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "agent:fleet",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Which host?")}})
	apiError(t, "agent model without agents.run", err, http.StatusForbidden, "insufficient_permissions", "")
}

// TestApprovalScopes runs a model that calls an ask tool twice in a run: approved once,
// the second call asks again; approved for the run, the second call runs without
// asking, under that approval.
func TestApprovalScopes(t *testing.T) {
	t.Parallel()
	b := startRuns(t, func(req map[string]any) modelReply {
		msgs, _ := req["messages"].([]any)
		if tools := len(msgs) - 3; tools < 2 { // system, user, then a call and its answer each
			return modelReply{calls: []modelCall{{"shell_execute", `{"argv": ["uptime"]}`}}}
		}
		return modelReply{text: "done"}
	})
	dev := b.enroll(t, time.Hour)
	node, _ := attachNode(t, b.testDaemon, dev)
	b.createAgent(t, "asker", nil, &agentsv1.Tool{Capability: "shell.execute", Policy: agentsv1.ToolPolicy_TOOL_POLICY_ASK})
	approvals := agentsv1connect.NewApprovalServiceClient(b.h2, b.baseURL)
	approveNext := func(events <-chan *agentsv1.RunResponse, scope agentsv1.ApprovalScope) string {
		t.Helper()
		a := awaitApproval(t, events)
		if _, err := approvals.DecideApproval(t.Context(), connect.NewRequest(&agentsv1.DecideApprovalRequest{Id: a.GetId(), Approve: true, Scope: scope})); err != nil {
			t.Fatal(err)
		}
		return a.GetId()
	}
	answerNext := func() {
		d := node.nextDispatch()
		node.send(accepted(d.GetDispatchId()))
		node.send(result(d.GetDispatchId(), nodev1.DispatchOutcome_DISPATCH_OUTCOME_SUCCEEDED, 0, 0))
	}
	for _, tc := range []struct {
		scope agentsv1.ApprovalScope
		asks  int
	}{{agentsv1.ApprovalScope_APPROVAL_SCOPE_ONCE, 2}, {agentsv1.ApprovalScope_APPROVAL_SCOPE_RUN, 1}} {
		events := runEvents(t, b.testDaemon, b.owner, "asker", "twice")
		var asked []string
		for range tc.asks {
			asked = append(asked, approveNext(events, tc.scope))
			answerNext()
		}
		if tc.asks == 1 {
			answerNext()
		}
		run, _ := finished(t, events)
		if run.GetState() != agentsv1.RunState_RUN_STATE_SUCCEEDED {
			t.Fatalf("%v: run %v %q", tc.scope, run.GetState(), run.GetReason())
		}
		_, steps := getRun(t, b.testDaemon, run.GetId())
		calls := toolSteps(steps)
		if len(calls) != 2 || calls[0].GetOutcome() != agentsv1.ToolCallOutcome_TOOL_CALL_OUTCOME_SUCCEEDED ||
			calls[1].GetOutcome() != agentsv1.ToolCallOutcome_TOOL_CALL_OUTCOME_SUCCEEDED {
			t.Fatalf("%v: tool calls %v", tc.scope, calls)
		}
		want := []string{asked[0], asked[len(asked)-1]}
		if got := []string{calls[0].GetApprovalId(), calls[1].GetApprovalId()}; !slices.Equal(got, want) {
			t.Errorf("%v: the calls' approvals %q, want %q", tc.scope, got, want)
		}
		list, err := approvals.ListApprovals(t.Context(), connect.NewRequest(&agentsv1.ListApprovalsRequest{RunId: run.GetId()}))
		if err != nil || len(list.Msg.GetApprovals()) != tc.asks {
			t.Errorf("%v: the run's approvals %v %v, want %d", tc.scope, list, err, tc.asks)
		}
	}
}

// TestAskToolWaitsForAHumansDecision runs a tool whose policy is ask: the run waits,
// its pending approval streams with the exact input, nothing reaches the node until an
// admin approves it; then the call runs. A denial is told to the model with its reason,
// and the node never sees that call.
func TestAskToolWaitsForAHumansDecision(t *testing.T) {
	t.Parallel()
	b := startRuns(t, toolThenAnswer("shell_execute", `{"argv": ["uptime"]}`))
	dev := b.enroll(t, time.Hour)
	node, _ := attachNode(t, b.testDaemon, dev)
	b.createAgent(t, "asker", nil, &agentsv1.Tool{Capability: "shell.execute", Policy: agentsv1.ToolPolicy_TOOL_POLICY_ASK})
	approvals := agentsv1connect.NewApprovalServiceClient(b.h2, b.baseURL)

	events := runEvents(t, b.testDaemon, b.owner, "asker", "how long has it been up?")
	a := awaitApproval(t, events)
	if a.GetTool() != "shell_execute" || a.GetNodeId() != dev.deviceID || !jsonEqual(a.GetInputJson(), `{"argv":["uptime"]}`) ||
		a.GetState() != agentsv1.ApprovalState_APPROVAL_STATE_PENDING || a.GetAgentName() != "asker" {
		t.Fatalf("approval: %v", a)
	}
	run, _ := getRun(t, b.testDaemon, a.GetRunId())
	if run.GetState() != agentsv1.RunState_RUN_STATE_WAITING_APPROVAL {
		t.Errorf("run while waiting: %v", run.GetState())
	}
	if n := dispatchCount(t, b.testDaemon, dev.deviceID); n != 0 {
		t.Fatalf("%d dispatches before the approval", n)
	}
	if _, err := approvals.DecideApproval(t.Context(), connect.NewRequest(&agentsv1.DecideApprovalRequest{Id: a.GetId(), Approve: true})); err != nil {
		t.Fatal(err)
	}
	// As shell.execute answers: the output streamed, the exit code in the result. The
	// model is given both.
	d := node.nextDispatch()
	node.send(accepted(d.GetDispatchId()))
	node.send(output(d.GetDispatchId(), 0, "up 3 days\n"))
	node.send(result(d.GetDispatchId(), nodev1.DispatchOutcome_DISPATCH_OUTCOME_SUCCEEDED, 0, 10))
	if !jsonEqual(d.GetInputJson(), `{"argv":["uptime"]}`) {
		t.Errorf("dispatched input %s", d.GetInputJson())
	}
	run, _ = finished(t, events)
	if run.GetState() != agentsv1.RunState_RUN_STATE_SUCCEEDED || !strings.Contains(run.GetAnswer(), `"stdout":"up 3 days\n"`) ||
		!strings.Contains(run.GetAnswer(), `"exit_code":0`) {
		t.Errorf("approved run: %v", run)
	}
	_, steps := getRun(t, b.testDaemon, run.GetId())
	if calls := toolSteps(steps); len(calls) != 1 || calls[0].GetApprovalId() != a.GetId() || calls[0].GetDispatchId() != d.GetDispatchId() {
		t.Errorf("tool calls: %v", calls)
	}

	events = runEvents(t, b.testDaemon, b.owner, "asker", "and now?")
	a = awaitApproval(t, events)
	if _, err := approvals.DecideApproval(t.Context(), connect.NewRequest(&agentsv1.DecideApprovalRequest{Id: a.GetId(), Reason: "not during the freeze"})); err != nil {
		t.Fatal(err)
	}
	run, _ = finished(t, events)
	if run.GetState() != agentsv1.RunState_RUN_STATE_SUCCEEDED || !strings.Contains(run.GetAnswer(), "not during the freeze") {
		t.Errorf("denied run: %v", run)
	}
	_, steps = getRun(t, b.testDaemon, run.GetId())
	if calls := toolSteps(steps); len(calls) != 1 || calls[0].GetOutcome() != agentsv1.ToolCallOutcome_TOOL_CALL_OUTCOME_DENIED || calls[0].GetDispatchId() != "" {
		t.Errorf("denied tool calls: %v", calls)
	}
	if n := dispatchCount(t, b.testDaemon, dev.deviceID); n != 1 {
		t.Errorf("%d dispatches, want only the approved one", n)
	}
}
