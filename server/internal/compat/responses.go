package compat

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"

	"github.com/oklog/ulid/v2"
)

// The Responses API is served over the chat providers: a request's instructions and
// input become chat messages, the completion (or its chunks) becomes a response (or
// its events). Answers are text: tools and stored conversations are refused.

// responseDropped are the Responses fields that have no chat counterpart and change no
// answer palyrad gives: palyrad stores no response (store, metadata), does not truncate,
// and answers without tools.
var responseDropped = map[string]bool{
	"store": true, "metadata": true, "truncation": true, "include": true, "parallel_tool_calls": true,
	"prompt_cache_key": true, "safety_identifier": true, "service_tier": true, "tool_choice": true,
}

// responseRefused are the Responses fields palyrad cannot serve, and why.
var responseRefused = map[string]string{
	"previous_response_id": "palyrad stores no responses: send the whole conversation as input",
	"conversation":         "palyrad stores no conversations: send the whole conversation as input",
	"prompt":               "palyrad has no stored prompts: send instructions and input",
	"background":           "palyrad answers in the foreground only",
}

// ResponseRequest is a Responses API request, as the chat request that answers it.
type ResponseRequest struct {
	// Model is the model the client asked for.
	Model string
	// Stream asks for events (stream: true).
	Stream bool
	// Instructions are the request's instructions, nil when it has none.
	Instructions *string
	// chat is the chat completion request that answers it.
	chat *ChatRequest
}

// ParseResponseRequest reads and checks the JSON body of POST /v1/responses.
func ParseResponseRequest(body []byte) (*ResponseRequest, error) {
	fields, err := parseObject(body)
	if err != nil {
		return nil, err
	}
	return newResponseRequest(fields)
}

// newResponseRequest translates a Responses request into a chat request: instructions
// become a first system message, input (a string, or a list of messages whose content
// is a string or input_text/output_text parts) the messages, max_output_tokens
// max_tokens, reasoning.effort reasoning_effort and text.format response_format; other
// fields are passed on as they are.
func newResponseRequest(fields map[string]json.RawMessage) (*ResponseRequest, error) {
	r := &ResponseRequest{}
	isNull := func(raw json.RawMessage) bool { return raw == nil || string(raw) == "null" }
	if err := json.Unmarshal(fields["model"], &r.Model); err != nil || r.Model == "" {
		return nil, invalid("model", "must name a model, as a string: GET /v1/models lists them")
	}
	if raw := fields["stream"]; !isNull(raw) {
		if err := json.Unmarshal(raw, &r.Stream); err != nil {
			return nil, invalid("stream", "must be true or false")
		}
	}
	type message struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	}
	var msgs []message
	if raw := fields["instructions"]; !isNull(raw) {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, invalid("instructions", "must be a string")
		}
		r.Instructions = &s
		msgs = append(msgs, message{Role: "system", Content: s})
	}
	input, err := responseInput(fields["input"])
	if err != nil {
		return nil, err
	}
	for _, m := range input {
		msgs = append(msgs, message{Role: m.Role, Content: m.Text})
	}
	chat := map[string]json.RawMessage{}
	for k, v := range fields {
		if why, ok := responseRefused[k]; ok && !isNull(v) && string(v) != "false" {
			return nil, invalid(k, "is not supported: %s", why)
		}
		switch {
		case responseDropped[k], k == "model", k == "stream", k == "instructions", k == "input", isNull(v):
		case k == "tools":
			var tools []json.RawMessage
			if json.Unmarshal(v, &tools) != nil || len(tools) > 0 {
				return nil, invalid("tools", "is not supported: palyrad answers the Responses API in text (POST /v1/chat/completions passes tools on)")
			}
		case k == "max_output_tokens":
			chat["max_tokens"] = v
		case k == "reasoning":
			var re struct {
				Effort json.RawMessage `json:"effort"`
			}
			if json.Unmarshal(v, &re) != nil {
				return nil, invalid("reasoning", "must be an object")
			}
			if !isNull(re.Effort) {
				chat["reasoning_effort"] = re.Effort
			}
		case k == "text":
			format, err := responseFormat(v)
			if err != nil {
				return nil, err
			}
			if format != nil {
				chat["response_format"] = format
			}
		default:
			chat[k] = v
		}
	}
	if chat["model"], err = json.Marshal(r.Model); err != nil {
		return nil, err
	}
	if chat["messages"], err = json.Marshal(msgs); err != nil {
		return nil, err
	}
	if r.Stream {
		chat["stream"] = json.RawMessage("true")
		chat["stream_options"] = json.RawMessage(`{"include_usage":true}`)
	}
	if r.chat, err = newChatRequest(chat); err != nil {
		return nil, err
	}
	return r, nil
}

