package pairing_test

import (
	"crypto/ecdsa"
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/oklog/ulid/v2"

	"github.com/palyra/palyra/gen/dbsqlc"
	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	nodev1 "github.com/palyra/palyra/gen/go/palyra/node/v1"
	"github.com/palyra/palyra/internal/possession"
	"github.com/palyra/palyra/internal/testpki"
	"github.com/palyra/palyra/server/internal/identity"
	"github.com/palyra/palyra/server/internal/pairing"
)

// paired is a node that paired: its device id, key and certificate.
type paired struct {
	deviceID string
	key      *ecdsa.PrivateKey
	cert     *x509.Certificate
}

// pairNew pairs a new device through the whole flow and returns it.
func (b *testBundle) pairNew(t *testing.T) paired {
	t.Helper()
	started, key := b.mustStart(t, b.createPIN(t).GetCode())
	approved, err := b.approve(t, &controlplanev1.ApprovePairingRequestRequest{Id: started.GetRequestId()})
	if err != nil {
		t.Fatalf("approve: %v", err)
	}
	st, err := b.status(t, started.GetRequestId(), started.GetPairingSecret())
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	return paired{deviceID: approved.GetDeviceId(), key: key, cert: parseCertPEM(t, st.GetCertificatePem())}
}

// repairReq is a start with a fresh PIN code and key that names device id, proven
// with the key and certificate of by (none when nil).
func (b *testBundle) repairReq(t *testing.T, deviceID string, by *paired) *nodev1.StartPairingRequest {
	t.Helper()
	req, _ := startReq(t, b.createPIN(t).GetCode())
	req.DeviceId = deviceID
	if by != nil {
		sig, err := possession.Sign(by.key, deviceID, req.GetCsr())
		if err != nil {
			t.Fatal(err)
		}
		req.DevicePossession = &nodev1.DevicePossession{Certificate: by.cert.Raw, Signature: sig}
	}
	return req
}

// startClaim starts req and checks the claim the answer and the approver's views give.
func (b *testBundle) startClaim(t *testing.T, req *nodev1.StartPairingRequest, want nodev1.DeviceClaim) *nodev1.StartPairingResponse {
	t.Helper()
	started, err := b.start(t, req)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	if got := started.GetDeviceClaim(); got != want {
		t.Errorf("StartPairing says the claim is %v, want %v", got, want)
	}
	b.wantClaim(t, started.GetRequestId(), want)
	return started
}

// wantClaim checks the claim of a request as GetPairingRequest and ListPairingRequests
// show it.
func (b *testBundle) wantClaim(t *testing.T, id string, want nodev1.DeviceClaim) *controlplanev1.PairingRequest {
	t.Helper()
	got := b.getRequest(t, id)
	if got.GetDeviceClaim() != want {
		t.Errorf("GetPairingRequest: claim %v, want %v", got.GetDeviceClaim(), want)
	}
	res, err := b.admin.ListPairingRequests(t.Context(), connect.NewRequest(&controlplanev1.ListPairingRequestsRequest{PageSize: 500}))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res.Msg.GetPairingRequests() {
		if r.GetId() == id && r.GetDeviceClaim() != want {
			t.Errorf("ListPairingRequests: claim %v, want %v", r.GetDeviceClaim(), want)
		}
	}
	return got
}

// certRevoked reports whether the certificate of a node is revoked at the bundle's now.
func (b *testBundle) certRevoked(t *testing.T, c *x509.Certificate) (bool, string) {
	t.Helper()
	rec, err := b.store.Q().GetIssuedCertificate(t.Context(), identity.Fingerprint(c.Raw))
	if err != nil {
		t.Fatal(err)
	}
	return rec.RevokedAt != nil && !rec.RevokedAt.After(b.clock.Now()), rec.RevokedReason
}

