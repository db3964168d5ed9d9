package compat

import (
	"context"
	"encoding/json"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	compatv1 "github.com/palyra/palyra/gen/go/palyra/compat/v1"
)

// reservedOptions are the request fields that have fields of their own in the RPCs.
var reservedOptions = map[string]bool{"model": true, "messages": true, "stream": true, "stream_options": true}

// rpcRequest makes the OpenAI request of an RPC's fields, checked as the REST body is.
func rpcRequest(model string, msgs []*compatv1.ChatMessage, options *structpb.Struct, stream, includeUsage bool) (*ChatRequest, error) {
	fields, err := optionFields(options, reservedOptions)
	if err != nil {
		return nil, err
	}
	type message struct {
		Role    string `json:"role"`
		Content string `json:"content"`
		Name    string `json:"name,omitempty"`
	}
	list := make([]message, len(msgs))
	for i, m := range msgs {
		list[i] = message{Role: m.GetRole(), Content: m.GetContent(), Name: m.GetName()}
	}
	if fields["model"], err = json.Marshal(model); err != nil {
		return nil, err
	}
	if fields["messages"], err = json.Marshal(list); err != nil {
		return nil, err
	}
	if stream {
		fields["stream"] = json.RawMessage("true")
		if includeUsage {
			fields["stream_options"] = json.RawMessage(`{"include_usage":true}`)
		}
	}
	return newChatRequest(fields)
}

// optionFields are an RPC's options as request fields; the reserved ones are refused.
func optionFields(options *structpb.Struct, reserved map[string]bool) (map[string]json.RawMessage, error) {
	fields := map[string]json.RawMessage{}
	for k, v := range options.GetFields() {
		if reserved[k] {
			return nil, invalid("options."+k, "is a field of the request itself")
		}
		raw, err := protojson.Marshal(v)
		if err != nil {
			return nil, invalid("options."+k, "is not a JSON value")
		}
		fields[k] = raw
	}
	return fields, nil
}

// fromJSON reads an OpenAI object into its message, ignoring the fields it lacks
// (logprobs, tool calls, ...).
func fromJSON(body []byte, m proto.Message) error {
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(body, m); err != nil {
		return providerError("", "answered with an object palyrad cannot read")
	}
	return nil
}

// CreateChatCompletion answers a chat completion (complete).
func (h *Handler) CreateChatCompletion(ctx context.Context, req *connect.Request[compatv1.CreateChatCompletionRequest]) (*connect.Response[compatv1.CreateChatCompletionResponse], error) {
	if err := h.enabled(ctx, false); err != nil {
		return nil, err
	}
	r, err := rpcRequest(req.Msg.GetModel(), req.Msg.GetMessages(), req.Msg.GetOptions(), false, false)
	if err != nil {
		return nil, err
	}
	c, err := h.complete(ctx, r)
	if err != nil {
		return nil, err
	}
	out := &compatv1.ChatCompletion{}
	if err := fromJSON(c.Body, out); err != nil {
		return nil, err
	}
	return connect.NewResponse(&compatv1.CreateChatCompletionResponse{Completion: out}), nil
}

// StreamChatCompletion streams a chat completion (stream).
func (h *Handler) StreamChatCompletion(ctx context.Context, req *connect.Request[compatv1.StreamChatCompletionRequest], out *connect.ServerStream[compatv1.StreamChatCompletionResponse]) error {
	if err := h.enabled(ctx, true); err != nil {
		return err
	}
	r, err := rpcRequest(req.Msg.GetModel(), req.Msg.GetMessages(), req.Msg.GetOptions(), true, req.Msg.GetIncludeUsage())
	if err != nil {
		return err
	}
	_, err = h.stream(ctx, r, func(chunk []byte) error {
		c := &compatv1.ChatCompletionChunk{}
		if err := fromJSON(chunk, c); err != nil {
			return err
		}
		return out.Send(&compatv1.StreamChatCompletionResponse{Chunk: c})
	})
	return err
}
