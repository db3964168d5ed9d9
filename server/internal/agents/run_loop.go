package agents

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/palyra/palyra/gen/dbsqlc"
	agentsv1 "github.com/palyra/palyra/gen/go/palyra/agents/v1"
	"github.com/palyra/palyra/server/internal/access"
	"github.com/palyra/palyra/server/internal/approvals"
	"github.com/palyra/palyra/server/internal/audit"
	"github.com/palyra/palyra/server/internal/compat"
	"github.com/palyra/palyra/server/internal/dispatch"
	"github.com/palyra/palyra/server/internal/errdefs"
	"github.com/palyra/palyra/server/internal/labels"
	"github.com/palyra/palyra/server/internal/store"
)

// loop is one run's loop.
type loop struct {
	r         *Runs
	run       *agentsv1.Run
	spec      *agentsv1.AgentSpec
	principal *access.Principal
	event     func(*agentsv1.RunResponse)
	input     []*agentsv1.RunMessage

	seq int32
	// messages is the conversation sent to the model: system prompt, input, then the
	// model's turns and the tools' answers.
	messages []json.RawMessage
	// modelCalls, toolCalls and tokens count against the limits.
	modelCalls, toolCalls int
	tokens                int64
	promptTokens          int64
	completionTokens      int64
	// approvedForRun are the tools a human approved for the rest of the run, with the
	// approval that did.
	approvedForRun map[string]string
}

// runEnd is how a loop ended.
type runEnd struct {
	state, reason, answer string
}

// runLoop runs the loop and ends the run.
func (l *loop) runLoop(ctx context.Context) {
	end := l.iterate(ctx)
	if ctx.Err() != nil {
		switch cause := context.Cause(ctx); {
		case errors.Is(cause, errCancelled):
			reason := "cancelled"
			if row, err := l.r.opts.Store.Q().GetAgentRun(context.WithoutCancel(ctx), l.run.Id); err == nil && row.Reason != "" {
				reason = row.Reason
			}
			end = runEnd{state: stateCancelled, reason: reason}
		case errors.Is(cause, errStopped):
			end = runEnd{state: stateFailed, reason: "palyrad replica " + l.r.opts.ReplicaID + " stopped mid-run"}
		case errors.Is(cause, context.DeadlineExceeded):
			end = runEnd{state: stateFailed, reason: "deadline"}
		}
	}
	run, err := l.r.finish(ctx, l.run.Id, l.principal.ID(), end.state, end.reason, end.answer)
	if err != nil {
		l.r.log.Error("agents: a run's end not recorded", "run_id", l.run.Id, "err", err)
		run = l.run
		run.State = runStates[end.state]
		run.Reason = end.reason
	}
	l.event(&agentsv1.RunResponse{Event: &agentsv1.RunResponse_Finished{Finished: run}})
}

