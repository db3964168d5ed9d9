package compat

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/palyra/palyra/server/internal/apiserver"
	"github.com/palyra/palyra/server/internal/audit"
	"github.com/palyra/palyra/server/internal/errdefs"
)

// Provider serves chat completions for the models routed to it: palyra-echo, an
// OpenAI-compatible upstream, or a node that hosts the model (node.go). model is the
// provider's own id of the model (an alias resolved).
type Provider interface {
	// Chat answers req in one completion.
	Chat(ctx context.Context, req *ChatRequest, model string) (*Completion, error)
	// StreamChat answers req as a stream of chunks. An error before the stream starts
	// (a refused request) is returned here; the caller closes the stream.
	StreamChat(ctx context.Context, req *ChatRequest, model string) (ChunkStream, error)
}

// ChunkStream is a streamed completion: the chat.completion.chunk objects, as JSON, as
// they arrive.
type ChunkStream interface {
	// Next returns the next chunk, io.EOF after the last.
	Next() ([]byte, error)
	// Close ends the stream, cancelling what is still running.
	Close() error
}

// Completion is a chat.completion object, as JSON, and its token counts.
type Completion struct {
	Body  []byte
	Usage *Usage
}

// Usage counts the tokens of a completion, as OpenAI's usage object does.
type Usage struct {
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
	TotalTokens      int64 `json:"total_tokens"`
}

// roles are the message roles OpenAI's chat completions take.
var roles = map[string]bool{"system": true, "developer": true, "user": true, "assistant": true, "tool": true, "function": true}

// ChatRequest is a chat completion request: the JSON the client sent, field by field,
// and what palyrad reads of it.
type ChatRequest struct {
	// Model is the model the client asked for.
	Model string
	// Stream asks for chunks (stream: true).
	Stream bool
	// IncludeUsage asks for the usage chunk (stream_options.include_usage).
	IncludeUsage bool
	// Messages are the messages' roles and text (the text parts of array contents).
	Messages []Message
	// fields are the request's fields as sent.
	fields map[string]json.RawMessage
}

// Message is what palyrad reads of a message.
type Message struct {
	Role, Text string
}

// invalid refuses a request for one field, named as OpenAI names it ("messages[0].role").
func invalid(field, format string, args ...any) error {
	return errdefs.InvalidField(field, format, args...)
}

// ParseChatRequest reads and checks the JSON body of POST /v1/chat/completions.
func ParseChatRequest(body []byte) (*ChatRequest, error) {
	fields, err := parseObject(body)
	if err != nil {
		return nil, err
	}
	return newChatRequest(fields)
}

// parseObject reads a request body that must be one JSON object.
func parseObject(body []byte) (map[string]json.RawMessage, error) {
	var fields map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&fields); err != nil || fields == nil || dec.More() {
		return nil, errdefs.New(errdefs.Invalid, "the request body is not a JSON object: %s", jsonProblem(err))
	}
	return fields, nil
}

// jsonProblem describes a JSON syntax error without echoing the input.
func jsonProblem(err error) string {
	var se *json.SyntaxError
	switch {
	case err == nil:
		return "expected one object"
	case errors.As(err, &se):
		return fmt.Sprintf("invalid JSON at byte %d", se.Offset)
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return "the body ends early"
	}
	return "expected an object"
}

// newChatRequest checks the fields of a request.
func newChatRequest(fields map[string]json.RawMessage) (*ChatRequest, error) {
	r := &ChatRequest{fields: fields}
	isNull := func(raw json.RawMessage) bool { return raw == nil || string(raw) == "null" }
	if err := json.Unmarshal(fields["model"], &r.Model); err != nil || r.Model == "" {
		return nil, invalid("model", "must name a model, as a string: GET /v1/models lists them")
	}
	if raw := fields["stream"]; !isNull(raw) {
		if err := json.Unmarshal(raw, &r.Stream); err != nil {
			return nil, invalid("stream", "must be true or false")
		}
	}
	if raw := fields["stream_options"]; !isNull(raw) {
		var so struct {
			IncludeUsage *bool `json:"include_usage"`
		}
		if err := json.Unmarshal(raw, &so); err != nil {
			return nil, invalid("stream_options", "must be an object, e.g. {\"include_usage\": true}")
		}
		if !r.Stream {
			return nil, invalid("stream_options", "is only allowed with stream: true")
		}
		r.IncludeUsage = so.IncludeUsage != nil && *so.IncludeUsage
	}
	if raw := fields["n"]; !isNull(raw) {
		var n float64
		if err := json.Unmarshal(raw, &n); err != nil || n != 1 {
			return nil, invalid("n", "must be 1: palyrad answers one choice per request (send several requests for several answers)")
		}
	}
	var msgs []json.RawMessage
	if err := json.Unmarshal(fields["messages"], &msgs); err != nil {
		return nil, invalid("messages", "must be an array of messages")
	}
	if len(msgs) == 0 {
		return nil, invalid("messages", "must hold at least one message")
	}
	for i, raw := range msgs {
		field := "messages[" + strconv.Itoa(i) + "]"
		var m struct {
			Role    string          `json:"role"`
			Content json.RawMessage `json:"content"`
		}
		if err := json.Unmarshal(raw, &m); err != nil {
			return nil, invalid(field, "must be an object with a role and a content")
		}
		if !roles[m.Role] {
			return nil, invalid(field+".role", "%s is not a role: use system, developer, user, assistant or tool", quote(m.Role))
		}
		text, ok := contentText(m.Content)
		if !ok {
			return nil, invalid(field+".content", "must be a string, an array of content parts, or null")
		}
		r.Messages = append(r.Messages, Message{Role: m.Role, Text: text})
	}
	return r, nil
}

