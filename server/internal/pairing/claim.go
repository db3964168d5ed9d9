package pairing

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/palyra/palyra/gen/dbsqlc"
	"github.com/palyra/palyra/internal/possession"
	"github.com/palyra/palyra/server/internal/devices"
	"github.com/palyra/palyra/server/internal/identity"
	"github.com/palyra/palyra/server/internal/store"
)

// A request that names an existing device (previous_device_id) would take over that
// device's identity: its certificates revoked, its dispatches routed to the new node.
// Naming it proves nothing, so the claim is judged, at the start and again at the
// approval:
//
//   - new: the request names no existing device; approval registers a new one.
//   - proven: the node signed the request with the key of the device's newest
//     certificate (internal/possession), which palyrad issued for that device, which
//     is not revoked, expired at most PossessionGrace ago, and whose key is still the
//     device's (no renewal or re-pairing since); approval re-pairs the device.
//   - unproven: no such proof; approval needs the approver's choice, replace_device_id
//     (the device is replaced, as with a proof) or new_device.
//   - revoked: the device is revoked; approval needs replace_device_id with
//     reinstate_revoked_device, or new_device.
//
// A proof that does not hold makes the request unproven rather than refused, so that
// the approver can still decide; the reason is logged.

// Device claims, as stored (the pairing_requests_device_claim constraint).
const (
	claimNew      = "new"
	claimProven   = "proven"
	claimUnproven = "unproven"
	claimRevoked  = "revoked"
)

// PossessionGrace is how long after it expired a device certificate still proves that a
// node holds its device's key: a node that was off for a weekend pairs again without
// the approver's choice.
const PossessionGrace = 72 * time.Hour

// proof is a node's DevicePossession: the device's certificate (DER) and its key's
// signature of the request.
type proof struct {
	certificate []byte
	signature   []byte
}

// proven is a proof that held at the start: the fingerprints of the certificate and of
// its key, which the claim is judged by from then on.
type proven struct {
	certificate string
	key         string
}

// checkProof checks p, a proof that the node holds the key of device deviceID, for a
// request with csr: the certificate is one palyrad issued for that device, and its key
// signed the request. It returns what was proven, or why nothing was (err is for
// failures of the database). Whether a proof still counts (revocation, expiry, a newer
// key) is judged with the claim.
func (s *Service) checkProof(ctx context.Context, deviceID string, csr []byte, p proof) (pr *proven, why string, err error) {
	cert, err := x509.ParseCertificate(p.certificate)
	if err != nil {
		return nil, "its certificate does not parse", nil
	}
	fp := identity.Fingerprint(cert.Raw)
	owner, err := s.opts.Authority.DeviceOf(ctx, fp)
	if errors.Is(err, store.ErrNotFound) {
		return nil, "palyrad issued no certificate " + fp, nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("pairing: get certificate: %w", err)
	}
	if owner != deviceID {
		return nil, fmt.Sprintf("certificate %s is not one of device %s", fp, deviceID), nil
	}
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok || !possession.Verify(pub, deviceID, csr, p.signature) {
		return nil, "the signature is not by the key of certificate " + fp, nil
	}
	key, err := identity.PublicKeyFingerprint(pub)
	if err != nil {
		return nil, "", err
	}
	return &proven{certificate: fp, key: key}, "", nil
}

// provenOf returns what the node of r proved at the start, or nil.
func provenOf(r dbsqlc.PairingRequest) *proven {
	if r.PossessionCertificateFingerprint == nil || r.PossessionKeyFingerprint == nil {
		return nil
	}
	return &proven{certificate: *r.PossessionCertificateFingerprint, key: *r.PossessionKeyFingerprint}
}

// claimNow returns the claim of r as an approver sees it: judged now for a pending
// request, as last judged otherwise.
func (s *Service) claimNow(ctx context.Context, r dbsqlc.PairingRequest) (string, error) {
	if r.State != statePending {
		return r.DeviceClaim, nil
	}
	claim, _, _, err := s.judgeClaim(ctx, s.opts.Store, r.PreviousDeviceID, provenOf(r), s.now())
	return claim, err
}

// judgeClaim judges what a request naming previous (nil: none), proven by pr (nil:
// not), amounts to at now, through db; it also returns the device named, when it
// exists. why says why a claim on an existing device is not proven.
func (s *Service) judgeClaim(ctx context.Context, db store.Queryer, previous *string, pr *proven, now time.Time) (claim string, dev *devices.Device, why string, err error) {
	if previous == nil {
		return claimNew, nil, "", nil
	}
	d, err := devices.Lookup(ctx, db, *previous)
	if errors.Is(err, store.ErrNotFound) {
		return claimNew, nil, "", nil
	}
	if err != nil {
		return "", nil, "", fmt.Errorf("pairing: get device: %w", err)
	}
	switch {
	case d.RevokedAt != nil:
		return claimRevoked, d, "the device is revoked", nil
	case pr == nil:
		return claimUnproven, d, "no proof held", nil
	case pr.key != d.PublicKeyFingerprint:
		return claimUnproven, d, "the device renewed or paired again since the certificate of the proof", nil
	}
	c, err := identity.LookupCertificate(ctx, db, pr.certificate)
	if err != nil {
		return "", nil, "", fmt.Errorf("pairing: get certificate: %w", err)
	}
	switch {
	case c.RevokedAt != nil && !c.RevokedAt.After(now):
		return claimUnproven, d, "the certificate of the proof is revoked", nil
	case now.After(c.NotAfter.Add(PossessionGrace)):
		return claimUnproven, d, fmt.Sprintf("the certificate of the proof expired more than %s ago", PossessionGrace), nil
	}
	return claimProven, d, "", nil
}

// pairedDevice decides which device an approval registers the request's node as,
// given its claim and the approver's choice (replace: replace_device_id; asNew:
// new_device): the id of the existing device it re-pairs, or "" for a new device.
func pairedDevice(r dbsqlc.PairingRequest, claim string, dev *devices.Device, p approveParams) (string, error) {
	previous := deref(r.PreviousDeviceID)
	switch {
	case p.replace != "" && p.asNew:
		return "", errInvalid("replace_device_id and new_device exclude each other")
	case p.asNew:
		return "", nil
	case p.replace != "" && p.replace != previous:
		if previous == "" {
			return "", errFailedPrecondition("pairing request %s names no device to replace", r.ID)
		}
		return "", errFailedPrecondition("pairing request %s names device %s, not %s: replace_device_id must be the device it names",
			r.ID, previous, p.replace)
	case p.replace != "" && dev == nil:
		return "", errFailedPrecondition("device %s does not exist: approve the request without replace_device_id", previous)
	case claim == claimRevoked && (p.replace == "" || !p.reinstate):
		return "", errFailedPrecondition("pairing request %s names device %s, which was revoked (%s): to let it back under its id, "+
			"an approver must pass replace_device_id %s with reinstate_revoked_device (palyra pairing requests approve %s "+
			"--replace-device %s --reinstate); or pass new_device (--new-device) to pair it as a new device",
			r.ID, previous, orNone(dev.RevokedReason), previous, r.ID, previous)
	case p.replace != "", claim == claimProven:
		return previous, nil
	case claim == claimUnproven:
		return "", errFailedPrecondition("pairing request %s names device %s (%q) but did not prove that it holds that device's key: "+
			"pass replace_device_id %s (palyra pairing requests approve %s --replace-device %s) to replace that device with this "+
			"node, which revokes its certificates and sends its dispatches to this node; or new_device (--new-device) to pair it "+
			"as a new device; or reject it", r.ID, previous, dev.Name, previous, r.ID, previous)
	}
	return "", nil
}
