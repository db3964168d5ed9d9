package pairing

import (
	"context"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/palyra/palyra/gen/dbsqlc"
	nodev1 "github.com/palyra/palyra/gen/go/palyra/node/v1"
	"github.com/palyra/palyra/server/internal/audit"
	"github.com/palyra/palyra/server/internal/ratelimit"
)

// NodeHandler serves the pairing RPCs of NodeService: StartPairing, GetPairingStatus
// and WatchPairing. They are public (the node has no certificate yet): StartPairing is
// authorised by the pairing code, the others by the pairing secret StartPairing
// returned. The daemon composes it with the rest of NodeService.
type NodeHandler struct {
	s *Service
}

// StartPairing presents a pairing code and a CSR and creates a pairing request. Starts
// are rate limited per remote address before anything else is looked at; every failure
// of the code gets the same PermissionDenied answer. The answer says what the device the
// request names amounts to (DeviceClaim).
func (h *NodeHandler) StartPairing(ctx context.Context, req *connect.Request[nodev1.StartPairingRequest]) (*connect.Response[nodev1.StartPairingResponse], error) {
	host := ratelimit.Host(req.Peer().Addr)
	if wait, ok := h.s.starts.Take(host); !ok {
		h.s.log.Warn("pairing start refused: too many attempts from this address", "source_address", host)
		return nil, errRateLimited("pairing attempts", wait)
	}
	p := startParams{
		code:             presentedCode{pin: req.Msg.GetPin(), qrCode: req.Msg.GetQrCode()},
		csr:              req.Msg.GetCsr(),
		deviceName:       req.Msg.GetDeviceName(),
		platform:         req.Msg.GetPlatform(),
		agentVersion:     req.Msg.GetAgentVersion(),
		previousDeviceID: req.Msg.GetDeviceId(),
		sourceAddress:    host,
	}
	if dp := req.Msg.GetDevicePossession(); dp != nil {
		p.proof = &proof{certificate: dp.GetCertificate(), signature: dp.GetSignature()}
	}
	st, err := h.s.start(ctx, p)
	if err != nil {
		return nil, err
	}
	audit.SetTarget(ctx, "pairing_request:"+st.row.ID)
	return connect.NewResponse(&nodev1.StartPairingResponse{
		RequestId:            st.row.ID,
		PairingSecret:        st.secret,
		ExpireTime:           timestamppb.New(st.row.ExpiresAt),
		PublicKeyFingerprint: st.row.PublicKeyFingerprint,
		DeviceClaim:          deviceClaims[st.row.DeviceClaim],
	}), nil
}

// takeFollow takes a status call or watch from the caller's address off its limit, or
// refuses it.
func (h *NodeHandler) takeFollow(peer connect.Peer) error {
	host := ratelimit.Host(peer.Addr)
	if wait, ok := h.s.follows.Take(host); !ok {
		h.s.log.Warn("pairing status refused: too many calls from this address", "source_address", host)
		return errRateLimited("pairing status calls", wait)
	}
	return nil
}

// GetPairingStatus returns the state of the caller's request; once it is approved, the
// certificate and the CA, which completes the request. Calls are rate limited per
// remote address before anything is looked up.
func (h *NodeHandler) GetPairingStatus(ctx context.Context, req *connect.Request[nodev1.GetPairingStatusRequest]) (*connect.Response[nodev1.GetPairingStatusResponse], error) {
	if err := h.takeFollow(req.Peer()); err != nil {
		return nil, err
	}
	id := req.Msg.GetRequestId()
	if !isULID(id) {
		return nil, errStatusRefused()
	}
	r, err := h.s.follow(ctx, id, req.Msg.GetPairingSecret())
	if err != nil {
		return nil, err
	}
	audit.SetTarget(ctx, "pairing_request:"+id)
	st, err := statusProto(r, h.s.opts.Authority.PEM())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&nodev1.GetPairingStatusResponse{Status: st}), nil
}

// WatchPairing streams the state of the caller's request: at once, then on every
// change, until the request is completed, rejected or expired, the client goes away, or
// a minute after the request's expiry. Changes are learnt from the database's
// notifications (whichever replica made them), and by re-reading every 5 s. Watches
// share the rate limit of GetPairingStatus.
func (h *NodeHandler) WatchPairing(ctx context.Context, req *connect.Request[nodev1.WatchPairingRequest], stream *connect.ServerStream[nodev1.WatchPairingResponse]) error {
	if err := h.takeFollow(req.Peer()); err != nil {
		return err
	}
	id, secret := req.Msg.GetRequestId(), req.Msg.GetPairingSecret()
	if !isULID(id) {
		return errStatusRefused()
	}
	// Interest first, then the first read: a change between the two is not missed.
	changed, stop := h.s.changes.Wait(id)
	defer stop()
	r, err := h.s.follow(ctx, id, secret)
	if err != nil {
		return err
	}
	audit.SetTarget(ctx, "pairing_request:"+id)
	w := &watchStream{stream: stream, caPEM: h.s.opts.Authority.PEM()}
	if done, err := w.send(r); done || err != nil {
		return err
	}
	limit := time.NewTimer(max(r.ExpiresAt.Add(watchGrace).Sub(h.s.now()), 0))
	defer limit.Stop()
	poll := time.NewTicker(h.s.poll)
	defer poll.Stop()
	// The loop runs in the handler's goroutine; Run's dispatch signals changed.
	for {
		final := false
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		case <-poll.C:
		case <-limit.C:
			final = true
		}
		r, err := h.s.follow(ctx, id, secret)
		if err != nil {
			return err
		}
		if done, err := w.send(r); done || err != nil || final {
			return err
		}
	}
}

// watchStream sends the states of one watch, each once.
type watchStream struct {
	stream *connect.ServerStream[nodev1.WatchPairingResponse]
	caPEM  []byte
	last   *nodev1.PairingStatus // the status sent last; nil before the first
}

// send sends the status of r unless it is the one sent last, and reports whether r is
// in a terminal state.
func (w *watchStream) send(r dbsqlc.PairingRequest) (done bool, err error) {
	st, err := statusProto(r, w.caPEM)
	if err != nil {
		return false, err
	}
	if w.last == nil || !proto.Equal(st, w.last) {
		if err := w.stream.Send(&nodev1.WatchPairingResponse{Status: st}); err != nil {
			return false, err
		}
		w.last = st
	}
	return terminal(r.State), nil
}