// iterate calls the model and runs its tool calls until it answers or a limit ends the
// run.
func (l *loop) iterate(ctx context.Context) runEnd {
	if p := l.spec.GetSystemPrompt(); p != "" {
		l.addMessage(map[string]any{"role": "system", "content": p})
	}
	for _, m := range l.input {
		l.addMessage(map[string]any{"role": m.GetRole(), "content": m.GetContent()})
	}
	tools, err := l.tools(ctx)
	if err != nil {
		return runEnd{state: stateFailed, reason: "the tools could not be offered: " + err.Error()}
	}
	limits := l.spec.GetLimits()
	for {
		if ctx.Err() != nil {
			return runEnd{state: stateFailed, reason: context.Cause(ctx).Error()}
		}
		if l.modelCalls >= int(limits.GetMaxSteps()) {
			return runEnd{state: stateFailed, reason: "max_steps"}
		}
		if err := l.stillRunning(ctx); err != nil {
			return runEnd{state: stateFailed, reason: err.Error()}
		}
		turn, err := l.callModel(ctx, tools)
		if err != nil {
			if ctx.Err() != nil {
				return runEnd{state: stateFailed, reason: context.Cause(ctx).Error()}
			}
			if e := (*errdefs.Error)(nil); errors.As(err, &e) && e.Reason == "model_not_found" {
				return runEnd{state: stateFailed, reason: fmt.Sprintf("the agent's model %q is not served now (palyra compat models lists those that are)", l.spec.GetModel())}
			}
			return runEnd{state: stateFailed, reason: "the model call failed: " + err.Error()}
		}
		if max := limits.GetMaxTokens(); max > 0 && uint64(l.tokens) > max {
			return runEnd{state: stateFailed, reason: "max_tokens"}
		}
		if len(turn.toolCalls) == 0 {
			if err := l.answer(ctx, turn.text); err != nil {
				return runEnd{state: stateFailed, reason: err.Error()}
			}
			return runEnd{state: stateSucceeded, answer: turn.text}
		}
		l.addMessage(turn.message())
		for _, call := range turn.toolCalls {
			if l.toolCalls >= int(limits.GetMaxToolCalls()) {
				return runEnd{state: stateFailed, reason: "max_tool_calls"}
			}
			l.toolCalls++
			content, err := l.toolCall(ctx, call)
			if err != nil {
				if ctx.Err() != nil {
					return runEnd{state: stateFailed, reason: context.Cause(ctx).Error()}
				}
				return runEnd{state: stateFailed, reason: err.Error()}
			}
			l.addMessage(map[string]any{"role": "tool", "tool_call_id": call.ID, "content": content})
		}
	}
}

// addMessage appends a message to the conversation.
func (l *loop) addMessage(m map[string]any) {
	b, _ := json.Marshal(m)
	l.messages = append(l.messages, b)
}

// stillRunning refuses to go on with a run that has ended (a reaper that took this
// replica for dead, say): nothing of it runs again.
func (l *loop) stillRunning(ctx context.Context) error {
	_, err := l.r.opts.Store.Q().SetAgentRunState(ctx, dbsqlc.SetAgentRunStateParams{State: stateRunning, ID: l.run.Id})
	if errors.Is(err, store.ErrNotFound) {
		return errors.New("the run ended elsewhere")
	}
	return err
}

// nextStep stores a new step.
func (l *loop) nextStep(ctx context.Context, p dbsqlc.InsertAgentRunStepParams) (dbsqlc.AgentRunStep, error) {
	l.seq++
	p.RunID, p.Seq, p.StartedAt = l.run.Id, l.seq, l.r.opts.Now()
	s, err := l.r.opts.Store.Q().InsertAgentRunStep(ctx, p)
	if err != nil {
		return s, fmt.Errorf("agents: store a step of run %s: %w", l.run.Id, err)
	}
	return s, nil
}

// saveStep writes a step as it stands; done ends it.
func (l *loop) saveStep(ctx context.Context, s *dbsqlc.AgentRunStep, done bool) error {
	if done {
		now := l.r.opts.Now()
		s.FinishedAt = &now
	}
	out, err := l.r.opts.Store.Q().UpdateAgentRunStep(context.WithoutCancel(ctx), updateParams(*s))
	if err != nil {
		return fmt.Errorf("agents: store a step of run %s: %w", l.run.Id, err)
	}
	*s = out
	return nil
}

// tool is a function offered to the model.
type offeredTool struct {
	Type     string         `json:"type"`
	Function map[string]any `json:"function"`
}