// TestRepairingWithAProof: a node that pairs again signs its request with the key of
// its device's certificate; the approver sees the claim proven and approves as for any
// node, and the device is re-paired: same id, the old certificate revoked.
func TestRepairingWithAProof(t *testing.T) {
	t.Parallel()
	b := setup(t)
	old := b.pairNew(t)
	b.clock.Advance(time.Hour)
	started := b.startClaim(t, b.repairReq(t, old.deviceID, &old), nodev1.DeviceClaim_DEVICE_CLAIM_PROVEN)
	if got := b.getRequest(t, started.GetRequestId()); got.GetPossessionCertificateFingerprint() != identity.Fingerprint(old.cert.Raw) ||
		got.GetPreviousDeviceId() != old.deviceID {
		t.Errorf("the request shows proof %q for device %q", got.GetPossessionCertificateFingerprint(), got.GetPreviousDeviceId())
	}
	approved, err := b.approve(t, &controlplanev1.ApprovePairingRequestRequest{Id: started.GetRequestId()})
	if err != nil {
		t.Fatalf("approve: %v", err)
	}
	if approved.GetDeviceId() != old.deviceID || approved.GetDeviceClaim() != nodev1.DeviceClaim_DEVICE_CLAIM_PROVEN {
		t.Errorf("approved as device %s (claim %v), want %s", approved.GetDeviceId(), approved.GetDeviceClaim(), old.deviceID)
	}
	st, err := b.status(t, started.GetRequestId(), started.GetPairingSecret())
	if err != nil {
		t.Fatal(err)
	}
	checkDeviceCertificate(t, b, parseCertPEM(t, st.GetCertificatePem()), old.deviceID)
	if revoked, reason := b.certRevoked(t, old.cert); !revoked || reason != "superseded by re-pairing (request "+started.GetRequestId()+")" {
		t.Errorf("the old certificate: revoked %v (%q)", revoked, reason)
	}
	if revoked, _ := b.certRevoked(t, parseCertPEM(t, st.GetCertificatePem())); revoked {
		t.Error("the new certificate is revoked")
	}
	// A device_possession without a device id is a mistake.
	req := b.repairReq(t, old.deviceID, &old)
	req.DeviceId = ""
	_, err = b.start(t, req)
	wantCode(t, err, connect.CodeInvalidArgument)
}

// TestAnExpiredCertificateProvesForThreeDays: a node whose certificate expired (it was
// off) proves with it for PossessionGrace more, and not after.
func TestAnExpiredCertificateProvesForThreeDays(t *testing.T) {
	t.Parallel()
	b := setup(t)
	old := b.pairNew(t)
	b.clock.Set(old.cert.NotAfter.Add(pairing.PossessionGrace - time.Minute))
	within := b.startClaim(t, b.repairReq(t, old.deviceID, &old), nodev1.DeviceClaim_DEVICE_CLAIM_PROVEN)
	b.clock.Advance(2 * time.Minute)
	b.startClaim(t, b.repairReq(t, old.deviceID, &old), nodev1.DeviceClaim_DEVICE_CLAIM_UNPROVEN)
	// The first request's proof is judged again as time passes.
	b.wantClaim(t, within.GetRequestId(), nodev1.DeviceClaim_DEVICE_CLAIM_UNPROVEN)
}

