package dispatch

import (
	"context"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"

	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	"github.com/palyra/palyra/gen/go/palyra/controlplane/v1/controlplanev1connect"
	"github.com/palyra/palyra/server/internal/pagetoken"
	"github.com/palyra/palyra/server/internal/store"
)

// ListNodes returns a page of nodes, newest first, and the token of the next page.
func (s *Service) ListNodes(ctx context.Context, f NodeFilter) ([]Node, string, error) {
	limit := f.PageSize
	if limit <= 0 {
		limit = 100
	}
	labels, err := labelsJSON(f.Labels)
	if err != nil {
		return nil, "", fmt.Errorf("dispatch: label filter: %w", err)
	}
	var after *time.Time
	var afterID string
	if f.PageToken != "" {
		at, id, err := pagetoken.Decode(f.PageToken)
		if err != nil {
			return nil, "", err // pagetoken.ErrMalformed: apiserver's errors.go maps it
		}
		after, afterID = &at, id
	}
	now := s.opts.Now()
	rows, err := s.db.listNodes(ctx, f, labels, s.silenceUnit(), now, after, afterID, limit+1)
	if err != nil {
		return nil, "", fmt.Errorf("dispatch: list nodes: %w", err)
	}
	rows, next := pagetoken.Page(rows, limit, func(r storedNode) (time.Time, string) { return r.createdAt, r.id })
	nodes := make([]Node, 0, len(rows))
	for _, r := range rows {
		n, err := s.nodeOf(r, now)
		if err != nil {
			return nil, "", err
		}
		nodes = append(nodes, n)
	}
	return nodes, next, nil
}

// GetNode returns a node.
func (s *Service) GetNode(ctx context.Context, id string) (Node, error) {
	now := s.opts.Now()
	row, err := s.db.node(ctx, id, now)
	if errors.Is(err, store.ErrNotFound) {
		return Node{}, errNoNode(id)
	}
	if err != nil {
		return Node{}, fmt.Errorf("dispatch: node %s: %w", id, err)
	}
	return s.nodeOf(row, now)
}

// nodeOf is a stored node as it stands at now.
func (s *Service) nodeOf(r storedNode, now time.Time) (Node, error) {
	labels, err := parseLabels(r.labels)
	if err != nil {
		return Node{}, err
	}
	reported, err := parseLabels(r.reportedLabels)
	if err != nil {
		return Node{}, err
	}
	caps, err := parseCapabilities(r.capabilities)
	if err != nil {
		return Node{}, err
	}
	n := Node{
		ID: r.id, Name: r.name, Platform: r.platform, AgentVersion: r.agentVersion,
		Labels: labels, ReportedLabels: reported, Capabilities: caps, CreatedAt: r.createdAt,
		LastSeenAt: r.lastSeenAt, Presence: s.presence(r, now), Revoked: r.revoked, ProtocolVersion: r.protocolVersion,
	}
	if n.Presence != PresenceOffline && r.attachedReplica != nil {
		n.AttachedReplica = *r.attachedReplica
	}
	if r.certNotAfter.Unix() > 0 {
		n.CertificateNotAfter = r.certNotAfter
	}
	return n, nil
}

// presence is a node's presence at now: offline without a session; with one, online
// while its last activity is within three heartbeat intervals, stale within ten, else
// offline (its replica vanished).
func (s *Service) presence(r storedNode, now time.Time) Presence {
	hb := s.silenceUnit()
	switch {
	case r.sessionID == nil || r.lastSeenAt == nil:
		return PresenceOffline
	case r.lastSeenAt.After(now.Add(-staleAfter * hb)):
		return PresenceOnline
	case r.lastSeenAt.After(now.Add(-offlineAfter * hb)):
		return PresenceStale
	}
	return PresenceOffline
}

// NodesHandler serves NodeInventoryService: the inventory of nodes with their presence.
type NodesHandler struct {
	s *Service
}

var _ controlplanev1connect.NodeInventoryServiceHandler = (*NodesHandler)(nil)

// NodesHandler returns the NodeInventoryService handler.
func (s *Service) NodesHandler() *NodesHandler { return &NodesHandler{s: s} }

// ListNodes lists nodes, newest first.
func (h *NodesHandler) ListNodes(ctx context.Context, req *connect.Request[controlplanev1.ListNodesRequest]) (*connect.Response[controlplanev1.ListNodesResponse], error) {
	m := req.Msg
	nodes, next, err := h.s.ListNodes(ctx, NodeFilter{
		IncludeRevoked: m.GetIncludeRevoked(), Capability: m.GetCapability(), Labels: m.GetLabels(),
		Presence: keyOf(presenceProtos, m.GetPresence()), PageSize: int(m.GetPageSize()), PageToken: m.GetPageToken(),
	})
	if err != nil {
		return nil, err
	}
	res := &controlplanev1.ListNodesResponse{NextPageToken: next}
	for _, n := range nodes {
		res.Nodes = append(res.Nodes, nodeProto(n))
	}
	return connect.NewResponse(res), nil
}

// GetNode returns one node.
func (h *NodesHandler) GetNode(ctx context.Context, req *connect.Request[controlplanev1.GetNodeRequest]) (*connect.Response[controlplanev1.GetNodeResponse], error) {
	n, err := h.s.GetNode(ctx, req.Msg.GetId())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&controlplanev1.GetNodeResponse{Node: nodeProto(n)}), nil
}