// tools makes the functions offered to the model: each tool's parameters are its
// capability's input schema as a node the tool allows announces it (any object when
// none does now), with an optional node_id when the tool allows several nodes.
func (l *loop) tools(ctx context.Context) ([]offeredTool, error) {
	var out []offeredTool
	for _, t := range l.spec.GetTools() {
		nodes, err := l.allowedNodes(ctx, t)
		if err != nil {
			return nil, err
		}
		schema := map[string]any{"type": "object"}
		desc := t.GetDescription()
		for _, n := range nodes {
			c := capabilityOf(n, t.GetCapability())
			if c.InputSchema != "" {
				var s map[string]any
				if json.Unmarshal([]byte(c.InputSchema), &s) == nil {
					schema = s
				}
			}
			if desc == "" {
				desc = c.Description
			}
			break
		}
		if t.GetBrowserProfile() != "" {
			withoutProfile(schema)
		}
		if t.GetNodeId() == "" {
			props, _ := schema["properties"].(map[string]any)
			if _, taken := props["node_id"]; !taken {
				if props == nil {
					props = map[string]any{}
				}
				props["node_id"] = map[string]any{"type": "string", "description": "the id of the node to run on; omit it to let palyrad choose"}
				schema["properties"] = props
			}
		}
		if desc == "" {
			desc = "Runs " + t.GetCapability() + " on a node."
		}
		out = append(out, offeredTool{Type: "function", Function: map[string]any{"name": t.GetName(), "description": desc, "parameters": schema}})
	}
	return out, nil
}

// withoutProfile takes "profile" out of a browser capability's input schema: the tool
// fixes it.
func withoutProfile(schema map[string]any) {
	if props, ok := schema["properties"].(map[string]any); ok {
		delete(props, "profile")
	}
	if req, ok := schema["required"].([]any); ok {
		schema["required"] = slices.DeleteFunc(req, func(v any) bool { return v == "profile" })
	}
}

// capabilityOf is node n's capability name.
func capabilityOf(n dispatch.Node, name string) dispatch.Capability {
	for _, c := range n.Capabilities {
		if c.Name == name {
			return c
		}
	}
	return dispatch.Capability{}
}

// allowedNodes are the nodes tool t may run on that offer its capability (online or
// not, never revoked).
func (l *loop) allowedNodes(ctx context.Context, t *agentsv1.Tool) ([]dispatch.Node, error) {
	nodes, err := l.r.opts.Nodes.NodesOffering(ctx, t.GetCapability())
	if err != nil {
		return nil, err
	}
	sel, err := labels.Parse(t.GetNodeSelector())
	if err != nil {
		return nil, errdefs.New(errdefs.FailedPrecondition, "tool %s: its node selector does not parse: %v", t.GetName(), err)
	}
	var out []dispatch.Node
	for _, n := range nodes {
		if n.Revoked {
			continue
		}
		if id := t.GetNodeId(); id != "" && n.ID != id {
			continue
		}
		if t.GetNodeId() == "" && !sel.Matches(NodeLabels(n)) {
			continue
		}
		out = append(out, n)
	}
	return out, nil
}

// modelTurn is what the model answered: text, or tool calls.
type modelTurn struct {
	text      string
	toolCalls []toolCall
}

// toolCall is a call the model made.
type toolCall struct {
	ID        string
	Name      string
	Arguments string
}

// message is the turn as the assistant message the conversation keeps.
func (t modelTurn) message() map[string]any {
	calls := make([]any, len(t.toolCalls))
	for i, c := range t.toolCalls {
		calls[i] = map[string]any{"id": c.ID, "type": "function", "function": map[string]any{"name": c.Name, "arguments": c.Arguments}}
	}
	m := map[string]any{"role": "assistant", "tool_calls": calls, "content": nil}
	if t.text != "" {
		m["content"] = t.text
	}
	return m
}

