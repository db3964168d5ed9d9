package vault

import (
	"context"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	"github.com/palyra/palyra/gen/go/palyra/controlplane/v1/controlplanev1connect"
	"github.com/palyra/palyra/server/internal/access"
)

// Handler serves SecretService.
type Handler struct {
	v *Vault
}

var _ controlplanev1connect.SecretServiceHandler = (*Handler)(nil)

// NewHandler returns the SecretService handler of v.
func NewHandler(v *Vault) *Handler { return &Handler{v: v} }

// PutSecret stores a new version of a secret.
func (h *Handler) PutSecret(ctx context.Context, req *connect.Request[controlplanev1.PutSecretRequest]) (*connect.Response[controlplanev1.PutSecretResponse], error) {
	p, err := access.Caller(ctx)
	if err != nil {
		return nil, err
	}
	m := req.Msg
	defer clear(m.Value)
	s, err := h.v.Put(ctx, PutRequest{
		Name: m.GetName(), Value: m.GetValue(), Description: m.Description, Labels: m.GetLabels(),
		ExpectedVersion: m.ExpectedVersion, By: p.ID(),
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&controlplanev1.PutSecretResponse{Secret: secretProto(s)}), nil
}

// ListSecrets lists secrets, metadata only.
func (h *Handler) ListSecrets(ctx context.Context, req *connect.Request[controlplanev1.ListSecretsRequest]) (*connect.Response[controlplanev1.ListSecretsResponse], error) {
	list, next, err := h.v.List(ctx, int(req.Msg.GetPageSize()), req.Msg.GetPageToken(), req.Msg.GetIncludeDeleted())
	if err != nil {
		return nil, err
	}
	res := &controlplanev1.ListSecretsResponse{Secrets: make([]*controlplanev1.Secret, len(list)), NextPageToken: next}
	for i, s := range list {
		res.Secrets[i] = secretProto(s)
	}
	return connect.NewResponse(res), nil
}

// GetSecret returns a secret's metadata and versions.
func (h *Handler) GetSecret(ctx context.Context, req *connect.Request[controlplanev1.GetSecretRequest]) (*connect.Response[controlplanev1.GetSecretResponse], error) {
	s, err := h.v.Get(ctx, req.Msg.GetName())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&controlplanev1.GetSecretResponse{Secret: secretProto(s)}), nil
}

// RevealSecret returns a version's value to an owner, for a reason.
func (h *Handler) RevealSecret(ctx context.Context, req *connect.Request[controlplanev1.RevealSecretRequest]) (*connect.Response[controlplanev1.RevealSecretResponse], error) {
	p, err := access.Caller(ctx)
	if err != nil {
		return nil, err
	}
	r, err := h.v.Reveal(ctx, req.Msg.GetName(), req.Msg.GetVersion(), req.Msg.GetReason(), p.ID())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&controlplanev1.RevealSecretResponse{Name: r.Name, Version: r.Version, Value: r.Value}), nil
}

// DeleteSecret soft-deletes a secret; with force even when settings refer to it.
func (h *Handler) DeleteSecret(ctx context.Context, req *connect.Request[controlplanev1.DeleteSecretRequest]) (*connect.Response[controlplanev1.DeleteSecretResponse], error) {
	p, err := access.Caller(ctx)
	if err != nil {
		return nil, err
	}
	s, referred, err := h.v.Delete(ctx, req.Msg.GetName(), p.ID(), req.Msg.GetForce())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&controlplanev1.DeleteSecretResponse{Secret: secretProto(s), ReferredBy: referred}), nil
}

// RestoreSecret brings back a deleted secret.
func (h *Handler) RestoreSecret(ctx context.Context, req *connect.Request[controlplanev1.RestoreSecretRequest]) (*connect.Response[controlplanev1.RestoreSecretResponse], error) {
	p, err := access.Caller(ctx)
	if err != nil {
		return nil, err
	}
	s, err := h.v.Restore(ctx, req.Msg.GetName(), p.ID())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&controlplanev1.RestoreSecretResponse{Secret: secretProto(s)}), nil
}

// DestroySecretVersion erases a version's value for good; with force even when
// settings refer to it.
func (h *Handler) DestroySecretVersion(ctx context.Context, req *connect.Request[controlplanev1.DestroySecretVersionRequest]) (*connect.Response[controlplanev1.DestroySecretVersionResponse], error) {
	p, err := access.Caller(ctx)
	if err != nil {
		return nil, err
	}
	s, referred, err := h.v.Destroy(ctx, req.Msg.GetName(), req.Msg.GetVersion(), p.ID(), req.Msg.GetForce())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&controlplanev1.DestroySecretVersionResponse{Secret: secretProto(s), ReferredBy: referred}), nil
}

// secretProto converts a Secret.
func secretProto(s Secret) *controlplanev1.Secret {
	out := &controlplanev1.Secret{
		Id: s.ID, Name: s.Name, Description: s.Description, Labels: s.Labels, LatestVersion: s.LatestVersion,
		CreateTime: timestamppb.New(s.CreatedAt), CreatedBy: s.CreatedBy,
		UpdateTime: timestamppb.New(s.UpdatedAt), UpdatedBy: s.UpdatedBy,
		DeleteTime: ts(s.DeletedAt), DeletedBy: s.DeletedBy,
		LastReadTime: ts(s.LastReadAt), LastReadBy: s.LastReadBy,
	}
	for _, v := range s.Versions {
		out.Versions = append(out.Versions, &controlplanev1.SecretVersion{
			Version: v.Number, CreateTime: timestamppb.New(v.CreatedAt), CreatedBy: v.CreatedBy,
			DestroyTime: ts(v.DestroyedAt), DestroyedBy: v.DestroyedBy, KekId: v.KEKID,
		})
	}
	return out
}

// ts converts an optional time.
func ts(t *time.Time) *timestamppb.Timestamp {
	if t == nil {
		return nil
	}
	return timestamppb.New(*t)
}
