package dispatch

import "context"

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

// PresenceOf returns a node's presence now; a node that does not exist is NotFound.
func (s *Service) PresenceOf(ctx context.Context, id string) (Presence, error) {
	n, err := s.GetNode(ctx, id)
	return n.Presence, err
}