// TestAnUnprovenClaimNeedsTheApproversChoice is the takeover of issue 10 (item 1): a
// holder of any valid pairing code names an existing device. Without a proof that holds
// the request is flagged and an approval that does not choose is refused, the device
// untouched; the approver can pair it as a new device, or replace the device knowingly.
func TestAnUnprovenClaimNeedsTheApproversChoice(t *testing.T) {
	t.Parallel()
	b := setup(t)
	victim := b.pairNew(t)
	own := b.pairNew(t) // a device the attacker paired legitimately
	attackerKey := testpki.Key(t)
	forged := &paired{deviceID: victim.deviceID, key: attackerKey, cert: victim.cert}
	attempts := map[string]*nodev1.StartPairingRequest{
		"no proof":                                b.repairReq(t, victim.deviceID, nil),
		"the victim's certificate, another key":   b.repairReq(t, victim.deviceID, forged),
		"the attacker's own device's certificate": b.repairReq(t, victim.deviceID, &own),
		"a certificate palyrad never issued":      b.repairReq(t, victim.deviceID, &paired{key: attackerKey, cert: own.cert}),
		"a proof that does not parse":             b.repairReq(t, victim.deviceID, nil),
	}
	attempts["a certificate palyrad never issued"].DevicePossession.Certificate = append(
		append([]byte{}, own.cert.Raw[:len(own.cert.Raw)-1]...), own.cert.Raw[len(own.cert.Raw)-1]^1)
	attempts["a proof that does not parse"].DevicePossession = &nodev1.DevicePossession{
		Certificate: []byte(strings.Repeat("x", 100)), Signature: []byte("not a signature")}
	ids := map[string]string{}
	for name, req := range attempts {
		started := b.startClaim(t, req, nodev1.DeviceClaim_DEVICE_CLAIM_UNPROVEN)
		ids[name] = started.GetRequestId()
		if got := b.getRequest(t, started.GetRequestId()); got.GetPossessionCertificateFingerprint() != "" {
			t.Errorf("%s: the request shows the proof %s", name, got.GetPossessionCertificateFingerprint())
		}
		_, err := b.approve(t, &controlplanev1.ApprovePairingRequestRequest{Id: started.GetRequestId(), ExpectedKeyFingerprint: ""})
		ce := wantCode(t, err, connect.CodeFailedPrecondition)
		for _, want := range []string{"did not prove", "--replace-device " + victim.deviceID, "--new-device"} {
			if !strings.Contains(ce.Message(), want) {
				t.Errorf("%s: the refusal %q does not say %q", name, ce.Message(), want)
			}
		}
	}
	untouched := func() {
		t.Helper()
		if revoked, _ := b.certRevoked(t, victim.cert); revoked {
			t.Fatal("the victim's certificate is revoked")
		}
		d, err := b.store.Q().GetDevice(t.Context(), victim.deviceID)
		if fp, _ := identity.PublicKeyFingerprint(victim.key.Public()); err != nil || d.PublicKeyFingerprint != fp || d.RevokedAt != nil {
			t.Fatalf("the victim's device changed: %+v, %v", d, err)
		}
	}
	untouched()

	// The approver's choices: exclusive, and naming the device the request names.
	id := ids["no proof"]
	_, err := b.approve(t, &controlplanev1.ApprovePairingRequestRequest{Id: id, ReplaceDeviceId: victim.deviceID, NewDevice: true})
	wantCode(t, err, connect.CodeInvalidArgument)
	_, err = b.approve(t, &controlplanev1.ApprovePairingRequestRequest{Id: id, ReplaceDeviceId: own.deviceID})
	wantCode(t, err, connect.CodeFailedPrecondition)
	untouched()
	// A new device: the named one is left alone.
	fresh, err := b.approve(t, &controlplanev1.ApprovePairingRequestRequest{Id: id, NewDevice: true})
	if err != nil {
		t.Fatalf("approve as a new device: %v", err)
	}
	if fresh.GetDeviceId() == victim.deviceID || fresh.GetDeviceId() == "" || fresh.GetPreviousDeviceId() != victim.deviceID {
		t.Errorf("approved as a new device %q", fresh.GetDeviceId())
	}
	untouched()
	// Replacing the device knowingly: the node becomes the device.
	id = ids["the victim's certificate, another key"]
	replaced, err := b.approve(t, &controlplanev1.ApprovePairingRequestRequest{Id: id, ReplaceDeviceId: victim.deviceID})
	if err != nil {
		t.Fatalf("approve with replace_device_id: %v", err)
	}
	if replaced.GetDeviceId() != victim.deviceID || replaced.GetDeviceClaim() != nodev1.DeviceClaim_DEVICE_CLAIM_UNPROVEN {
		t.Errorf("replaced as device %q with claim %v", replaced.GetDeviceId(), replaced.GetDeviceClaim())
	}
	if revoked, _ := b.certRevoked(t, victim.cert); !revoked {
		t.Error("the replaced device's certificate is not revoked")
	}
	// replace_device_id on a request that names no device.
	started, _ := b.mustStart(t, b.createPIN(t).GetCode())
	_, err = b.approve(t, &controlplanev1.ApprovePairingRequestRequest{Id: started.GetRequestId(), ReplaceDeviceId: victim.deviceID})
	wantCode(t, err, connect.CodeFailedPrecondition)
}

