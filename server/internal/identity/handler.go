package identity

import (
	"context"

	"connectrpc.com/connect"

	nodev1 "github.com/palyra/palyra/gen/go/palyra/node/v1"
)

// TrustHandler serves the trust bootstrap of NodeService: what a node that is not
// paired yet needs to pin the CA.
type TrustHandler struct {
	authority *Authority
	version   string
}

// NewTrustHandler returns the handler for the authority and the daemon's version.
func NewTrustHandler(a *Authority, version string) *TrustHandler {
	return &TrustHandler{authority: a, version: version}
}

// GetServerInfo returns the CA certificate, its fingerprint and the server version.
func (h *TrustHandler) GetServerInfo(context.Context, *connect.Request[nodev1.GetServerInfoRequest]) (*connect.Response[nodev1.GetServerInfoResponse], error) {
	return connect.NewResponse(&nodev1.GetServerInfoResponse{
		ServerVersion:    h.version,
		CaCertificatePem: string(h.authority.PEM()),
		CaFingerprint:    h.authority.Fingerprint(),
	}), nil
}
