package compat

import (
	"context"
	"encoding/json"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/structpb"

	compatv1 "github.com/palyra/palyra/gen/go/palyra/compat/v1"
)

// reservedEmbeddingOptions and reservedResponseOptions are the request fields that
// have fields of their own in the RPCs (vectors are always floats there).
var (
	reservedEmbeddingOptions = map[string]bool{"model": true, "input": true, "encoding_format": true}
	reservedResponseOptions  = map[string]bool{"model": true, "input": true, "instructions": true, "stream": true}
)

// CreateEmbedding embeds texts (embed).
func (h *Handler) CreateEmbedding(ctx context.Context, req *connect.Request[compatv1.CreateEmbeddingRequest]) (*connect.Response[compatv1.CreateEmbeddingResponse], error) {
	if err := h.enabled(ctx, false); err != nil {
		return nil, err
	}
	fields, err := optionFields(req.Msg.GetOptions(), reservedEmbeddingOptions)
	if err != nil {
		return nil, err
	}
	if fields["model"], err = json.Marshal(req.Msg.GetModel()); err != nil {
		return nil, err
	}
	input := req.Msg.GetInput()
	if input == nil {
		input = []string{}
	}
	if fields["input"], err = json.Marshal(input); err != nil {
		return nil, err
	}
	r, err := newEmbeddingRequest(fields)
	if err != nil {
		return nil, err
	}
	e, err := h.embed(ctx, r)
	if err != nil {
		return nil, err
	}
	out := &compatv1.CreateEmbeddingResponse{Model: r.Model, Usage: usageProto(e.Usage)}
	for i, v := range e.Vectors {
		out.Data = append(out.Data, &compatv1.Embedding{Index: int32(i), Embedding: v})
	}
	return connect.NewResponse(out), nil
}

// rpcResponseRequest makes the Responses request of an RPC's fields, checked as the
// REST body is.
func rpcResponseRequest(model, instructions string, input []*compatv1.ChatMessage, options *structpb.Struct, stream bool) (*ResponseRequest, error) {
	fields, err := optionFields(options, reservedResponseOptions)
	if err != nil {
		return nil, err
	}
	type message struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	}
	list := make([]message, len(input))
	for i, m := range input {
		list[i] = message{Role: m.GetRole(), Content: m.GetContent()}
	}
	if fields["model"], err = json.Marshal(model); err != nil {
		return nil, err
	}
	if fields["input"], err = json.Marshal(list); err != nil {
		return nil, err
	}
	if instructions != "" {
		if fields["instructions"], err = json.Marshal(instructions); err != nil {
			return nil, err
		}
	}
	if stream {
		fields["stream"] = json.RawMessage("true")
	}
	return newResponseRequest(fields)
}

// usageProto is u as the RPCs' Usage; nil when u is.
func usageProto(u *Usage) *compatv1.Usage {
	if u == nil {
		return nil
	}
	return &compatv1.Usage{PromptTokens: u.PromptTokens, CompletionTokens: u.CompletionTokens, TotalTokens: u.TotalTokens}
}

// responseProto is a response as the RPCs' Response.
func responseProto(r *response) *compatv1.Response {
	out := &compatv1.Response{Id: r.ID, CreatedAt: r.CreatedAt, Model: r.Model, Status: r.Status,
		OutputText: r.Text, IncompleteReason: r.IncompleteReason}
	if r.Status != "in_progress" {
		out.Usage = usageProto(r.Usage)
	}
	return out
}

// CreateResponse answers a Responses request in one response (respond).
func (h *Handler) CreateResponse(ctx context.Context, req *connect.Request[compatv1.CreateResponseRequest]) (*connect.Response[compatv1.CreateResponseResponse], error) {
	if err := h.enabled(ctx, false); err != nil {
		return nil, err
	}
	r, err := rpcResponseRequest(req.Msg.GetModel(), req.Msg.GetInstructions(), req.Msg.GetInput(), req.Msg.GetOptions(), false)
	if err != nil {
		return nil, err
	}
	res, err := h.respond(ctx, r)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&compatv1.CreateResponseResponse{Response: responseProto(res)}), nil
}

// StreamResponse streams a Responses request's events (streamResponse).
func (h *Handler) StreamResponse(ctx context.Context, req *connect.Request[compatv1.StreamResponseRequest], out *connect.ServerStream[compatv1.StreamResponseResponse]) error {
	if err := h.enabled(ctx, true); err != nil {
		return err
	}
	r, err := rpcResponseRequest(req.Msg.GetModel(), req.Msg.GetInstructions(), req.Msg.GetInput(), req.Msg.GetOptions(), true)
	if err != nil {
		return err
	}
	_, err = h.streamResponse(ctx, r, func(ev *ResponseEvent) error {
		msg := &compatv1.StreamResponseResponse{Type: ev.Type, SequenceNumber: ev.Seq, Delta: ev.Delta}
		switch ev.Type {
		case "response.created", "response.in_progress", "response.completed", "response.incomplete":
			msg.Response = responseProto(ev.Response)
		case "response.output_text.done":
			msg.Text = ev.Response.Text
		}
		return out.Send(msg)
	})
	return err
}
