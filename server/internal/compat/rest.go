package compat

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sync"

	compatv1 "github.com/palyra/palyra/gen/go/palyra/compat/v1"
	"github.com/palyra/palyra/gen/go/palyra/compat/v1/compatv1connect"
	"github.com/palyra/palyra/server/internal/apiserver"
	"github.com/palyra/palyra/server/internal/errdefs"
)

// Authorizer applies an RPC's access rule to a REST call (access.Interceptor.Authorize).
type Authorizer interface {
	Authorize(ctx context.Context, procedure, peer string, header http.Header) (context.Context, func(error), error)
}

// REST serves the OpenAI REST endpoints on the Handler: GET /v1/models, GET
// /v1/models/{id}, POST /v1/chat/completions and POST /v1/responses (stream: true
// answers server-sent events, each flushed as it is written), POST /v1/embeddings. Each
// call passes the access rule of the RPC it serves (ListModels, GetModel,
// CreateChatCompletion, StreamChatCompletion, CreateEmbedding, CreateResponse or
// StreamResponse): the same
// tokens, permissions, rate limits and audit. Errors are OpenAI's envelope
// (apiserver.WriteOpenAIError).
type REST struct {
	h       *Handler
	access  Authorizer
	maxBody int64
	mux     *http.ServeMux
	// pending counts the answered calls still recording (call).
	pending sync.WaitGroup
}

// NewREST returns the REST endpoints of h; request bodies over maxBody bytes are
// refused (413).
func NewREST(h *Handler, access Authorizer, maxBody int) *REST {
	s := &REST{h: h, access: access, maxBody: int64(maxBody), mux: http.NewServeMux()}
	s.mux.HandleFunc("GET /v1/models", s.listModels)
	s.mux.HandleFunc("GET /v1/models/{id...}", s.getModel)
	s.mux.HandleFunc("POST /v1/chat/completions", s.chat)
	s.mux.HandleFunc("POST /v1/embeddings", s.embeddings)
	s.mux.HandleFunc("POST /v1/responses", s.responses)
	s.mux.HandleFunc("/v1/", func(w http.ResponseWriter, r *http.Request) {
		apiserver.WriteOpenAIError(w, errdefs.New(errdefs.NotFound, "palyrad serves no %s %s", r.Method, r.URL.Path))
	})
	return s
}

// ServeHTTP implements http.Handler.
func (s *REST) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// call authorizes r as procedure, runs serve, and answers an error serve returns in the
// envelope. What the call records once its answer is out (its usage and its audit
// event) is written after the handler returns, so that the client does not wait for
// those commits (Wait waits for them).
func (s *REST) call(w http.ResponseWriter, r *http.Request, procedure string, serve func(ctx context.Context) error) {
	ctx, end, err := s.access.Authorize(r.Context(), procedure, r.RemoteAddr, r.Header)
	if err != nil {
		apiserver.WriteOpenAIError(w, err)
		return
	}
	ctx, later := withAfterAnswer(ctx)
	err = serve(withSelectorHeader(ctx, r.Header))
	var done *errAnswered
	switch {
	case errors.As(err, &done):
		err = done.err
	case err != nil:
		apiserver.WriteOpenAIError(w, err)
	}
	s.pending.Add(1)
	go func() {
		defer s.pending.Done()
		later.run()
		end(err)
	}()
}

// Wait waits until every call answered has recorded its usage and audit event.
func (s *REST) Wait() { s.pending.Wait() }

// model is OpenAI's model object. created is 0: palyrad does not know when a model was
// made.
type model struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

func modelJSON(m *compatv1.Model) model {
	return model{ID: m.GetId(), Object: "model", OwnedBy: m.GetOwnedBy()}
}

// writeJSON answers v with 200.
func writeJSON(w http.ResponseWriter, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(body)
	return nil
}

func (s *REST) listModels(w http.ResponseWriter, r *http.Request) {
	s.call(w, r, compatv1connect.CompatServiceListModelsProcedure, func(ctx context.Context) error {
		ms, err := s.h.listModels(ctx)
		if err != nil {
			return err
		}
		data := make([]model, len(ms))
		for i, m := range ms {
			data[i] = modelJSON(m)
		}
		return writeJSON(w, struct {
			Object string  `json:"object"`
			Data   []model `json:"data"`
		}{"list", data})
	})
}

