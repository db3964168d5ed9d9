package compat

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"

	"github.com/palyra/palyra/gen/go/palyra/compat/v1/compatv1connect"
	"github.com/palyra/palyra/server/internal/apiserver"
	"github.com/palyra/palyra/server/internal/errdefs"
)

// readBody reads a request body up to the cap; a body over it is refused (413).
func (s *REST) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.maxBody))
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return nil, &errdefs.Error{Kind: errdefs.Invalid, Reason: apiserver.ReasonTooLarge,
			Message: "the request body is larger than palyrad accepts (server.max_message_bytes: " + strconv.FormatInt(s.maxBody, 10) + " bytes)"}
	}
	return body, err
}

// embeddings serves POST /v1/embeddings.
func (s *REST) embeddings(w http.ResponseWriter, r *http.Request) {
	s.call(w, r, compatv1connect.CompatServiceCreateEmbeddingProcedure, func(ctx context.Context) error {
		body, err := s.readBody(w, r)
		if err != nil {
			return err
		}
		// The flags before the request's validation: while the API is off, it is off.
		if err := s.h.enabled(ctx, false); err != nil {
			return err
		}
		req, err := ParseEmbeddingRequest(body)
		if err != nil {
			return err
		}
		e, err := s.h.embed(ctx, req)
		if err != nil {
			return err
		}
		out, err := embeddingsJSON(req, e)
		if err != nil {
			return err
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(out)
		return nil
	})
}

// responses serves POST /v1/responses; stream: true answers the Responses API's
// events as server-sent events, each flushed as it is written.
func (s *REST) responses(w http.ResponseWriter, r *http.Request) {
	s.post(w, r, compatv1connect.CompatServiceCreateResponseProcedure, compatv1connect.CompatServiceStreamResponseProcedure,
		func(ctx context.Context, body []byte) error {
			req, err := ParseResponseRequest(body)
			if err != nil {
				return err
			}
			if !req.Stream {
				res, err := s.h.respond(ctx, req)
				if err != nil {
					return err
				}
				return writeJSON(w, responseJSON(res))
			}
			return s.responseEvents(ctx, w, req)
		})
}

// responseEvents streams a response as server-sent events (`event: <type>` and `data:
// <event>`), flushing each. Once the first event is out, an error is sent as an error
// event; before, it is answered as any error.
func (s *REST) responseEvents(ctx context.Context, w http.ResponseWriter, req *ResponseRequest) error {
	events := newEventWriter(w)
	var seq int64
	started, err := s.h.streamResponse(ctx, req, func(ev *ResponseEvent) error {
		seq = ev.Seq + 1
		data, err := json.Marshal(eventJSON(ev))
		if err != nil {
			return err
		}
		return events.write(ev.Type, data)
	})
	if !started {
		return err
	}
	if err != nil && ctx.Err() == nil {
		_, _, env := apiserver.OpenAIError(err)
		data, merr := json.Marshal(map[string]any{"type": "error", "sequence_number": seq,
			"code": env.Error.Code, "message": env.Error.Message, "param": env.Error.Param})
		if merr == nil {
			_ = events.write("error", data)
		}
	}
	return &errAnswered{err}
}

// contentPart is an output_text part of a response's message.
func contentPart(r *response) map[string]any {
	return map[string]any{"type": "output_text", "text": r.Text, "annotations": []any{}, "logprobs": []any{}}
}

// outputItem is a response's message; done says whether it is complete.
func outputItem(r *response, done bool) map[string]any {
	item := map[string]any{"id": r.MessageID, "type": "message", "role": "assistant", "status": "in_progress", "content": []any{}}
	if done {
		item["status"] = "completed"
		item["content"] = []any{contentPart(r)}
	}
	return item
}

// responseJSON is the Responses API's response object.
func responseJSON(r *response) map[string]any {
	output := []any{}
	var usage any
	if r.Status != "in_progress" {
		output = append(output, outputItem(r, true))
		if r.Usage != nil {
			usage = map[string]any{"input_tokens": r.Usage.PromptTokens, "output_tokens": r.Usage.CompletionTokens,
				"total_tokens": r.Usage.TotalTokens, "input_tokens_details": map[string]any{"cached_tokens": 0},
				"output_tokens_details": map[string]any{"reasoning_tokens": 0}}
		}
	}
	var incomplete any
	if r.IncompleteReason != "" {
		incomplete = map[string]any{"reason": r.IncompleteReason}
	}
	return map[string]any{
		"id": r.ID, "object": "response", "created_at": r.CreatedAt, "status": r.Status, "model": r.Model,
		"output": output, "usage": usage, "error": nil, "incomplete_details": incomplete, "instructions": r.Instructions,
		"metadata": map[string]any{}, "tools": []any{}, "tool_choice": "none", "parallel_tool_calls": false,
		"text": map[string]any{"format": map[string]any{"type": "text"}},
	}
}

// eventJSON is a response event as OpenAI sends it.
func eventJSON(ev *ResponseEvent) map[string]any {
	r := ev.Response
	out := map[string]any{"type": ev.Type, "sequence_number": ev.Seq}
	switch ev.Type {
	case "response.created", "response.in_progress", "response.completed", "response.incomplete":
		out["response"] = responseJSON(r)
	case "response.output_item.added", "response.output_item.done":
		out["output_index"] = 0
		out["item"] = outputItem(r, ev.Type == "response.output_item.done")
	case "response.content_part.added", "response.content_part.done":
		out["item_id"], out["output_index"], out["content_index"] = r.MessageID, 0, 0
		part := contentPart(r)
		if ev.Type == "response.content_part.added" {
			part["text"] = ""
		}
		out["part"] = part
	case "response.output_text.delta":
		out["item_id"], out["output_index"], out["content_index"] = r.MessageID, 0, 0
		out["delta"], out["logprobs"] = ev.Delta, []any{}
	case "response.output_text.done":
		out["item_id"], out["output_index"], out["content_index"] = r.MessageID, 0, 0
		out["text"], out["logprobs"] = r.Text, []any{}
	}
	return out
}
