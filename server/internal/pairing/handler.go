package pairing

import (
	"context"
	"time"

	"connectrpc.com/connect"

	"github.com/palyra/palyra/gen/dbsqlc"
	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	"github.com/palyra/palyra/gen/go/palyra/controlplane/v1/controlplanev1connect"
	"github.com/palyra/palyra/server/internal/audit"
	"github.com/palyra/palyra/server/internal/errdefs"
)

// Page sizes of the lists.
const (
	defaultPageSize = 100
	maxPageSize     = 500
)

// PairingHandler serves PairingService: pairing codes and the decisions on pairing
// requests. Authorization (nodes.pair, nodes.read, nodes.approve) and the audit of every
// call are the access interceptor's; the handler names what each call acted on.
type PairingHandler struct {
	s *Service
}

var _ controlplanev1connect.PairingServiceHandler = (*PairingHandler)(nil)

// pageSize applies the default and the bound to a requested page size.
func pageSize(n uint32) int {
	if n == 0 {
		return defaultPageSize
	}
	return min(int(n), maxPageSize)
}

// CreatePairingCode creates a single-use code and returns it, once.
func (h *PairingHandler) CreatePairingCode(ctx context.Context, req *connect.Request[controlplanev1.CreatePairingCodeRequest]) (*connect.Response[controlplanev1.CreatePairingCodeResponse], error) {
	by, err := principalID(ctx)
	if err != nil {
		return nil, err
	}
	method, ok := methodFromProto(req.Msg.GetMethod())
	if !ok {
		return nil, errInvalid("method must be PAIRING_METHOD_PIN or PAIRING_METHOD_QR")
	}
	p := createCodeParams{method: method, label: req.Msg.GetLabel(), pinDigits: int(req.Msg.GetPinDigits()), createdBy: by}
	if req.Msg.Ttl != nil {
		if err := req.Msg.GetTtl().CheckValid(); err != nil {
			return nil, errInvalid("ttl: %v", err)
		}
		ttl := req.Msg.GetTtl().AsDuration()
		p.ttl = &ttl
	}
	c, err := h.s.createCode(ctx, p)
	if err != nil {
		return nil, err
	}
	audit.SetTarget(ctx, "pairing_code:"+c.row.ID)
	return connect.NewResponse(&controlplanev1.CreatePairingCodeResponse{
		PairingCode:   codeProto(c.row, h.s.now()),
		Code:          c.code,
		PairingUri:    c.uri,
		CaFingerprint: h.s.opts.Authority.Fingerprint(),
	}), nil
}

// ListPairingCodes lists codes, newest first, without their secrets.
func (h *PairingHandler) ListPairingCodes(ctx context.Context, req *connect.Request[controlplanev1.ListPairingCodesRequest]) (*connect.Response[controlplanev1.ListPairingCodesResponse], error) {
	rows, next, err := h.s.listCodes(ctx, req.Msg.GetPageToken(), pageSize(req.Msg.GetPageSize()), req.Msg.GetActiveOnly())
	if err != nil {
		return nil, err
	}
	now := h.s.now()
	res := &controlplanev1.ListPairingCodesResponse{PairingCodes: make([]*controlplanev1.PairingCode, len(rows)), NextPageToken: next}
	for i, r := range rows {
		res.PairingCodes[i] = codeProto(r, now)
	}
	return connect.NewResponse(res), nil
}

// DeletePairingCode withdraws a code that was not used, burned or deleted already.
func (h *PairingHandler) DeletePairingCode(ctx context.Context, req *connect.Request[controlplanev1.DeletePairingCodeRequest]) (*connect.Response[controlplanev1.DeletePairingCodeResponse], error) {
	id := req.Msg.GetId()
	audit.SetTarget(ctx, "pairing_code:"+id)
	if !isULID(id) {
		return nil, errNoCode(id)
	}
	row, err := h.s.deleteCode(ctx, id)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&controlplanev1.DeletePairingCodeResponse{PairingCode: codeProto(row, h.s.now())}), nil
}

// ListPairingRequests lists requests, newest first, optionally in one state.
func (h *PairingHandler) ListPairingRequests(ctx context.Context, req *connect.Request[controlplanev1.ListPairingRequestsRequest]) (*connect.Response[controlplanev1.ListPairingRequestsResponse], error) {
	state, ok := stateFilter(req.Msg.GetState())
	if !ok {
		return nil, errInvalid("state %d is not a pairing state", req.Msg.GetState())
	}
	rows, next, err := h.s.listRequests(ctx, state, req.Msg.GetPageToken(), pageSize(req.Msg.GetPageSize()))
	if err != nil {
		return nil, err
	}
	out := make([]*controlplanev1.PairingRequest, len(rows))
	for i, r := range rows {
		if out[i], err = h.describe(ctx, r); err != nil {
			return nil, err
		}
	}
	return connect.NewResponse(&controlplanev1.ListPairingRequestsResponse{PairingRequests: out, NextPageToken: next}), nil
}

