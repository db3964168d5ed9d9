package browser

import (
	"context"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	browserv1 "github.com/palyra/palyra/gen/go/palyra/browser/v1"
	"github.com/palyra/palyra/gen/go/palyra/browser/v1/browserv1connect"
	"github.com/palyra/palyra/server/internal/access"
)

// Handler serves BrowserProfileService.
type Handler struct {
	p *Profiles
}

var _ browserv1connect.BrowserProfileServiceHandler = (*Handler)(nil)

// NewHandler returns the BrowserProfileService handler of p.
func NewHandler(p *Profiles) *Handler { return &Handler{p: p} }

// CreateBrowserProfile stores a new profile.
func (h *Handler) CreateBrowserProfile(ctx context.Context, req *connect.Request[browserv1.CreateBrowserProfileRequest]) (*connect.Response[browserv1.CreateBrowserProfileResponse], error) {
	c, err := access.Caller(ctx)
	if err != nil {
		return nil, err
	}
	pr, warnings, err := h.p.Create(ctx, req.Msg.GetSpec(), c.ID())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&browserv1.CreateBrowserProfileResponse{Profile: ProfileProto(pr), Warnings: warnings}), nil
}

// GetBrowserProfile returns a profile.
func (h *Handler) GetBrowserProfile(ctx context.Context, req *connect.Request[browserv1.GetBrowserProfileRequest]) (*connect.Response[browserv1.GetBrowserProfileResponse], error) {
	pr, warnings, err := h.p.Get(ctx, Ref{ID: req.Msg.GetId(), Name: req.Msg.GetName()})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&browserv1.GetBrowserProfileResponse{Profile: ProfileProto(pr), Warnings: warnings}), nil
}

// ListBrowserProfiles lists profiles.
func (h *Handler) ListBrowserProfiles(ctx context.Context, req *connect.Request[browserv1.ListBrowserProfilesRequest]) (*connect.Response[browserv1.ListBrowserProfilesResponse], error) {
	list, next, err := h.p.List(ctx, req.Msg.GetLabelSelector(), int(req.Msg.GetPageSize()), req.Msg.GetPageToken())
	if err != nil {
		return nil, err
	}
	res := &browserv1.ListBrowserProfilesResponse{Profiles: make([]*browserv1.BrowserProfile, len(list)), NextPageToken: next}
	for i, pr := range list {
		res.Profiles[i] = ProfileProto(pr)
	}
	return connect.NewResponse(res), nil
}

// UpdateBrowserProfile replaces a profile's definition.
func (h *Handler) UpdateBrowserProfile(ctx context.Context, req *connect.Request[browserv1.UpdateBrowserProfileRequest]) (*connect.Response[browserv1.UpdateBrowserProfileResponse], error) {
	c, err := access.Caller(ctx)
	if err != nil {
		return nil, err
	}
	m := req.Msg
	pr, warnings, err := h.p.Update(ctx, Ref{ID: m.GetId(), Name: m.GetName()}, m.GetSpec(), m.GetExpectedRevision(), c.ID())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&browserv1.UpdateBrowserProfileResponse{Profile: ProfileProto(pr), Warnings: warnings}), nil
}

// DeleteBrowserProfile deletes a profile.
func (h *Handler) DeleteBrowserProfile(ctx context.Context, req *connect.Request[browserv1.DeleteBrowserProfileRequest]) (*connect.Response[browserv1.DeleteBrowserProfileResponse], error) {
	m := req.Msg
	pr, err := h.p.Delete(ctx, Ref{ID: m.GetId(), Name: m.GetName()}, m.ExpectedRevision)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&browserv1.DeleteBrowserProfileResponse{Profile: ProfileProto(pr)}), nil
}

// ResetBrowserProfileState drops a profile's state.
func (h *Handler) ResetBrowserProfileState(ctx context.Context, req *connect.Request[browserv1.ResetBrowserProfileStateRequest]) (*connect.Response[browserv1.ResetBrowserProfileStateResponse], error) {
	m := req.Msg
	pr, dropped, err := h.p.ResetState(ctx, Ref{ID: m.GetId(), Name: m.GetName()}, m.ExpectedRevision)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&browserv1.ResetBrowserProfileStateResponse{Profile: ProfileProto(pr), DroppedVersions: dropped}), nil
}

// ProfileProto converts a profile.
func ProfileProto(pr Profile) *browserv1.BrowserProfile {
	out := &browserv1.BrowserProfile{
		Id: pr.ID, Spec: proto.CloneOf(pr.Spec), Revision: pr.Revision,
		StateVersion: pr.State.Version, StateSizeBytes: pr.State.SizeBytes,
		CreateTime: timestamppb.New(pr.CreatedAt), UpdateTime: timestamppb.New(pr.UpdatedAt),
		CreatedBy: pr.CreatedBy, UpdatedBy: pr.UpdatedBy,
	}
	if pr.State.Version > 0 {
		out.StateSaveTime = timestamppb.New(pr.State.SavedAt)
	}
	return out
}