// callModel makes a model call, streamed (its text reported as it comes), and stores
// it as a step.
func (l *loop) callModel(ctx context.Context, tools []offeredTool) (modelTurn, error) {
	step, err := l.nextStep(ctx, dbsqlc.InsertAgentRunStepParams{Kind: kindModelCall, Model: l.spec.GetModel()})
	if err != nil {
		return modelTurn{}, err
	}
	l.modelCalls++
	body := map[string]any{"model": l.spec.GetModel(), "messages": l.messages, "stream": true}
	if len(tools) > 0 {
		body["tools"] = tools
	}
	raw, err := json.Marshal(body)
	if err != nil {
		return modelTurn{}, err
	}
	req, err := compat.ParseChatRequest(raw)
	if err != nil {
		return modelTurn{}, err
	}
	var acc chunkAccumulator
	c, err := l.r.opts.Models.Call(ctx, req, func(chunk []byte) error {
		text := acc.add(chunk)
		if text != "" {
			l.event(&agentsv1.RunResponse{Event: &agentsv1.RunResponse_TextDelta{TextDelta: &agentsv1.TextDelta{Seq: step.Seq, Text: text}}})
		}
		return nil
	})
	var usage compat.Usage
	if c != nil && c.Usage != nil {
		usage = *c.Usage
	}
	step.PromptTokens, step.CompletionTokens, step.FinishReason = max(usage.PromptTokens, 0), max(usage.CompletionTokens, 0), acc.finish
	if err != nil {
		step.Error = err.Error()
	}
	l.tokens += step.PromptTokens + step.CompletionTokens
	if _, cerr := l.r.opts.Store.Q().CountAgentRunCall(context.WithoutCancel(ctx), dbsqlc.CountAgentRunCallParams{
		PromptTokens: step.PromptTokens, CompletionTokens: step.CompletionTokens, ModelCalls: 1, ID: l.run.Id,
	}); cerr != nil {
		return modelTurn{}, cerr
	}
	if serr := l.saveStep(ctx, &step, true); serr != nil {
		return modelTurn{}, serr
	}
	if err != nil {
		return modelTurn{}, err
	}
	return acc.turn(), nil
}

// chunkAccumulator puts a streamed completion together.
type chunkAccumulator struct {
	text   strings.Builder
	calls  []toolCall
	finish string
}

// add takes a chunk and returns its text.
func (a *chunkAccumulator) add(chunk []byte) string {
	var c struct {
		Choices []struct {
			Delta struct {
				Content   string `json:"content"`
				ToolCalls []struct {
					Index    int    `json:"index"`
					ID       string `json:"id"`
					Function struct {
						Name      string `json:"name"`
						Arguments string `json:"arguments"`
					} `json:"function"`
				} `json:"tool_calls"`
			} `json:"delta"`
			FinishReason *string `json:"finish_reason"`
		} `json:"choices"`
	}
	if json.Unmarshal(chunk, &c) != nil || len(c.Choices) == 0 {
		return ""
	}
	ch := c.Choices[0]
	if ch.FinishReason != nil {
		a.finish = *ch.FinishReason
	}
	for _, tc := range ch.Delta.ToolCalls {
		for len(a.calls) <= tc.Index {
			a.calls = append(a.calls, toolCall{})
		}
		call := &a.calls[tc.Index]
		if tc.ID != "" {
			call.ID = tc.ID
		}
		call.Name += tc.Function.Name
		call.Arguments += tc.Function.Arguments
	}
	a.text.WriteString(ch.Delta.Content)
	return ch.Delta.Content
}

// turn is what the chunks said.
func (a *chunkAccumulator) turn() modelTurn {
	t := modelTurn{text: a.text.String()}
	for i, c := range a.calls {
		if c.Name == "" && c.Arguments == "" {
			continue
		}
		if c.ID == "" {
			c.ID = fmt.Sprintf("call_%d", i)
		}
		t.toolCalls = append(t.toolCalls, c)
	}
	return t
}

// answer stores the answer step.
func (l *loop) answer(ctx context.Context, text string) error {
	s, err := l.nextStep(ctx, dbsqlc.InsertAgentRunStepParams{Kind: kindAnswer})
	if err != nil {
		return err
	}
	s.Answer = text
	return l.saveStep(ctx, &s, true)
}

// refusal is a tool call that did not run, with what the model is told.
type refusal struct {
	outcome, message string
}

func (r *refusal) Error() string { return r.message }

// refuse is a refusal.
func refuse(outcome, format string, args ...any) *refusal {
	return &refusal{outcome: outcome, message: fmt.Sprintf(format, args...)}
}

