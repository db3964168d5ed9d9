package flags

import (
	"context"
	"errors"
	"strconv"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	accessv1 "github.com/palyra/palyra/gen/go/palyra/access/v1"
	"github.com/palyra/palyra/gen/go/palyra/access/v1/accessv1connect"
	"github.com/palyra/palyra/server/internal/access"
	"github.com/palyra/palyra/server/internal/audit"
	"github.com/palyra/palyra/server/internal/errdefs"
)

// HandlerOptions are the FeatureFlagService handler's dependencies.
type HandlerOptions struct {
	Registry *Registry
}

// Handler serves FeatureFlagService.
type Handler struct {
	opts HandlerOptions
}

var _ accessv1connect.FeatureFlagServiceHandler = (*Handler)(nil)

// NewHandler returns the FeatureFlagService handler.
func NewHandler(opts HandlerOptions) *Handler { return &Handler{opts: opts} }

// ListFlags lists the feature flags.
func (h *Handler) ListFlags(ctx context.Context, _ *connect.Request[accessv1.ListFlagsRequest]) (*connect.Response[accessv1.ListFlagsResponse], error) {
	list, err := h.opts.Registry.List(ctx)
	if err != nil {
		return nil, err
	}
	res := &accessv1.ListFlagsResponse{Flags: make([]*accessv1.Flag, len(list))}
	for i, f := range list {
		res.Flags[i] = flagProto(f)
	}
	return connect.NewResponse(res), nil
}

// SetFlag turns a flag on or off, refusing to break a dependency.
func (h *Handler) SetFlag(ctx context.Context, req *connect.Request[accessv1.SetFlagRequest]) (*connect.Response[accessv1.SetFlagResponse], error) {
	p, err := access.Caller(ctx)
	if err != nil {
		return nil, err
	}
	key := req.Msg.GetKey()
	audit.SetTarget(ctx, "flag:"+key+"="+strconv.FormatBool(req.Msg.GetEnabled()))
	// A *DependencyError keeps its own message.
	f, err := h.opts.Registry.Set(ctx, key, req.Msg.GetEnabled(), p.ID())
	switch {
	case errors.Is(err, ErrUnknown):
		return nil, errdefs.Wrap(err, errdefs.NotFound, "there is no feature flag %q (see ListFlags)", key)
	case err != nil:
		return nil, err
	}
	return connect.NewResponse(&accessv1.SetFlagResponse{Flag: flagProto(f)}), nil
}

func flagProto(f Flag) *accessv1.Flag {
	out := &accessv1.Flag{
		Key: f.Key, Description: f.Description, DependsOn: append([]string{}, f.DependsOn...),
		Enabled: f.Enabled, DefaultEnabled: f.Default, UpdatedBy: f.UpdatedBy,
	}
	if f.UpdatedAt != nil {
		out.UpdateTime = timestamppb.New(*f.UpdatedAt)
	}
	switch f.Stage {
	case Experimental:
		out.Stage = accessv1.FlagStage_FLAG_STAGE_EXPERIMENTAL
	case Beta:
		out.Stage = accessv1.FlagStage_FLAG_STAGE_BETA
	case Stable:
		out.Stage = accessv1.FlagStage_FLAG_STAGE_STABLE
	}
	return out
}