// responseInput reads a request's input as messages.
func responseInput(raw json.RawMessage) ([]Message, error) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		if s == "" {
			return nil, invalid("input", "must not be empty")
		}
		return []Message{{Role: "user", Text: s}}, nil
	}
	var items []json.RawMessage
	if json.Unmarshal(raw, &items) != nil {
		return nil, invalid("input", "must be a string or an array of messages")
	}
	if len(items) == 0 {
		return nil, invalid("input", "must hold at least one message")
	}
	out := make([]Message, 0, len(items))
	for i, item := range items {
		field := "input[" + strconv.Itoa(i) + "]"
		var m struct {
			Type    string          `json:"type"`
			Role    string          `json:"role"`
			Content json.RawMessage `json:"content"`
		}
		if json.Unmarshal(item, &m) != nil {
			return nil, invalid(field, "must be a message object with a role and a content")
		}
		if m.Type != "" && m.Type != "message" {
			return nil, invalid(field+".type", "%s is not supported: palyrad takes messages (type \"message\") only", quote(m.Type))
		}
		switch m.Role {
		case "user", "assistant", "system", "developer":
		default:
			return nil, invalid(field+".role", "%s is not a role: use user, assistant, system or developer", quote(m.Role))
		}
		text, err := responseContent(field+".content", m.Content)
		if err != nil {
			return nil, err
		}
		out = append(out, Message{Role: m.Role, Text: text})
	}
	return out, nil
}

// responseContent is the text of a message's content: a string, or text parts
// (input_text, output_text) joined.
func responseContent(field string, raw json.RawMessage) (string, error) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, nil
	}
	var parts []struct {
		Type string  `json:"type"`
		Text *string `json:"text"`
	}
	if json.Unmarshal(raw, &parts) != nil {
		return "", invalid(field, "must be a string or an array of text parts")
	}
	var b strings.Builder
	for j, p := range parts {
		switch {
		case p.Type != "input_text" && p.Type != "output_text":
			return "", invalid(field+"["+strconv.Itoa(j)+"].type", "%s is not supported: palyrad takes input_text and output_text parts", quote(p.Type))
		case p.Text == nil:
			return "", invalid(field+"["+strconv.Itoa(j)+"].text", "is required")
		}
		b.WriteString(*p.Text)
	}
	return b.String(), nil
}

// responseFormat translates text.format into a chat response_format; nil for text.
func responseFormat(raw json.RawMessage) (json.RawMessage, error) {
	var text struct {
		Format map[string]json.RawMessage `json:"format"`
	}
	if json.Unmarshal(raw, &text) != nil {
		return nil, invalid("text", "must be an object, e.g. {\"format\": {\"type\": \"text\"}}")
	}
	if text.Format == nil {
		return nil, nil
	}
	var kind string
	_ = json.Unmarshal(text.Format["type"], &kind)
	switch kind {
	case "text":
		return nil, nil
	case "json_object":
		return json.RawMessage(`{"type":"json_object"}`), nil
	case "json_schema":
		schema := map[string]json.RawMessage{}
		for k, v := range text.Format {
			if k != "type" {
				schema[k] = v
			}
		}
		return json.Marshal(map[string]any{"type": "json_schema", "json_schema": schema})
	}
	return nil, invalid("text.format.type", "must be text, json_object or json_schema")
}

// response is a response's state: its ids, its text so far and, once done, its usage.
type response struct {
	ID, MessageID string
	CreatedAt     int64
	Model         string
	Instructions  *string
	// Status is "in_progress", "completed" or "incomplete".
	Status string
	Text   string
	Usage  *Usage
	// IncompleteReason says why an incomplete response ended.
	IncompleteReason string
}