// toolCall runs one tool call as a step and returns the tool message's content; an
// error ends the run.
func (l *loop) toolCall(ctx context.Context, call toolCall) (string, error) {
	step, err := l.nextStep(ctx, dbsqlc.InsertAgentRunStepParams{Kind: kindToolCall, Tool: call.Name, ToolCallID: call.ID, Input: call.Arguments})
	if err != nil {
		return "", err
	}
	if _, err := l.r.opts.Store.Q().CountAgentRunCall(ctx, dbsqlc.CountAgentRunCallParams{ToolCalls: 1, ID: l.run.Id}); err != nil {
		return "", err
	}
	l.event(&agentsv1.RunResponse{Event: &agentsv1.RunResponse_ToolCallStarted{ToolCallStarted: stepOf(step)}})
	content, ferr := l.runTool(ctx, &step, call)
	var ref *refusal
	switch {
	case errors.As(ferr, &ref):
		step.Outcome, step.Error = ref.outcome, ref.message
		content = mustJSON(map[string]any{"error": ref.message})
	case ferr != nil && ctx.Err() != nil:
		step.Outcome, step.Error = "cancelled", "the run ended: "+context.Cause(ctx).Error()
	case ferr != nil:
		step.Outcome, step.Error = "failed", ferr.Error()
	}
	if err := l.saveStep(ctx, &step, true); err != nil {
		return "", err
	}
	l.event(&agentsv1.RunResponse{Event: &agentsv1.RunResponse_ToolCallFinished{ToolCallFinished: stepOf(step)}})
	if ferr != nil && ref == nil {
		return "", ferr
	}
	return content, nil
}

// runTool checks a call and dispatches it, recording on step what it chose; a refusal
// is a *refusal, told to the model.
func (l *loop) runTool(ctx context.Context, step *dbsqlc.AgentRunStep, call toolCall) (string, error) {
	i := slices.IndexFunc(l.spec.GetTools(), func(t *agentsv1.Tool) bool { return t.GetName() == call.Name })
	if i < 0 {
		names := make([]string, len(l.spec.GetTools()))
		for j, t := range l.spec.GetTools() {
			names[j] = t.GetName()
		}
		return "", refuse("refused", "there is no tool %q: the tools are %s", call.Name, strings.Join(names, ", "))
	}
	t := l.spec.GetTools()[i]
	step.Capability = t.GetCapability()
	if _, err := l.r.opts.Store.Q().UpdateAgentRunStep(ctx, updateParams(*step)); err != nil {
		return "", err
	}
	if t.GetPolicy() == agentsv1.ToolPolicy_TOOL_POLICY_DENY {
		return "", refuse("denied", "the tool %s is denied by the agent's policy: it never runs", t.GetName())
	}
	args, askedNode, err := parseArguments(call.Arguments, t.GetBrowserProfile())
	if err != nil {
		return "", err
	}
	node, err := l.chooseNode(ctx, t, askedNode)
	if err != nil {
		return "", err
	}
	step.NodeID = node.ID
	if err := l.saveStep(ctx, step, false); err != nil {
		return "", err
	}
	if err := l.r.opts.Nodes.CheckInput(ctx, node.ID, t.GetCapability(), string(args)); err != nil {
		if errdefs.KindOf(err) == errdefs.Invalid || errdefs.KindOf(err) == errdefs.FailedPrecondition {
			return "", refuse("refused", "%v", err)
		}
		return "", err
	}
	if t.GetPolicy() == agentsv1.ToolPolicy_TOOL_POLICY_ASK {
		if id, ok := l.approvedForRun[t.GetName()]; ok {
			step.ApprovalID = &id // the call runs under that approval
		} else if err := l.ask(ctx, step, t, node, args); err != nil {
			return "", err
		}
	}
	return l.dispatch(ctx, step, t, node, args)
}

