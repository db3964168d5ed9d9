// Package compat is palyrad's OpenAI-compatible API: the CompatService handler, which
// the OpenAI REST endpoints will call too.
package compat

import (
	"context"
	"maps"
	"slices"

	"connectrpc.com/connect"

	compatv1 "github.com/palyra/palyra/gen/go/palyra/compat/v1"
	"github.com/palyra/palyra/gen/go/palyra/compat/v1/compatv1connect"
	"github.com/palyra/palyra/server/internal/config"
	"github.com/palyra/palyra/server/internal/errdefs"
	"github.com/palyra/palyra/server/internal/flags"
)

// Flags is what the handler asks of the feature flags.
type Flags interface {
	Enabled(ctx context.Context, key string) (bool, error)
}

// errOff answers every call while the compat_api flag is off.
var errOff = errdefs.New(errdefs.FailedPrecondition, "the OpenAI-compatible API is off: turn on the compat_api feature flag (palyra flags set compat_api on)")

// Handler serves CompatService. Every call is refused with FailedPrecondition while the
// compat_api feature flag is off.
type Handler struct {
	config func() *config.Config
	flags  Flags
}

var _ compatv1connect.CompatServiceHandler = (*Handler)(nil)

// NewHandler returns the CompatService handler; cfg returns the configuration in
// effect, read at every call (the models may change while the daemon runs), which the
// handler does not modify.
func NewHandler(cfg func() *config.Config, f Flags) *Handler {
	return &Handler{config: cfg, flags: f}
}

// enabled refuses calls while the API is off.
func (h *Handler) enabled(ctx context.Context) error {
	on, err := h.flags.Enabled(ctx, flags.CompatAPI)
	if err != nil {
		return err
	}
	if !on {
		return errOff
	}
	return nil
}

// ListModels lists the models of compat.models in order, owned by "palyra", then those
// of each provider with a base URL, by provider name, owned by the provider. A model id
// listed twice is listed once, where it comes first.
func (h *Handler) ListModels(ctx context.Context, _ *connect.Request[compatv1.ListModelsRequest]) (*connect.Response[compatv1.ListModelsResponse], error) {
	if err := h.enabled(ctx); err != nil {
		return nil, err
	}
	c := h.config()
	res := &compatv1.ListModelsResponse{}
	seen := map[string]bool{}
	add := func(id, owner string) {
		if !seen[id] {
			seen[id] = true
			res.Models = append(res.Models, &compatv1.Model{Id: id, OwnedBy: owner})
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
	return connect.NewResponse(res), nil
}
