package masterkey

import (
	"context"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	"github.com/palyra/palyra/gen/go/palyra/controlplane/v1/controlplanev1connect"
	"github.com/palyra/palyra/server/internal/access"
)

// Handler serves MasterKeyService.
type Handler struct {
	s *Service
}

var _ controlplanev1connect.MasterKeyServiceHandler = (*Handler)(nil)

// Handler returns the MasterKeyService handler.
func (s *Service) Handler() *Handler { return &Handler{s: s} }

// GetMasterKeyStatus reports where a master key rotation stands.
func (h *Handler) GetMasterKeyStatus(ctx context.Context, _ *connect.Request[controlplanev1.GetMasterKeyStatusRequest]) (*connect.Response[controlplanev1.GetMasterKeyStatusResponse], error) {
	st, err := h.s.Status(ctx)
	if err != nil {
		return nil, err
	}
	res := &controlplanev1.GetMasterKeyStatusResponse{
		ReplicaId: h.s.opts.ReplicaID, KekIds: st.KEKIDs, Usage: usageProto(st.Usage),
		Replicas: make([]*controlplanev1.ReplicaKeys, len(st.Replicas)),
	}
	for i, r := range st.Replicas {
		res.Replicas[i] = &controlplanev1.ReplicaKeys{
			ReplicaId: r.ID, Hostname: r.Hostname, Version: r.Version, KekIds: r.KEKIDs,
			StartTime: timestamppb.New(r.StartedAt), LastSeenTime: timestamppb.New(r.LastSeen), Live: r.Live,
		}
	}
	if st.LastRewrap != nil {
		res.LastRewrap = rewrapProto(st.LastRewrap)
	}
	return connect.NewResponse(res), nil
}

// RewrapKeys re-wraps every wrapped key to the answering replica's primary key.
func (h *Handler) RewrapKeys(ctx context.Context, _ *connect.Request[controlplanev1.RewrapKeysRequest]) (*connect.Response[controlplanev1.RewrapKeysResponse], error) {
	p, err := access.Caller(ctx)
	if err != nil {
		return nil, err
	}
	rw, counts, err := h.s.Rewrap(ctx, p.ID())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&controlplanev1.RewrapKeysResponse{Rewrap: rewrapProto(rw), Rewrapped: usageProto(counts)}), nil
}

func usageProto(us []Usage) []*controlplanev1.WrappedKeyUsage {
	out := make([]*controlplanev1.WrappedKeyUsage, len(us))
	for i, u := range us {
		out[i] = &controlplanev1.WrappedKeyUsage{Kind: u.Kind, KekId: u.KEKID, Count: u.Count}
	}
	return out
}

func rewrapProto(r *Rewrap) *controlplanev1.MasterKeyRewrap {
	out := &controlplanev1.MasterKeyRewrap{
		Id: r.ID, KekId: r.KEKID, StartedBy: r.StartedBy, ReplicaId: r.ReplicaID,
		StartTime: timestamppb.New(r.StartedAt), Rewrapped: r.Rewrapped,
	}
	if r.FinishedAt != nil {
		out.FinishTime = timestamppb.New(*r.FinishedAt)
	}
	return out
}