// parseArguments reads a call's arguments: a JSON object, whose node_id member, when a
// string, names the node the model asks for and is taken out. A browser.* tool's
// profile, when not empty, is set as the input's "profile"; arguments that name one
// are refused: the model cannot switch identities.
func parseArguments(raw, profile string) (json.RawMessage, string, error) {
	if strings.TrimSpace(raw) == "" {
		raw = "{}"
	}
	var fields map[string]json.RawMessage
	dec := json.NewDecoder(strings.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&fields); err != nil || fields == nil {
		return nil, "", refuse("refused", "the arguments are not a JSON object")
	}
	var node string
	if v, ok := fields["node_id"]; ok {
		if json.Unmarshal(v, &node) != nil {
			return nil, "", refuse("refused", "node_id must be a string")
		}
		delete(fields, "node_id")
	}
	if profile != "" {
		if _, ok := fields["profile"]; ok {
			return nil, "", refuse("refused", "this tool browses with the browser profile the agent fixed for it: give no \"profile\"")
		}
		fields["profile"] = json.RawMessage(mustJSON(profile))
	}
	out, err := json.Marshal(fields)
	if err != nil {
		return nil, "", err
	}
	return out, node, nil
}

// chooseNode picks the node a call runs on: the one the model asked for if the tool
// allows it, else the online node the tool allows with the fewest dispatches of the
// capability in flight (one at random among equals).
func (l *loop) chooseNode(ctx context.Context, t *agentsv1.Tool, asked string) (dispatch.Node, error) {
	nodes, err := l.allowedNodes(ctx, t)
	if err != nil {
		return dispatch.Node{}, err
	}
	if asked != "" {
		i := slices.IndexFunc(nodes, func(n dispatch.Node) bool { return n.ID == asked })
		if i < 0 {
			return dispatch.Node{}, refuse("refused", "the tool %s may not run on node %s: it runs only on %s", t.GetName(), asked, targetText(t))
		}
		nodes = nodes[i : i+1]
	}
	var online []dispatch.Node
	for _, n := range nodes {
		if n.Presence == dispatch.PresenceOnline && capabilityOf(n, t.GetCapability()).Available {
			online = append(online, n)
		}
	}
	switch {
	case len(online) == 0 && asked != "":
		return dispatch.Node{}, refuse("refused", "node %s is not online with %s now", asked, t.GetCapability())
	case len(online) == 0:
		return dispatch.Node{}, refuse("refused", "no online node offers %s on %s now", t.GetCapability(), targetText(t))
	case len(online) == 1:
		return online[0], nil
	}
	ids := make([]string, len(online))
	for i, n := range online {
		ids[i] = n.ID
	}
	counts, err := l.r.opts.Nodes.InFlight(ctx, ids, []string{t.GetCapability()})
	if err != nil {
		return dispatch.Node{}, err
	}
	var least []dispatch.Node
	for _, n := range online {
		switch {
		case len(least) == 0 || counts[n.ID] < counts[least[0].ID]:
			least = []dispatch.Node{n}
		case counts[n.ID] == counts[least[0].ID]:
			least = append(least, n)
		}
	}
	return least[rand.IntN(len(least))], nil
}

// targetText names the nodes a tool allows.
func targetText(t *agentsv1.Tool) string {
	switch {
	case t.GetNodeId() != "":
		return "node " + t.GetNodeId()
	case t.GetNodeSelector() != "":
		return "the nodes matching " + fmt.Sprintf("%q", t.GetNodeSelector())
	}
	return "any node"
}

