package dispatch

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/palyra/palyra/server/internal/store"
)

// NodesOffering returns every node, revoked or not and whatever its presence, that
// announced the capability name: all the pages of ListNodes.
func (s *Service) NodesOffering(ctx context.Context, name string) ([]Node, error) {
	var out []Node
	f := NodeFilter{IncludeRevoked: true, Capability: name}
	for {
		page, next, err := s.ListNodes(ctx, f)
		if err != nil {
			return nil, err
		}
		out = append(out, page...)
		if next == "" {
			return out, nil
		}
		f.PageToken = next
	}
}

// NodeByID returns a node with its presence now; a node that does not exist is NotFound.
// (GetNode under a name of its own: other packages do not call methods named as
// dispatch's queries.)
func (s *Service) NodeByID(ctx context.Context, id string) (Node, error) {
	return s.GetNode(ctx, id)
}

// PresenceOf returns a node's presence now; a node that does not exist is NotFound.
func (s *Service) PresenceOf(ctx context.Context, id string) (Presence, error) {
	n, err := s.GetNode(ctx, id)
	return n.Presence, err
}

// InFlight counts, for each of nodes, its dispatches of any of capabilities that have not
// ended and whose cancellation no one asked for, across every replica, in one query; a
// node without any maps to 0.
func (s *Service) InFlight(ctx context.Context, nodes, capabilities []string) (map[string]int, error) {
	counts, err := s.db.inFlight(ctx, nodes, capabilities)
	if err != nil {
		return nil, fmt.Errorf("dispatch: dispatches in flight: %w", err)
	}
	return counts, nil
}

// Abandon ends a dispatch whose caller gave up on it because its node went away: it is
// cancelled at once with reason, without waiting for the node's report, so that the
// node never receives it again when it reconnects (what it reports of it later is
// ignored). A dispatch that ended already is FailedPrecondition, as for Cancel.
func (s *Service) Abandon(ctx context.Context, id, reason string) (Dispatch, error) {
	if reason == "" || strings.Contains(reason, "\x00") {
		return Dispatch{}, errInvalid("reason must be a text without NUL characters")
	}
	d, err := s.db.abandon(ctx, id, reason, s.opts.Now())
	if errors.Is(err, store.ErrNotFound) {
		if d, err = s.Get(ctx, id); err != nil {
			return d, err
		}
		return d, errFailedPrecondition("dispatch %s already ended (%s)", id, d.State)
	}
	if err != nil {
		return d, fmt.Errorf("dispatch: abandon %s: %w", id, err)
	}
	s.log.Info("dispatch abandoned", "dispatch_id", id, "node_id", d.NodeID, "reason", reason)
	s.metrics.ended(StateCancelled, "abandoned")
	return d, nil
}

// CheckInput refuses, as Create would, a dispatch of capability on a node that does not
// offer it now or whose input its schema refuses (Invalid, naming the capability),
// without creating one: a caller that must ask a human first checks before it asks.
func (s *Service) CheckInput(ctx context.Context, nodeID, capability, input string) error {
	if strings.TrimSpace(input) == "" {
		input = "{}"
	}
	return s.checkNode(ctx, nodeID, s.sessions.get(nodeID), capability, input)
}