// contentText returns the text of a message's content: the string, or its text parts
// joined; ok is false for content of another type.
func contentText(raw json.RawMessage) (string, bool) {
	if raw == nil || string(raw) == "null" {
		return "", true
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, true
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if json.Unmarshal(raw, &parts) != nil {
		return "", false
	}
	var b strings.Builder
	for _, p := range parts {
		if p.Type == "text" {
			b.WriteString(p.Text)
		}
	}
	return b.String(), true
}

// quote quotes a string the client sent, at most 128 bytes of it.
func quote(s string) string {
	if len(s) > 128 {
		s = s[:128] + "..."
	}
	return strconv.Quote(s)
}

// withModel returns a copy of a request's fields with model set to the provider's id.
func withModel(fields map[string]json.RawMessage, model string) (map[string]json.RawMessage, error) {
	out := make(map[string]json.RawMessage, len(fields)+1)
	for k, v := range fields {
		out[k] = v
	}
	m, err := json.Marshal(model)
	if err != nil {
		return nil, err
	}
	out["model"] = m
	return out, nil
}

// upstreamBody is the request as an upstream receives it: the client's fields, model
// set to the provider's id, and, when streaming, usage asked for.
func (r *ChatRequest) upstreamBody(model string) ([]byte, error) {
	fields, err := withModel(r.fields, model)
	if err != nil {
		return nil, err
	}
	if r.Stream {
		var so map[string]json.RawMessage
		_ = json.Unmarshal(fields["stream_options"], &so)
		if so == nil {
			so = map[string]json.RawMessage{}
		}
		so["include_usage"] = json.RawMessage("true")
		if fields["stream_options"], err = json.Marshal(so); err != nil {
			return nil, err
		}
	}
	return json.Marshal(fields)
}

// lastUserText is the text of the last user message, "" when there is none.
func (r *ChatRequest) lastUserText() string {
	for i := len(r.Messages) - 1; i >= 0; i-- {
		if r.Messages[i].Role == "user" {
			return r.Messages[i].Text
		}
	}
	return ""
}

// route is where a model's requests go.
type route struct {
	provider Provider
	// name is the provider's name: "palyra", or compat.providers.<name>.
	name string
	// model is the provider's id of the model.
	model string
	// node is the id of the node that serves the call; "" for other providers.
	node string
	// agent is true for an agent's model, whose run records its model calls' usage.
	agent bool
}

// route finds the provider of model: palyra-echo when compat.models lists it, else the
// first provider (by name) with a base URL that serves it, else an online node that
// serves it under capability (llmChat or llmEmbed: nodeRoute). A model compat.models
// lists that no one serves is Unavailable.
func (h *Handler) route(ctx context.Context, model, capability string) (route, error) {
	if isAgentModel(model) && capability == llmChat {
		return h.agentRoute(ctx, model)
	}
	c := h.opts.Config()
	listed := false
	for _, id := range c.Compat.Models {
		if id == model {
			listed = true
		}
	}
	if listed && model == EchoModel {
		return route{provider: echo{now: h.opts.Now}, name: "palyra", model: model}, nil
	}
	for _, m := range models(c) {
		if m.GetId() != model || m.GetOwnedBy() == "palyra" {
			continue
		}
		p := c.Compat.Providers[m.GetOwnedBy()]
		for _, pm := range p.Models {
			if pm.ID == model {
				return route{provider: &upstream{name: m.GetOwnedBy(), cfg: p, secrets: h.opts.Secrets, client: h.opts.HTTPClient, log: h.log},
					name: m.GetOwnedBy(), model: pm.Upstream}, nil
			}
		}
	}
	if listed {
		return h.nodeRoute(ctx, model, capability, errdefs.New(errdefs.Unavailable, "no provider serves the model %s now: palyrad serves %s itself; other models need an upstream provider (compat.providers.<name>.models) or a node that serves them", quote(model), EchoModel))
	}
	return h.nodeRoute(ctx, model, capability, modelNotFound(model))
}

// target records the call's model, provider and token counts for its audit event.
func target(ctx context.Context, r route, model string, u *Usage) {
	t := "model:" + model
	if r.name != "" {
		t += " provider:" + r.name
	}
	if r.node != "" {
		t += " node:" + r.node
	}
	if u != nil {
		t += fmt.Sprintf(" prompt_tokens:%d completion_tokens:%d", u.PromptTokens, u.CompletionTokens)
	}
	audit.SetTarget(ctx, t)
}

// start checks the flags, that req streams if and only if stream and the caller's
// daily token budget, and routes req; the call's audit target names the model from
// then on, and its provider once routed.
func (h *Handler) start(ctx context.Context, req *ChatRequest, stream bool) (route, error) {
	if err := h.enabled(ctx, stream); err != nil {
		return route{}, err
	}
	switch {
	case req.Stream && !stream:
		return route{}, invalid("stream", "this call answers in one response: use the streaming call")
	case !req.Stream && stream:
		return route{}, invalid("stream", "this call streams: set stream to true")
	}
	return h.prepare(ctx, req)
}

// prepare checks the caller's daily token budget and routes req; the call's audit
// target names the model from then on, and its provider once routed.
func (h *Handler) prepare(ctx context.Context, req *ChatRequest) (route, error) {
	target(ctx, route{}, req.Model, nil)
	if err := h.checkBudget(ctx); err != nil {
		return route{}, err
	}
	r, err := h.route(ctx, req.Model, llmChat)
	if err != nil {
		return route{}, err
	}
	target(ctx, r, req.Model, nil)
	return r, nil
}

// complete answers a chat completion in one response, for both surfaces, and records
// its usage.
func (h *Handler) complete(ctx context.Context, req *ChatRequest) (*Completion, error) {
	r, err := h.start(ctx, req, false)
	if err != nil {
		return nil, err
	}
	return h.completeOn(ctx, r, req)
}

// completeOn answers req on the route r and records its usage.
func (h *Handler) completeOn(ctx context.Context, r route, req *ChatRequest) (*Completion, error) {
	c, err := r.provider.Chat(ctx, req, r.model)
	if err != nil {
		return nil, err
	}
	target(ctx, r, req.Model, c.Usage)
	h.record(ctx, r, req.Model, c.Usage)
	return c, nil
}

// Call answers a chat completion made inside palyrad (an agent's model call) as the
// API answers a client's, but for the feature flags, which govern the API: the same
// providers, the daily token budget of ctx's principal checked first, and the usage
// recorded against it. A streamed req (Stream) passes every chunk, the usage chunk
// too, to emit, and returns a completion without a body, with the usage the provider
// reported.
func (h *Handler) Call(ctx context.Context, req *ChatRequest, emit func(chunk []byte) error) (*Completion, error) {
	if isAgentModel(req.Model) {
		return nil, invalid("model", "an agent's model cannot be another agent (%s)", quote(req.Model))
	}
	r, err := h.prepare(ctx, req)
	if err != nil {
		return nil, err
	}
	if !req.Stream {
		return h.completeOn(ctx, r, req)
	}
	req.IncludeUsage = true
	var usage *Usage
	_, err = h.streamOn(ctx, r, req, func(chunk []byte) error {
		var head struct {
			Usage *Usage `json:"usage"`
		}
		if json.Unmarshal(chunk, &head) == nil && head.Usage != nil {
			usage = head.Usage
		}
		return emit(chunk)
	})
	if err != nil {
		return nil, err
	}
	return &Completion{Usage: usage}, nil
}

// stream answers a chat completion chunk by chunk, for both surfaces: emit gets each
// chunk as it arrives. The usage chunk (no choices) reaches emit only when the client
// asked for it. An error after a chunk was emitted ends the stream; started tells the
// caller whether one was. The usage the provider reported is recorded when the stream
// ends, however it ends.
func (h *Handler) stream(ctx context.Context, req *ChatRequest, emit func([]byte) error) (started bool, err error) {
	r, err := h.start(ctx, req, true)
	if err != nil {
		return false, err
	}
	return h.streamOn(ctx, r, req, emit)
}

// streamOn is stream on the route r.
func (h *Handler) streamOn(ctx context.Context, r route, req *ChatRequest, emit func([]byte) error) (started bool, err error) {
	s, err := r.provider.StreamChat(ctx, req, r.model)
	if err != nil {
		return false, err
	}
	defer s.Close()
	var usage *Usage
	defer func() {
		target(ctx, r, req.Model, usage)
		h.record(ctx, r, req.Model, usage)
	}()
	for {
		chunk, err := s.Next()
		if errors.Is(err, io.EOF) {
			return started, nil
		}
		if err != nil {
			return started, err
		}
		var head struct {
			Choices []json.RawMessage `json:"choices"`
			Usage   *Usage            `json:"usage"`
		}
		if err := json.Unmarshal(chunk, &head); err != nil {
			return started, providerError(r.name, "sent a chunk that is not a JSON object")
		}
		if head.Usage != nil {
			usage = head.Usage
			if len(head.Choices) == 0 && !req.IncludeUsage {
				continue
			}
		}
		started = true
		if err := emit(chunk); err != nil {
			return started, err
		}
	}
}

// providerError is a provider's failure: Unavailable, 502 on REST.
func providerError(provider, format string, args ...any) *errdefs.Error {
	return &errdefs.Error{Kind: errdefs.Unavailable, Reason: apiserver.ReasonProviderError,
		Message: "provider " + provider + " " + fmt.Sprintf(format, args...)}
}