// ask waits for a human's decision on a call; a denial or an expiry is a refusal.
func (l *loop) ask(ctx context.Context, step *dbsqlc.AgentRunStep, t *agentsv1.Tool, node dispatch.Node, args json.RawMessage) error {
	if l.r.opts.Approvals == nil {
		return refuse("refused", "the tool %s needs a human's approval, and approvals are not available on this palyrad", t.GetName())
	}
	if _, err := l.r.opts.Store.Q().SetAgentRunState(ctx, dbsqlc.SetAgentRunStateParams{State: stateWaiting, ID: l.run.Id}); err != nil {
		return err
	}
	a, err := l.r.opts.Approvals.Ask(ctx, approvals.Question{
		RunID: l.run.Id, StepSeq: step.Seq, AgentID: l.run.AgentId, AgentName: l.run.AgentName, Tool: t.GetName(),
		Capability: t.GetCapability(), NodeID: node.ID, Input: args, RequestedBy: l.principal.ID(),
	}, func(a *agentsv1.Approval) {
		id := a.GetId()
		step.ApprovalID = &id
		_ = l.saveStep(ctx, step, false)
		l.event(&agentsv1.RunResponse{Event: &agentsv1.RunResponse_ApprovalPending{ApprovalPending: a}})
	})
	if err != nil {
		return err
	}
	if id := a.GetId(); id != "" {
		step.ApprovalID = &id
	}
	if _, err := l.r.opts.Store.Q().SetAgentRunState(ctx, dbsqlc.SetAgentRunStateParams{State: stateRunning, ID: l.run.Id}); err != nil {
		return err
	}
	switch a.GetState() {
	case agentsv1.ApprovalState_APPROVAL_STATE_APPROVED:
		if a.GetScope() == agentsv1.ApprovalScope_APPROVAL_SCOPE_RUN {
			if l.approvedForRun == nil {
				l.approvedForRun = map[string]string{}
			}
			l.approvedForRun[t.GetName()] = a.GetId()
		}
		return nil
	case agentsv1.ApprovalState_APPROVAL_STATE_EXPIRED:
		return refuse("expired", "the approval expired: no one decided on the call in time, so it did not run")
	}
	msg := "a human denied the call"
	if a.GetReason() != "" {
		msg += ": " + a.GetReason()
	}
	return refuse("denied", "%s", msg)
}

// dispatch runs the call on the node, durably, once (idempotency key run:<id>:<seq>),
// and returns its result. A dispatch still running when the run ends is cancelled.
func (l *loop) dispatch(ctx context.Context, step *dbsqlc.AgentRunStep, t *agentsv1.Tool, node dispatch.Node, args json.RawMessage) (string, error) {
	if err := l.stillRunning(ctx); err != nil {
		return "", err
	}
	timeout := time.Until(l.run.GetDeadline().AsTime())
	if timeout <= 0 {
		return "", context.DeadlineExceeded
	}
	actx, call := l.auditCall(ctx, t, step)
	named := func(id string) {
		step.DispatchID = &id
		audit.SetTarget(actx, fmt.Sprintf("run:%s step:%d dispatch:%s node:%s", l.run.Id, step.Seq, id, node.ID))
		_ = l.saveStep(ctx, step, false)
	}
	d, err := l.r.opts.Nodes.Execute(actx, dispatch.Request{
		NodeID: node.ID, Capability: t.GetCapability(), Input: string(args), Timeout: timeout,
		MaxOutputBytes: maxToolOutput, IdempotencyKey: fmt.Sprintf("run:%s:%d", l.run.Id, step.Seq), CreatedBy: l.principal.ID(),
	}, named)
	l.endAuditCall(ctx, call, err)
	if err != nil {
		if step.DispatchID != nil && ctx.Err() != nil {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), endTimeout)
			defer cancel()
			if _, cerr := l.r.opts.Nodes.Cancel(cctx, *step.DispatchID, "agent run "+l.run.Id+": "+context.Cause(ctx).Error()); cerr != nil && errdefs.KindOf(cerr) != errdefs.FailedPrecondition {
				l.r.log.Warn("agents: a run's dispatch not cancelled", "run_id", l.run.Id, "dispatch_id", *step.DispatchID, "err", cerr)
			}
		}
		if ctx.Err() == nil && (errdefs.KindOf(err) == errdefs.Invalid || errdefs.KindOf(err) == errdefs.FailedPrecondition) {
			return "", refuse("refused", "%v", err)
		}
		return "", err
	}
	switch d.State {
	case dispatch.StateSucceeded:
		res := d.Result
		if !json.Valid([]byte(res)) || res == "" {
			res = mustJSON(map[string]any{"output": res})
		}
		var buf bytes.Buffer
		if json.Compact(&buf, []byte(res)) == nil {
			res = buf.String()
		}
		step.Outcome, step.Result = "succeeded", []byte(res)
		return l.withOutput(ctx, d, res), nil
	case dispatch.StateCancelled:
		return "", refuse("cancelled", "the dispatch %s was cancelled: %s", d.ID, d.CancelReason)
	}
	msg := d.Error
	if msg == "" {
		msg = string(d.State)
	}
	if d.Result != "" && json.Valid([]byte(d.Result)) {
		return "", refuse("failed", "the dispatch %s %s: %s (result: %s)", d.ID, d.State, msg, l.withOutput(ctx, d, d.Result))
	}
	if d.OutputStored > 0 {
		return "", refuse("failed", "the dispatch %s %s: %s (%s)", d.ID, d.State, msg, l.withOutput(ctx, d, "{}"))
	}
	return "", refuse("failed", "the dispatch %s %s: %s", d.ID, d.State, msg)
}

