package devices

import (
	"context"
	"encoding/pem"
	"errors"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	"github.com/palyra/palyra/gen/go/palyra/controlplane/v1/controlplanev1connect"
	nodev1 "github.com/palyra/palyra/gen/go/palyra/node/v1"
	"github.com/palyra/palyra/server/internal/access"
	"github.com/palyra/palyra/server/internal/audit"
	"github.com/palyra/palyra/server/internal/errdefs"
	"github.com/palyra/palyra/server/internal/identity"
	"github.com/palyra/palyra/server/internal/requestctx"
	"github.com/palyra/palyra/server/internal/store"
)

// Handler serves DeviceService.
type Handler struct {
	s *Service
}

var _ controlplanev1connect.DeviceServiceHandler = (*Handler)(nil)

// Handler returns the DeviceService handler.
func (s *Service) Handler() *Handler { return &Handler{s: s} }

// GetDevice returns a device and its certificates.
func (h *Handler) GetDevice(ctx context.Context, req *connect.Request[controlplanev1.GetDeviceRequest]) (*connect.Response[controlplanev1.GetDeviceResponse], error) {
	d, err := h.s.Get(ctx, req.Msg.GetId())
	if err != nil {
		return nil, deviceError(req.Msg.GetId(), err)
	}
	return connect.NewResponse(&controlplanev1.GetDeviceResponse{Device: deviceProto(d)}), nil
}

// RevokeDevice revokes a device and all its certificates.
func (h *Handler) RevokeDevice(ctx context.Context, req *connect.Request[controlplanev1.RevokeDeviceRequest]) (*connect.Response[controlplanev1.RevokeDeviceResponse], error) {
	audit.SetTarget(ctx, "device:"+req.Msg.GetId())
	d, err := h.s.Revoke(ctx, req.Msg.GetId(), req.Msg.GetReason())
	if err != nil {
		return nil, deviceError(req.Msg.GetId(), err)
	}
	return connect.NewResponse(&controlplanev1.RevokeDeviceResponse{Device: deviceProto(d)}), nil
}

// RevokeCertificate revokes one device certificate.
func (h *Handler) RevokeCertificate(ctx context.Context, req *connect.Request[controlplanev1.RevokeCertificateRequest]) (*connect.Response[controlplanev1.RevokeCertificateResponse], error) {
	fp := req.Msg.GetFingerprint()
	audit.SetTarget(ctx, "certificate:"+fp)
	c, err := h.s.RevokeCertificate(ctx, fp, req.Msg.GetReason())
	if err != nil {
		return nil, deviceError(fp, err)
	}
	return connect.NewResponse(&controlplanev1.RevokeCertificateResponse{Certificate: certificateProto(*c), DeviceId: c.DeviceID}), nil
}

// RotateDeviceCertificate revokes a device's current certificates after a grace period.
func (h *Handler) RotateDeviceCertificate(ctx context.Context, req *connect.Request[controlplanev1.RotateDeviceCertificateRequest]) (*connect.Response[controlplanev1.RotateDeviceCertificateResponse], error) {
	audit.SetTarget(ctx, "device:"+req.Msg.GetId())
	grace := DefaultGrace
	if req.Msg.Grace != nil {
		grace = req.Msg.GetGrace().AsDuration()
	}
	d, err := h.s.Rotate(ctx, req.Msg.GetId(), grace)
	if err != nil {
		return nil, deviceError(req.Msg.GetId(), err)
	}
	return connect.NewResponse(&controlplanev1.RotateDeviceCertificateResponse{Device: deviceProto(d)}), nil
}

// NodeHandler serves NodeService.RenewCertificate; the daemon composes it with the
// other parts of NodeService.
type NodeHandler struct {
	s *Service
}

// NodeHandler returns the handler of the node's renewal.
func (s *Service) NodeHandler() *NodeHandler { return &NodeHandler{s: s} }

// RenewCertificate issues a new certificate to the calling device, which proved its
// identity with its newest certificate (mutual TLS). A device that only named itself in
// the X-Palyra-Device-Id header (require_mtls off) gets no certificate.
func (h *NodeHandler) RenewCertificate(ctx context.Context, req *connect.Request[nodev1.RenewCertificateRequest]) (*connect.Response[nodev1.RenewCertificateResponse], error) {
	id := req.Msg.GetDeviceId()
	audit.SetTarget(ctx, "device:"+id)
	dev, ok := access.DeviceFrom(ctx)
	cert := requestctx.ClientCertificate(ctx)
	if !ok || !dev.Verified || cert == nil {
		return nil, errdefs.New(errdefs.Unauthenticated,
			"a certificate is renewed only over mutual TLS with the device's certificate; a device named in a header proves nothing")
	}
	if id != dev.ID {
		return nil, errdefs.New(errdefs.PermissionDenied, "the request names device %s but the caller is device %s", id, dev.ID)
	}
	callerKey, err := identity.PublicKeyFingerprint(cert.PublicKey)
	if err != nil {
		return nil, err
	}
	issued, err := h.s.Renew(ctx, id, callerKey, req.Msg.GetCsr())
	if err != nil {
		return nil, deviceError(id, err)
	}
	return connect.NewResponse(&nodev1.RenewCertificateResponse{
		CertificatePem:        string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: issued.Certificate.Raw})),
		CaCertificatePem:      string(h.s.opts.Authority.PEM()),
		CertificateExpireTime: timestamppb.New(issued.Certificate.NotAfter),
		Fingerprint:           issued.Fingerprint,
	}), nil
}

// deviceError gives the device errors their codes and messages.
func deviceError(what string, err error) error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return errdefs.Wrap(err, errdefs.NotFound, "%s does not exist", what)
	case errors.Is(err, ErrRevoked):
		return errdefs.Wrap(err, errdefs.FailedPrecondition, "device %s is revoked: pair it again (an approver must reinstate it)", what)
	case errors.Is(err, ErrSuperseded):
		return errdefs.Wrap(err, errdefs.PermissionDenied, "this certificate of device %s was superseded (the device renewed, "+
			"rotated or paired again since): only its newest certificate renews", what)
	case errors.Is(err, ErrAlreadyRevoked):
		return errdefs.Wrap(err, errdefs.FailedPrecondition, "%s is already revoked", what)
	case errors.Is(err, identity.ErrCSR):
		return errdefs.Wrap(err, errdefs.Invalid, "%v", err)
	}
	return err
}

func deviceProto(d *Device) *controlplanev1.Device {
	out := &controlplanev1.Device{
		Id: d.ID, Name: d.Name, Platform: d.Platform, AgentVersion: d.AgentVersion, Labels: d.Labels,
		CreateTime: timestamppb.New(d.CreatedAt), RevokeReason: d.RevokedReason,
	}
	if d.RevokedAt != nil {
		out.RevokeTime = timestamppb.New(*d.RevokedAt)
	}
	if d.RotateRequestedAt != nil {
		out.RotateTime = timestamppb.New(*d.RotateRequestedAt)
	}
	for _, c := range d.Certificates {
		out.Certificates = append(out.Certificates, certificateProto(c))
	}
	return out
}

func certificateProto(c Certificate) *controlplanev1.DeviceCertificate {
	out := &controlplanev1.DeviceCertificate{
		Fingerprint: c.Fingerprint, Serial: c.Serial, RevokeReason: c.RevokedReason,
		NotBefore: timestamppb.New(c.NotBefore), NotAfter: timestamppb.New(c.NotAfter),
	}
	if c.RevokedAt != nil {
		out.RevokeTime = timestamppb.New(*c.RevokedAt)
	}
	return out
}