func (s *REST) getModel(w http.ResponseWriter, r *http.Request) {
	s.call(w, r, compatv1connect.CompatServiceGetModelProcedure, func(ctx context.Context) error {
		m, err := s.h.getModel(ctx, r.PathValue("id"))
		if err != nil {
			return err
		}
		return writeJSON(w, modelJSON(m))
	})
}

// chat serves POST /v1/chat/completions.
func (s *REST) chat(w http.ResponseWriter, r *http.Request) {
	s.post(w, r, compatv1connect.CompatServiceCreateChatCompletionProcedure, compatv1connect.CompatServiceStreamChatCompletionProcedure,
		func(ctx context.Context, body []byte) error {
			req, err := ParseChatRequest(body)
			if err != nil {
				return err
			}
			if !req.Stream {
				c, err := s.h.complete(ctx, req)
				if err != nil {
					return err
				}
				w.Header().Set("Content-Type", "application/json")
				_, _ = w.Write(c.Body)
				return nil
			}
			return s.sse(ctx, w, req)
		})
}

// post serves a POST whose body may ask for a stream: the RPC whose rule applies is
// unary, or stream when the body says "stream": true. The body is read (no further than
// the cap) before the access check, to learn which; the flags are checked before the
// body is validated (while the API is off, it is off); then serve answers.
func (s *REST) post(w http.ResponseWriter, r *http.Request, unary, stream string, serve func(ctx context.Context, body []byte) error) {
	body, readErr := s.readBody(w, r)
	var peek struct {
		Stream bool `json:"stream"`
	}
	_ = json.Unmarshal(body, &peek)
	procedure := unary
	if peek.Stream {
		procedure = stream
	}
	s.call(w, r, procedure, func(ctx context.Context) error {
		if readErr != nil {
			return readErr
		}
		if err := s.h.enabled(ctx, peek.Stream); err != nil {
			return err
		}
		return serve(ctx, body)
	})
}

// sse streams the completion as server-sent events, flushing each. Once the first
// event is out, an error is sent as an error event followed by [DONE]; before, it is
// answered as any error.
func (s *REST) sse(ctx context.Context, w http.ResponseWriter, req *ChatRequest) error {
	events := newEventWriter(w)
	started, err := s.h.stream(ctx, req, func(chunk []byte) error { return events.write("", chunk) })
	if !started {
		return err
	}
	if err != nil && ctx.Err() == nil {
		_, _, env := apiserver.OpenAIError(err)
		if data, merr := json.Marshal(env); merr == nil {
			_ = events.write("", data)
		}
	}
	_ = events.write("", []byte("[DONE]"))
	return &errAnswered{err}
}

// eventWriter writes server-sent events, flushing each; the first sends the headers of
// an event stream.
type eventWriter struct {
	w  http.ResponseWriter
	rc *http.ResponseController
}

// newEventWriter returns the event writer of w.
func newEventWriter(w http.ResponseWriter) *eventWriter {
	return &eventWriter{w: w, rc: http.NewResponseController(w)}
}

// write sends one event: `event: <kind>` when kind is not empty, then `data: <data>`.
func (e *eventWriter) write(kind string, data []byte) error {
	h := e.w.Header()
	if h.Get("Content-Type") == "" {
		h.Set("Content-Type", "text/event-stream")
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Accel-Buffering", "no")
		e.w.WriteHeader(http.StatusOK)
	}
	var frame []byte
	if kind != "" {
		frame = append(frame, "event: "+kind+"\n"...)
	}
	frame = append(append(append(frame, "data: "...), data...), '\n', '\n')
	if _, err := e.w.Write(frame); err != nil {
		return err
	}
	return e.rc.Flush()
}

// errAnswered is the outcome of a call that already answered (a stream that started):
// the call ends with err, and nothing more is written.
type errAnswered struct{ err error }

func (e *errAnswered) Error() string { return "answered" }