// withOutput gives the model a dispatch's output beside its result (a JSON object, or
// another JSON value put under "result"): "stdout" and "stderr", the last
// modelToolOutput bytes of them together, and "output_truncated" when some was left
// out. Without output, or when it cannot be read, and for a browser dispatch, whose
// output is a screenshot, the result is returned as it is.
func (l *loop) withOutput(ctx context.Context, d dispatch.Dispatch, res string) string {
	// A browser dispatch's output is a screenshot, which the result locates: no text
	// for the model.
	if d.OutputStored == 0 || dispatch.IsBrowser(d.Capability) {
		return res
	}
	fields := map[string]json.RawMessage{}
	if json.Unmarshal([]byte(res), &fields) != nil || fields == nil {
		fields = map[string]json.RawMessage{"result": json.RawMessage(res)}
	}
	from := max(0, d.OutputStored-modelToolOutput)
	streams := map[string]*strings.Builder{}
	for at := from; at < d.OutputStored; {
		chunks, next, err := l.r.opts.Nodes.Output(ctx, d.ID, at, d.OutputStored, modelToolOutput)
		if err != nil || next <= at {
			l.r.log.Warn("agents: a tool call's output not read", "run_id", l.run.Id, "dispatch_id", d.ID, "err", err)
			return res
		}
		for _, c := range chunks {
			if streams[c.Stream] == nil {
				streams[c.Stream] = &strings.Builder{}
			}
			streams[c.Stream].Write(c.Data)
		}
		at = next
	}
	for name, b := range streams {
		fields[name] = json.RawMessage(mustJSON(strings.ToValidUTF8(b.String(), "\uFFFD")))
	}
	if from > 0 || d.OutputTruncated {
		fields["output_truncated"] = json.RawMessage("true")
	}
	return mustJSON(fields)
}

// auditCall begins the audit record of a call's dispatch: its outbox row commits with
// the dispatch.
func (l *loop) auditCall(ctx context.Context, t *agentsv1.Tool, step *dbsqlc.AgentRunStep) (context.Context, *audit.Call) {
	if l.r.opts.Audit == nil {
		return ctx, nil
	}
	ctx, call := l.r.opts.Audit.Begin(ctx, audit.Event{Principal: l.principal.ID(), Procedure: "agents.run.dispatch"})
	audit.SetTarget(ctx, fmt.Sprintf("run:%s step:%d tool:%s", l.run.Id, step.Seq, t.GetName()))
	return ctx, call
}

// endAuditCall ends the audit record of a dispatch.
func (l *loop) endAuditCall(ctx context.Context, call *audit.Call, err error) {
	if call == nil {
		return
	}
	if !call.Wrote() {
		call.Abandon()
		return
	}
	outcome, code := audit.Success, "ok"
	if err != nil {
		outcome, code = audit.Failure, strings.ToLower(errdefs.KindOf(err).String())
	}
	if eerr := call.End(context.WithoutCancel(ctx), outcome, code); eerr != nil && !errors.Is(eerr, audit.ErrDeferred) {
		l.r.log.Warn("agents: a dispatch's audit event not appended", "run_id", l.run.Id, "err", eerr)
	}
}

// mustJSON marshals v, which cannot fail for the maps given.
func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