// TestAProofIsJudgedAgainAtTheApproval: a proof that held at the start no longer counts
// once its certificate is revoked, or once the device paired again with another key.
func TestAProofIsJudgedAgainAtTheApproval(t *testing.T) {
	t.Parallel()
	b := setup(t)
	old := b.pairNew(t)
	first := b.startClaim(t, b.repairReq(t, old.deviceID, &old), nodev1.DeviceClaim_DEVICE_CLAIM_PROVEN)
	second := b.startClaim(t, b.repairReq(t, old.deviceID, &old), nodev1.DeviceClaim_DEVICE_CLAIM_PROVEN)
	if _, err := b.approve(t, &controlplanev1.ApprovePairingRequestRequest{Id: first.GetRequestId()}); err != nil {
		t.Fatal(err)
	}
	// The device has another key now: the second request's proof is stale.
	b.wantClaim(t, second.GetRequestId(), nodev1.DeviceClaim_DEVICE_CLAIM_UNPROVEN)
	_, err := b.approve(t, &controlplanev1.ApprovePairingRequestRequest{Id: second.GetRequestId()})
	wantCode(t, err, connect.CodeFailedPrecondition)

	other := b.pairNew(t)
	third := b.startClaim(t, b.repairReq(t, other.deviceID, &other), nodev1.DeviceClaim_DEVICE_CLAIM_PROVEN)
	if _, err := b.store.Q().RevokeCertificate(t.Context(), dbsqlc.RevokeCertificateParams{
		Fingerprint: identity.Fingerprint(other.cert.Raw), Now: b.clock.Now(), Reason: "leaked"}); err != nil {
		t.Fatal(err)
	}
	b.wantClaim(t, third.GetRequestId(), nodev1.DeviceClaim_DEVICE_CLAIM_UNPROVEN)
	_, err = b.approve(t, &controlplanev1.ApprovePairingRequestRequest{Id: third.GetRequestId()})
	wantCode(t, err, connect.CodeFailedPrecondition)
}

// TestARevokedDeviceNeedsReinstatement: a request naming a revoked device, proof or
// not, is approved under that id only with replace_device_id and
// reinstate_revoked_device.
func TestARevokedDeviceNeedsReinstatement(t *testing.T) {
	t.Parallel()
	b := setup(t)
	old := b.pairNew(t)
	if _, err := b.store.Q().RevokeDevice(t.Context(), dbsqlc.RevokeDeviceParams{Now: b.clock.Now(), Reason: "stolen", ID: old.deviceID}); err != nil {
		t.Fatal(err)
	}
	started := b.startClaim(t, b.repairReq(t, old.deviceID, &old), nodev1.DeviceClaim_DEVICE_CLAIM_REVOKED)
	for name, req := range map[string]*controlplanev1.ApprovePairingRequestRequest{
		"no choice":      {Id: started.GetRequestId()},
		"replace only":   {Id: started.GetRequestId(), ReplaceDeviceId: old.deviceID},
		"reinstate only": {Id: started.GetRequestId(), ReinstateRevokedDevice: true},
	} {
		_, err := b.approve(t, req)
		if ce := wantCode(t, err, connect.CodeFailedPrecondition); !strings.Contains(ce.Message(), "--reinstate") || !strings.Contains(ce.Message(), "stolen") {
			t.Errorf("%s: refused with %q", name, ce.Message())
		}
	}
	if d, _ := b.store.Q().GetDevice(t.Context(), old.deviceID); d.RevokedAt == nil {
		t.Fatal("a refused approval reinstated the device")
	}
	back, err := b.approve(t, &controlplanev1.ApprovePairingRequestRequest{
		Id: started.GetRequestId(), ReplaceDeviceId: old.deviceID, ReinstateRevokedDevice: true})
	if err != nil {
		t.Fatalf("approve with replace_device_id and reinstate_revoked_device: %v", err)
	}
	if d, _ := b.store.Q().GetDevice(t.Context(), old.deviceID); d.RevokedAt != nil || d.RevokedReason != "" || back.GetDeviceId() != old.deviceID {
		t.Errorf("device after reinstatement: %+v", d)
	}
}

// TestAnUnknownPreviousDeviceIsNew: a previous device id that names no device pairs a
// new device.
func TestAnUnknownPreviousDeviceIsNew(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ghost := ulid.Make().String()
	started := b.startClaim(t, b.repairReq(t, ghost, nil), nodev1.DeviceClaim_DEVICE_CLAIM_NEW)
	fresh, err := b.approve(t, &controlplanev1.ApprovePairingRequestRequest{Id: started.GetRequestId()})
	if err != nil {
		t.Fatal(err)
	}
	if fresh.GetDeviceId() == ghost || !ulidOK(fresh.GetDeviceId()) {
		t.Errorf("pairing as unknown device %s registered %q", ghost, fresh.GetDeviceId())
	}
	_, err = b.approve(t, &controlplanev1.ApprovePairingRequestRequest{Id: b.startClaim(t, b.repairReq(t, ghost, nil),
		nodev1.DeviceClaim_DEVICE_CLAIM_NEW).GetRequestId(), ReplaceDeviceId: ghost})
	wantCode(t, err, connect.CodeFailedPrecondition)
}
