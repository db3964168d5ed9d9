package dispatch

import (
	"context"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/palyra/palyra/gen/dbsqlc"
	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	"github.com/palyra/palyra/gen/go/palyra/controlplane/v1/controlplanev1connect"
	"github.com/palyra/palyra/server/internal/pagetoken"
	"github.com/palyra/palyra/server/internal/store"
)

// NodesHandler serves NodeInventoryService: the inventory of nodes with their presence.
type NodesHandler struct {
	s *Service
}

var _ controlplanev1connect.NodeInventoryServiceHandler = (*NodesHandler)(nil)

// NodesHandler returns the NodeInventoryService handler.
func (s *Service) NodesHandler() *NodesHandler { return &NodesHandler{s: s} }

// presenceNames are the presences as ListNodes filters them.
var presenceNames = map[controlplanev1.Presence]string{
	controlplanev1.Presence_PRESENCE_ONLINE:  "online",
	controlplanev1.Presence_PRESENCE_STALE:   "stale",
	controlplanev1.Presence_PRESENCE_OFFLINE: "offline",
}

// presence is a node's presence at now: offline without a session; with one, online
// while its last activity is within three heartbeat intervals, stale within ten, else
// offline (its replica vanished).
func (s *Service) presence(d dbsqlc.Device, now time.Time) controlplanev1.Presence {
	hb := s.opts.Heartbeat
	switch {
	case d.SessionID == nil || d.LastSeenAt == nil:
		return controlplanev1.Presence_PRESENCE_OFFLINE
	case d.LastSeenAt.After(now.Add(-staleAfter * hb)):
		return controlplanev1.Presence_PRESENCE_ONLINE
	case d.LastSeenAt.After(now.Add(-offlineAfter * hb)):
		return controlplanev1.Presence_PRESENCE_STALE
	}
	return controlplanev1.Presence_PRESENCE_OFFLINE
}

// ListNodes lists nodes, newest first.
func (h *NodesHandler) ListNodes(ctx context.Context, req *connect.Request[controlplanev1.ListNodesRequest]) (*connect.Response[controlplanev1.ListNodesResponse], error) {
	m := req.Msg
	limit := int(m.GetPageSize())
	if limit == 0 {
		limit = 100
	}
	labels, err := labelsJSON(m.GetLabels())
	if err != nil {
		return nil, fmt.Errorf("dispatch: label filter: %w", err)
	}
	hb := h.s.opts.Heartbeat
	now := h.s.opts.Now()
	params := dbsqlc.ListNodesParams{
		Now: now, IncludeRevoked: m.GetIncludeRevoked(), Capability: m.GetCapability(), Labels: labels,
		Presence: presenceNames[m.GetPresence()], StaleAfterSeconds: (staleAfter * hb).Seconds(),
		OfflineAfterSeconds: (offlineAfter * hb).Seconds(), PageLimit: int32(limit) + 1,
	}
	if m.GetPageToken() != "" {
		at, id, err := pagetoken.Decode(m.GetPageToken())
		if err != nil {
			return nil, err // pagetoken.ErrMalformed: apiserver's errors.go maps it
		}
		params.AfterCreatedAt, params.AfterID = &at, id
	}
	rows, err := h.s.opts.Store.Q().ListNodes(ctx, params)
	if err != nil {
		return nil, fmt.Errorf("dispatch: list nodes: %w", err)
	}
	res := &controlplanev1.ListNodesResponse{}
	rows, res.NextPageToken = pagetoken.Page(rows, limit, func(r dbsqlc.ListNodesRow) (time.Time, string) {
		return r.Device.CreatedAt, r.Device.ID
	})
	for _, r := range rows {
		n, err := h.s.nodeProto(r.Device, r.CertificateNotAfter, now)
		if err != nil {
			return nil, err
		}
		res.Nodes = append(res.Nodes, n)
	}
	return connect.NewResponse(res), nil
}

// GetNode returns one node.
func (h *NodesHandler) GetNode(ctx context.Context, req *connect.Request[controlplanev1.GetNodeRequest]) (*connect.Response[controlplanev1.GetNodeResponse], error) {
	now := h.s.opts.Now()
	row, err := h.s.opts.Store.Q().GetNode(ctx, dbsqlc.GetNodeParams{ID: req.Msg.GetId(), Now: now})
	if errors.Is(err, store.ErrNotFound) {
		return nil, errNoNode(req.Msg.GetId())
	}
	if err != nil {
		return nil, fmt.Errorf("dispatch: node %s: %w", req.Msg.GetId(), err)
	}
	n, err := h.s.nodeProto(row.Device, row.CertificateNotAfter, now)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&controlplanev1.GetNodeResponse{Node: n}), nil
}

// nodeProto is a node as the API shows it; certNotAfter is the epoch when it has no
// valid certificate.
func (s *Service) nodeProto(d dbsqlc.Device, certNotAfter, now time.Time) (*controlplanev1.Node, error) {
	labels, err := parseLabels(d.Labels)
	if err != nil {
		return nil, err
	}
	reported, err := parseLabels(d.ReportedLabels)
	if err != nil {
		return nil, err
	}
	caps, err := parseCapabilities(d.Capabilities)
	if err != nil {
		return nil, err
	}
	n := &controlplanev1.Node{
		Id: d.ID, Name: d.Name, Platform: d.Platform, AgentVersion: d.AgentVersion,
		Labels: labels, ReportedLabels: reported, Capabilities: capabilityProtos(caps),
		CreateTime: timestamppb.New(d.CreatedAt), LastSeenTime: timestamp(d.LastSeenAt),
		Presence: s.presence(d, now), Revoked: d.RevokedAt != nil, ProtocolVersion: uint32(d.ProtocolVersion),
	}
	if n.Presence != controlplanev1.Presence_PRESENCE_OFFLINE && d.AttachedReplica != nil {
		n.AttachedReplica = *d.AttachedReplica
	}
	if certNotAfter.Unix() > 0 {
		n.CertificateExpireTime = timestamppb.New(certNotAfter)
	}
	return n, nil
}