// describe describes a request as an approver sees it now: the claim of a pending one
// judged at once.
func (h *PairingHandler) describe(ctx context.Context, r dbsqlc.PairingRequest) (*controlplanev1.PairingRequest, error) {
	claim, err := h.s.claimNow(ctx, r)
	if err != nil {
		return nil, err
	}
	return requestProto(r, claim, h.s.now())
}

// WatchPairingRequests streams the changes of every request: an empty message first,
// then each request that changed, read when its notification arrives (from whichever
// replica made the change), and an empty message whenever notifications may have been
// missed: after the listener reconnected, when the client fell behind by changeBuffer
// changes, and, without notifications, every poll interval. It ends on Shutdown.
func (h *PairingHandler) WatchPairingRequests(ctx context.Context, _ *connect.Request[controlplanev1.WatchPairingRequestsRequest], stream *connect.ServerStream[controlplanev1.WatchPairingRequestsResponse]) error {
	select {
	case <-h.s.stopping:
		return errdefs.New(errdefs.Unavailable, "palyrad is shutting down: watch again")
	default:
	}
	// Interest first, then the first message: a change after it is not missed.
	w, stop := h.s.changes.Watch(changeBuffer)
	defer stop()
	if err := stream.Send(&controlplanev1.WatchPairingRequestsResponse{}); err != nil {
		return err
	}
	var poll <-chan time.Time
	if h.s.sub == nil {
		t := time.NewTicker(h.s.poll)
		defer t.Stop()
		poll = t.C
	}
	for {
		msg := &controlplanev1.WatchPairingRequestsResponse{}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-h.s.stopping:
			return nil
		case <-w.Missed:
		case <-poll:
		case id := <-w.IDs:
			r, err := h.s.getRequest(ctx, id)
			if errdefs.KindOf(err) == errdefs.NotFound {
				continue // not a request (a stray notification)
			}
			if err != nil {
				return err
			}
			if msg.PairingRequest, err = h.describe(ctx, r); err != nil {
				return err
			}
		}
		if err := stream.Send(msg); err != nil {
			return err
		}
	}
}

// GetPairingRequest returns one request.
func (h *PairingHandler) GetPairingRequest(ctx context.Context, req *connect.Request[controlplanev1.GetPairingRequestRequest]) (*connect.Response[controlplanev1.GetPairingRequestResponse], error) {
	id := req.Msg.GetId()
	if !isULID(id) {
		return nil, errNoRequest(id)
	}
	r, err := h.s.getRequest(ctx, id)
	if err != nil {
		return nil, err
	}
	out, err := h.describe(ctx, r)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&controlplanev1.GetPairingRequestResponse{PairingRequest: out}), nil
}

// ApprovePairingRequest approves a pending request: the device is registered (or
// re-paired) and the CSR's public key signed. Anything but a pending request is
// FailedPrecondition, and so is a key other than the expected one, and a request that
// names a device it did not prove to be without the approver's choice.
func (h *PairingHandler) ApprovePairingRequest(ctx context.Context, req *connect.Request[controlplanev1.ApprovePairingRequestRequest]) (*connect.Response[controlplanev1.ApprovePairingRequestResponse], error) {
	id := req.Msg.GetId()
	audit.SetTarget(ctx, "pairing_request:"+id)
	by, err := principalID(ctx)
	if err != nil {
		return nil, err
	}
	if !isULID(id) {
		return nil, errNoRequest(id)
	}
	r, err := h.s.approve(ctx, approveParams{
		id:                  id,
		expectedFingerprint: req.Msg.GetExpectedKeyFingerprint(),
		labels:              req.Msg.GetLabels(),
		reinstate:           req.Msg.GetReinstateRevokedDevice(),
		replace:             req.Msg.GetReplaceDeviceId(),
		asNew:               req.Msg.GetNewDevice(),
		decidedBy:           by,
	})
	if err != nil {
		return nil, err
	}
	audit.SetTarget(ctx, "pairing_request:"+id+" device:"+deref(r.DeviceID))
	out, err := requestProto(r, r.DeviceClaim, h.s.now())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&controlplanev1.ApprovePairingRequestResponse{PairingRequest: out}), nil
}

// RejectPairingRequest rejects a pending request with a reason, which its node sees.
func (h *PairingHandler) RejectPairingRequest(ctx context.Context, req *connect.Request[controlplanev1.RejectPairingRequestRequest]) (*connect.Response[controlplanev1.RejectPairingRequestResponse], error) {
	id := req.Msg.GetId()
	audit.SetTarget(ctx, "pairing_request:"+id)
	by, err := principalID(ctx)
	if err != nil {
		return nil, err
	}
	if !isULID(id) {
		return nil, errNoRequest(id)
	}
	r, err := h.s.reject(ctx, id, req.Msg.GetReason(), by)
	if err != nil {
		return nil, err
	}
	out, err := requestProto(r, r.DeviceClaim, h.s.now())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&controlplanev1.RejectPairingRequestResponse{PairingRequest: out}), nil
}