// newResponse starts the response to req.
func (h *Handler) newResponse(req *ResponseRequest) *response {
	return &response{ID: "resp_" + ulid.Make().String(), MessageID: "msg_" + ulid.Make().String(),
		CreatedAt: h.opts.Now().Unix(), Model: req.Model, Instructions: req.Instructions, Status: "in_progress"}
}

// finish ends a response as a chat completion's finish_reason says.
func (r *response) finish(reason string) {
	r.Status = "completed"
	switch reason {
	case "length":
		r.Status, r.IncompleteReason = "incomplete", "max_output_tokens"
	case "content_filter":
		r.Status, r.IncompleteReason = "incomplete", "content_filter"
	}
}

// respond answers a Responses request in one response, for both surfaces.
func (h *Handler) respond(ctx context.Context, req *ResponseRequest) (*response, error) {
	if req.Stream {
		return nil, invalid("stream", "this call answers in one response: use the streaming call")
	}
	c, err := h.complete(ctx, req.chat)
	if err != nil {
		return nil, err
	}
	var body struct {
		Model   string `json:"model"`
		Choices []struct {
			Message struct {
				Content *string `json:"content"`
			} `json:"message"`
			FinishReason string `json:"finish_reason"`
		} `json:"choices"`
	}
	if err := json.Unmarshal(c.Body, &body); err != nil || len(body.Choices) == 0 {
		return nil, providerError("", "answered with a completion palyrad cannot read")
	}
	r := h.newResponse(req)
	if body.Model != "" {
		r.Model = body.Model
	}
	if t := body.Choices[0].Message.Content; t != nil {
		r.Text = *t
	}
	r.Usage = c.Usage
	r.finish(body.Choices[0].FinishReason)
	return r, nil
}

// ResponseEvent is one event of a streamed response.
type ResponseEvent struct {
	// Type is the Responses API's event type, e.g. "response.output_text.delta".
	Type string
	// Seq is the event's sequence number, from 0.
	Seq int64
	// Delta is the text the event adds (response.output_text.delta).
	Delta string
	// Response is the response as of the event.
	Response *response
}

// streamResponse answers a Responses request as events, for both surfaces: emit gets
// each event as it happens. The events are OpenAI's, for one message with one
// output_text part. An error after an event was emitted ends the stream; started tells
// the caller whether one was.
func (h *Handler) streamResponse(ctx context.Context, req *ResponseRequest, emit func(*ResponseEvent) error) (started bool, err error) {
	if !req.Stream {
		return false, invalid("stream", "this call streams: set stream to true")
	}
	r := h.newResponse(req)
	var seq int64
	send := func(kind, delta string) error {
		ev := &ResponseEvent{Type: kind, Seq: seq, Delta: delta, Response: r}
		seq++
		return emit(ev)
	}
	var text strings.Builder
	finish := ""
	begin := func() error {
		for _, kind := range []string{"response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"} {
			if err := send(kind, ""); err != nil {
				return err
			}
		}
		return nil
	}
	started, err = h.stream(ctx, req.chat, func(chunk []byte) error {
		var c struct {
			Model   string `json:"model"`
			Choices []struct {
				Delta struct {
					Content string `json:"content"`
				} `json:"delta"`
				FinishReason *string `json:"finish_reason"`
			} `json:"choices"`
			Usage *Usage `json:"usage"`
		}
		if err := json.Unmarshal(chunk, &c); err != nil {
			return providerError("", "sent a chunk palyrad cannot read")
		}
		if seq == 0 {
			if c.Model != "" {
				r.Model = c.Model
			}
			if err := begin(); err != nil {
				return err
			}
		}
		if c.Usage != nil {
			r.Usage = c.Usage
		}
		for _, ch := range c.Choices {
			if ch.FinishReason != nil {
				finish = *ch.FinishReason
			}
			if ch.Delta.Content == "" {
				continue
			}
			text.WriteString(ch.Delta.Content)
			if err := send("response.output_text.delta", ch.Delta.Content); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return started, err
	}
	if seq == 0 {
		if err := begin(); err != nil {
			return true, err
		}
	}
	r.Text = text.String()
	r.finish(finish)
	for _, kind := range []string{"response.output_text.done", "response.content_part.done", "response.output_item.done"} {
		if err := send(kind, ""); err != nil {
			return true, err
		}
	}
	if r.Status == "incomplete" {
		return true, send("response.incomplete", "")
	}
	return true, send("response.completed", "")
}
