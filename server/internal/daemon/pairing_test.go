package daemon_test

import (
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"strconv"
	"testing"

	"connectrpc.com/connect"
	"github.com/oklog/ulid/v2"

	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	"github.com/palyra/palyra/gen/go/palyra/controlplane/v1/controlplanev1connect"
	nodev1 "github.com/palyra/palyra/gen/go/palyra/node/v1"
	"github.com/palyra/palyra/gen/go/palyra/node/v1/nodev1connect"
	"github.com/palyra/palyra/internal/testpki"
	"github.com/palyra/palyra/server/internal/identity"
	"github.com/palyra/palyra/server/internal/pairing"
	"github.com/palyra/palyra/server/internal/store/storetest"
)

// startPairing creates a PIN code as the owner and starts a pairing request with it for
// a new key, naming deviceID ("" for none); it returns the answer and the key.
func (td *testDaemon) startPairing(t *testing.T, name, deviceID string) (*nodev1.StartPairingResponse, *ecdsa.PrivateKey) {
	t.Helper()
	code, err := controlplanev1connect.NewPairingServiceClient(td.h2, td.baseURL).CreatePairingCode(t.Context(),
		connect.NewRequest(&controlplanev1.CreatePairingCodeRequest{Method: controlplanev1.PairingMethod_PAIRING_METHOD_PIN}))
	if err != nil {
		t.Fatal(err)
	}
	key := testpki.Key(t)
	res, err := nodev1connect.NewNodeServiceClient(td.client(""), td.baseURL).StartPairing(t.Context(), connect.NewRequest(&nodev1.StartPairingRequest{
		Code: &nodev1.StartPairingRequest_Pin{Pin: code.Msg.GetCode()}, Csr: csrFor(t, key, nil), DeviceName: name, DeviceId: deviceID,
	}))
	if err != nil {
		t.Fatalf("start pairing: %v", err)
	}
	return res.Msg, key
}

// collect reads the status of a started request as its node; once approved, the node
// with its certificate.
func (td *testDaemon) collect(t *testing.T, started *nodev1.StartPairingResponse, key *ecdsa.PrivateKey) (*nodev1.PairingStatus, *enrolled) {
	t.Helper()
	res, err := nodev1connect.NewNodeServiceClient(td.client(""), td.baseURL).GetPairingStatus(t.Context(), connect.NewRequest(
		&nodev1.GetPairingStatusRequest{RequestId: started.GetRequestId(), PairingSecret: started.GetPairingSecret()}))
	if err != nil {
		t.Fatalf("pairing status: %v", err)
	}
	st := res.Msg.GetStatus()
	if st.GetCertificatePem() == "" {
		return st, nil
	}
	block, _ := pem.Decode([]byte(st.GetCertificatePem()))
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return st, &enrolled{deviceID: st.GetDeviceId(), key: key, leaf: leaf,
		cert: tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}}
}

// TestRepairingCannotTakeOverADevice is the takeover of issue 10 (item 1) against a real
// palyrad: anyone holding a valid pairing code names an existing device in
// StartPairing; the approver, seeing a request whose key matches the one its node
// shows, approves. That approval must not hand the device to the new node: it is
// refused (the request names a device it did not prove to be), the attacker gets no
// certificate, and the real node keeps its certificate and its dispatches.
func TestRepairingCannotTakeOverADevice(t *testing.T) {
	t.Parallel()
	td := startDaemon(t, "--database-url", storetest.URL(t), "--data-dir", t.TempDir())
	admin := controlplanev1connect.NewPairingServiceClient(td.h2, td.baseURL)

	started, key := td.startPairing(t, "db-1", "")
	if _, err := admin.ApprovePairingRequest(t.Context(), connect.NewRequest(&controlplanev1.ApprovePairingRequestRequest{Id: started.GetRequestId()})); err != nil {
		t.Fatal(err)
	}
	_, victim := td.collect(t, started, key)
	node, _ := attachNode(t, td, victim)

	attack, attackerKey := td.startPairing(t, "db-1", victim.deviceID)
	attackerFP, _ := identity.PublicKeyFingerprint(&attackerKey.PublicKey)
	_, err := admin.ApprovePairingRequest(t.Context(), connect.NewRequest(&controlplanev1.ApprovePairingRequestRequest{
		Id: attack.GetRequestId(), ExpectedKeyFingerprint: attackerFP}))
	wantCode(t, "approving a request that names an existing device without proof", err, connect.CodeFailedPrecondition)

	if st, got := td.collect(t, attack, attackerKey); got != nil || st.GetState() != nodev1.PairingState_PAIRING_STATE_PENDING_APPROVAL {
		t.Errorf("the attacker's request is %v with a certificate for device %q", st.GetState(), st.GetDeviceId())
	}
	if err := td.handshake(victim.cert); err != nil {
		t.Errorf("the real node's certificate is refused: %v", err)
	}
	d := createDispatch(t, td, &controlplanev1.CreateDispatchRequest{NodeId: victim.deviceID, Capability: "system.info"})
	if got := node.nextDispatch(); got.GetDispatchId() != d.GetId() {
		t.Errorf("the real node received dispatch %s, want %s", got.GetDispatchId(), d.GetId())
	}
}

