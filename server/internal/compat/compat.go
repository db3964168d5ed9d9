// Package compat is palyrad's OpenAI-compatible API: one implementation of models, chat
// completions, responses (answered by the chat providers) and embeddings behind two
// surfaces, the CompatService RPCs (Handler) and the OpenAI REST endpoints (REST), which
// speak OpenAI's wire format so that the official SDKs work unchanged.
//
// A model is served by a Provider: palyrad itself for palyra-echo (when compat.models
// lists it), an OpenAI-compatible upstream (compat.providers.<name>, read from the
// configuration in effect at each call), or, for a model neither serves, an online node
// that announces it under llm.chat or llm.embed, chosen by label selector and load
// (node.go). Requests are kept as the JSON the client sent,
// so that fields palyrad does not read (tools, response_format, temperature, ...) reach
// the upstream unchanged; only model is rewritten (aliases) and, when streaming,
// stream_options.include_usage is set so that every call's tokens are counted.
package compat

import (
	"context"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"time"

	"connectrpc.com/connect"

	compatv1 "github.com/palyra/palyra/gen/go/palyra/compat/v1"
	"github.com/palyra/palyra/gen/go/palyra/compat/v1/compatv1connect"
	"github.com/palyra/palyra/server/internal/apiserver"
	"github.com/palyra/palyra/server/internal/config"
	"github.com/palyra/palyra/server/internal/errdefs"
	"github.com/palyra/palyra/server/internal/flags"
	"github.com/palyra/palyra/server/internal/secretref"
	"github.com/palyra/palyra/server/internal/store"
)

// Flags is what the handler asks of the feature flags.
type Flags interface {
	Enabled(ctx context.Context, key string) (bool, error)
}

// Secrets resolves the secret references of the providers' API keys (vault.Vault).
type Secrets interface {
	Resolve(ctx context.Context, ref secretref.Ref) ([]byte, error)
}

// errOff answers every call while the compat_api flag is off.
var errOff = &errdefs.Error{Kind: errdefs.FailedPrecondition, Reason: apiserver.ReasonFeatureDisabled,
	Message: "the OpenAI-compatible API is off: turn on the compat_api feature flag (palyra flags set compat_api on)"}

// errStreamingOff answers streamed chat completions and responses while
// compat_streaming is off.
var errStreamingOff = &errdefs.Error{Kind: errdefs.FailedPrecondition, Reason: apiserver.ReasonFeatureDisabled,
	Message: "streamed chat completions and responses are off: turn on the compat_streaming feature flag (palyra flags set compat_streaming on)"}

// Options are the handler's dependencies.
type Options struct {
	// Config returns the configuration in effect, read at every call (models and
	// providers may change while the daemon runs); the handler does not modify it.
	Config func() *config.Config
	Flags  Flags
	// Secrets resolves the providers' API keys at each call.
	Secrets Secrets
	// HTTPClient calls the upstream providers; nil means a client of its own.
	HTTPClient *http.Client
	// Now stamps palyra-echo's completions; nil means time.Now.
	Now    func() time.Time
	Logger *slog.Logger
	// Nodes runs the dispatches of the models nodes serve (node.go); nil serves none.
	Nodes Nodes
	// Store records the calls' usage and checks the tokens' daily budgets (usage.go);
	// nil records nothing and checks no budget.
	Store *store.Store
}

// Handler serves CompatService, and is the implementation REST serves too. Every call
// is refused with FailedPrecondition (REST: 403 feature_disabled) while the compat_api
// feature flag is off.
type Handler struct {
	opts Options
	log  *slog.Logger
	// agents serves the agents' models (SetAgents); nil serves none.
	agents Agents
}

var _ compatv1connect.CompatServiceHandler = (*Handler)(nil)

// NewHandler returns the CompatService handler.
func NewHandler(opts Options) *Handler {
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Handler{opts: opts, log: log}
}

// enabled refuses calls while the API (or, for streams, streaming) is off, and those
// whose node selector header does not parse.
func (h *Handler) enabled(ctx context.Context, stream bool) error {
	keys := []string{flags.CompatAPI}
	if stream {
		keys = append(keys, flags.CompatStreaming)
	}
	for _, key := range keys {
		on, err := h.opts.Flags.Enabled(ctx, key)
		if err != nil {
			return err
		}
		if !on {
			if key == flags.CompatAPI {
				return errOff
			}
			return errStreamingOff
		}
	}
	_, err := h.nodeSelectors(ctx)
	return err
}

// models lists the models of compat.models in order, owned by "palyra", then those of
// each provider with a base URL, by provider name, owned by the provider. A model id
// listed twice is listed once, where it comes first.
func models(c *config.Config) []*compatv1.Model {
	var out []*compatv1.Model
	seen := map[string]bool{}
	add := func(id, owner string) {
		if !seen[id] {
			seen[id] = true
			out = append(out, &compatv1.Model{Id: id, OwnedBy: owner})
		}
	}
	for _, id := range c.Compat.Models {
		add(id, "palyra")
	}
	for _, name := range slices.Sorted(maps.Keys(c.Compat.Providers)) {
		p := c.Compat.Providers[name]
		if p.BaseURL == "" {
			continue
		}
		for _, m := range p.Models {
			add(m.ID, name)
		}
	}
	return out
}

// listModels is ListModels, for both surfaces.
func (h *Handler) listModels(ctx context.Context) ([]*compatv1.Model, error) {
	if err := h.enabled(ctx, false); err != nil {
		return nil, err
	}
	return h.allModels(ctx)
}

// getModel is GetModel, for both surfaces.
func (h *Handler) getModel(ctx context.Context, id string) (*compatv1.Model, error) {
	if err := h.enabled(ctx, false); err != nil {
		return nil, err
	}
	ms, err := h.allModels(ctx)
	if err != nil {
		return nil, err
	}
	for _, m := range ms {
		if m.GetId() == id {
			return m, nil
		}
	}
	return nil, modelNotFound(id)
}

// modelNotFound refuses a model no one serves, without echoing more than a model id's
// worth of what the client sent.
func modelNotFound(id string) error {
	if len(id) > 128 {
		id = id[:128] + "..."
	}
	return &errdefs.Error{Kind: errdefs.NotFound, Field: "model", Reason: "model_not_found",
		Message: "the model " + quote(id) + " does not exist: GET /v1/models lists the models"}
}

// ListModels lists the configured models (models).
func (h *Handler) ListModels(ctx context.Context, _ *connect.Request[compatv1.ListModelsRequest]) (*connect.Response[compatv1.ListModelsResponse], error) {
	ms, err := h.listModels(ctx)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&compatv1.ListModelsResponse{Models: ms}), nil
}

// GetModel returns one listed model.
func (h *Handler) GetModel(ctx context.Context, req *connect.Request[compatv1.GetModelRequest]) (*connect.Response[compatv1.GetModelResponse], error) {
	m, err := h.getModel(ctx, req.Msg.GetId())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&compatv1.GetModelResponse{Model: m}), nil
}
