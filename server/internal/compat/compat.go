// Package compat is palyrad's OpenAI-compatible API: the CompatService handler, which
// the OpenAI REST endpoints will call too.
package compat

import (
	"context"

	"connectrpc.com/connect"

	compatv1 "github.com/palyra/palyra/gen/go/palyra/compat/v1"
	"github.com/palyra/palyra/gen/go/palyra/compat/v1/compatv1connect"
)

// Handler serves CompatService.
type Handler struct {
	models []string
}

var _ compatv1connect.CompatServiceHandler = (*Handler)(nil)

// NewHandler returns the CompatService handler for the configured model ids.
func NewHandler(models []string) *Handler {
	return &Handler{models: append([]string(nil), models...)}
}

// ListModels lists the configured models in order.
func (h *Handler) ListModels(context.Context, *connect.Request[compatv1.ListModelsRequest]) (*connect.Response[compatv1.ListModelsResponse], error) {
	res := &compatv1.ListModelsResponse{Models: make([]*compatv1.Model, len(h.models))}
	for i, id := range h.models {
		res.Models[i] = &compatv1.Model{Id: id, OwnedBy: "palyra"}
	}
	return connect.NewResponse(res), nil
}
