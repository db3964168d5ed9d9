// Package compat is palyrad's OpenAI-compatible API: the CompatService handler, which
// the OpenAI REST endpoints will call too.
package compat

import (
	"context"

	"connectrpc.com/connect"

	compatv1 "github.com/palyra/palyra/gen/go/palyra/compat/v1"
	"github.com/palyra/palyra/gen/go/palyra/compat/v1/compatv1connect"
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
	models func() []string
	flags  Flags
}

var _ compatv1connect.CompatServiceHandler = (*Handler)(nil)

// NewHandler returns the CompatService handler; models returns the configured model
// ids, read at every list (they may change while the daemon runs), and must not be
// modified by the caller.
func NewHandler(models func() []string, f Flags) *Handler {
	return &Handler{models: models, flags: f}
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

// ListModels lists the configured models in order.
func (h *Handler) ListModels(ctx context.Context, _ *connect.Request[compatv1.ListModelsRequest]) (*connect.Response[compatv1.ListModelsResponse], error) {
	if err := h.enabled(ctx); err != nil {
		return nil, err
	}
	models := h.models()
	res := &compatv1.ListModelsResponse{Models: make([]*compatv1.Model, len(models))}
	for i, id := range models {
		res.Models[i] = &compatv1.Model{Id: id, OwnedBy: "palyra"}
	}
	return connect.NewResponse(res), nil
}