// TestPublicPairingRPCsAreRateLimited: GetPairingStatus and WatchPairing, public RPCs
// that anyone reaching the port may call, share a per-address limit (issue 10, item 3):
// past it an address is refused with ResourceExhausted and Retry-After before anything
// is looked up, and other addresses are not affected.
func TestPublicPairingRPCsAreRateLimited(t *testing.T) {
	t.Parallel()
	td := startDaemon(t, "--database-url", storetest.URL(t), "--data-dir", t.TempDir())
	from := func(last byte) nodev1connect.NodeServiceClient {
		return nodev1connect.NewNodeServiceClient(td.clientFrom(net.IPv4(127, 0, 3, last)), td.baseURL)
	}
	status := func(c nodev1connect.NodeServiceClient) error {
		_, err := c.GetPairingStatus(t.Context(), connect.NewRequest(&nodev1.GetPairingStatusRequest{
			RequestId: ulid.Make().String(), PairingSecret: "guess"}))
		return err
	}
	watch := func(c nodev1connect.NodeServiceClient) error {
		stream, err := c.WatchPairing(t.Context(), connect.NewRequest(&nodev1.WatchPairingRequest{
			RequestId: ulid.Make().String(), PairingSecret: "guess"}))
		if err != nil {
			return err
		}
		defer stream.Close()
		for stream.Receive() {
		}
		return stream.Err()
	}
	wantLimited := func(what string, err error) {
		t.Helper()
		var ce *connect.Error
		if !errors.As(err, &ce) || ce.Code() != connect.CodeResourceExhausted {
			t.Fatalf("%s: got %v, want resource_exhausted", what, err)
		}
		if retry, err := strconv.Atoi(ce.Meta().Get("Retry-After")); err != nil || retry < 1 || retry > 60 {
			t.Errorf("%s: Retry-After %q, want whole seconds within 1..60", what, ce.Meta().Get("Retry-After"))
		}
	}

	// untilLimited calls next(i) for i = 0, 1, ... until a call is refused, and returns
	// how many calls it made. The bucket refills while the calls run (one a second), so
	// on a busy machine the refusal may come some calls after the burst, never before.
	untilLimited := func(what string, next func(i int) error) int {
		t.Helper()
		for i := 0; ; i++ {
			err := next(i)
			if connect.CodeOf(err) == connect.CodeResourceExhausted {
				wantLimited(fmt.Sprintf("%s, call %d", what, i+1), err)
				return i + 1
			}
			if connect.CodeOf(err) != connect.CodeNotFound {
				t.Fatalf("%s, call %d: got %v, want not_found", what, i+1, err)
			}
			if i > 100*pairing.FollowBurst {
				t.Fatalf("%s: %d calls from one address, none refused", what, i+1)
			}
		}
	}
	guesser := from(1)
	// The two RPCs share the bucket: alternating calls use up one burst.
	if n := untilLimited("alternating GetPairingStatus and WatchPairing", func(i int) error {
		if i%2 == 1 {
			return watch(guesser)
		}
		return status(guesser)
	}); n <= pairing.FollowBurst {
		t.Fatalf("call %d refused within the burst of %d", n, pairing.FollowBurst)
	}
	untilLimited("GetPairingStatus past the burst", func(int) error { return status(guesser) })
	untilLimited("WatchPairing past the burst", func(int) error { return watch(guesser) })
	// Another address is served.
	wantCode(t, "GetPairingStatus from another address", status(from(2)), connect.CodeNotFound)
	wantCode(t, "WatchPairing from another address", watch(from(2)), connect.CodeNotFound)
}
