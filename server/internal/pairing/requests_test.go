package pairing_test

import (
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/oklog/ulid/v2"

	"github.com/palyra/palyra/gen/dbsqlc"
	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	nodev1 "github.com/palyra/palyra/gen/go/palyra/node/v1"
	"github.com/palyra/palyra/internal/eventually"
	"github.com/palyra/palyra/internal/testpki"
	"github.com/palyra/palyra/server/internal/audit"
	"github.com/palyra/palyra/server/internal/identity"
	"github.com/palyra/palyra/server/internal/pairing"
)

// listAll lists every request straight from the database.
func listAll() dbsqlc.ListPairingRequestsParams {
	return dbsqlc.ListPairingRequestsParams{PageLimit: 1000}
}

// Procedures whose audit targets the tests check.
const (
	procStart   = "/palyra.node.v1.NodeService/StartPairing"
	procApprove = "/palyra.controlplane.v1.PairingService/ApprovePairingRequest"
	procReject  = "/palyra.controlplane.v1.PairingService/RejectPairingRequest"
)

func TestPairingHappyPath(t *testing.T) {
	t.Parallel()
	b := setup(t)
	code := b.createCode(t, &controlplanev1.CreatePairingCodeRequest{Method: controlplanev1.PairingMethod_PAIRING_METHOD_PIN, Label: "lab node"})
	req, key := startReq(t, code.GetCode())
	started, err := b.start(t, req)
	if err != nil {
		t.Fatalf("start pairing: %v", err)
	}
	id, secret := started.GetRequestId(), started.GetPairingSecret()
	if !ulidOK(id) || len(secret) < 22 {
		t.Fatalf("request id %q, secret of %d characters", id, len(secret))
	}
	if started.GetPublicKeyFingerprint() != fingerprint(t, key) {
		t.Errorf("public key fingerprint %q, want %q", started.GetPublicKeyFingerprint(), fingerprint(t, key))
	}
	if got, want := started.GetExpireTime().AsTime(), b.clock.Now().Add(requestTTL); !got.Equal(want) {
		t.Errorf("request expires %v, want %v", got, want)
	}
	if got := b.calls.last(procStart); got != "pairing_request:"+id {
		t.Errorf("StartPairing named the audit target %q", got)
	}
	row, err := b.store.Q().GetPairingRequest(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(row.SecretHash), secret) || len(row.SecretHash) != 32 {
		t.Errorf("the pairing secret is stored as %x", row.SecretHash)
	}

	st, err := b.status(t, id, secret)
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	if st.GetState() != nodev1.PairingState_PAIRING_STATE_PENDING_APPROVAL || st.GetCertificatePem() != "" {
		t.Errorf("status before the decision: %v", st)
	}

	// What the approver sees.
	b.clock.Advance(2 * time.Minute)
	list, err := b.admin.ListPairingRequests(t.Context(), connect.NewRequest(&controlplanev1.ListPairingRequestsRequest{
		State: nodev1.PairingState_PAIRING_STATE_PENDING_APPROVAL,
	}))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(list.Msg.GetPairingRequests()); n != 1 {
		t.Fatalf("%d pending requests, want 1", n)
	}
	seen := list.Msg.GetPairingRequests()[0]
	if seen.GetId() != id || seen.GetDeviceName() != "node-1" || seen.GetPlatform() != "linux/amd64" ||
		seen.GetAgentVersion() != "1.2.3" || seen.GetSourceAddress() != "127.0.0.1" ||
		seen.GetPublicKeyFingerprint() != fingerprint(t, key) || seen.GetAge().AsDuration() != 2*time.Minute ||
		seen.GetCodeId() != code.GetPairingCode().GetId() || seen.GetDeviceId() != "" {
		t.Errorf("the approver sees %v", seen)
	}

	approved, err := b.approve(t, &controlplanev1.ApprovePairingRequestRequest{
		Id:                     id,
		ExpectedKeyFingerprint: fingerprint(t, key),
		Labels:                 map[string]string{"site": "lab", "rack": "4"},
	})
	if err != nil {
		t.Fatalf("approve: %v", err)
	}
	deviceID := approved.GetDeviceId()
	if approved.GetState() != nodev1.PairingState_PAIRING_STATE_APPROVED || !ulidOK(deviceID) ||
		approved.GetDecidedBy() != admin.ID() || approved.GetLabels()["site"] != "lab" || approved.GetCertificateFingerprint() == "" {
		t.Errorf("approved request: %v", approved)
	}
	if got := b.calls.last(procApprove); got != "pairing_request:"+id+" device:"+deviceID {
		t.Errorf("ApprovePairingRequest named the audit target %q", got)
	}

	// The node collects its certificate, which completes the request.
	st, err = b.status(t, id, secret)
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	if st.GetState() != nodev1.PairingState_PAIRING_STATE_COMPLETED || st.GetDeviceId() != deviceID {
		t.Fatalf("status after the approval: %v", st)
	}
	if st.GetCaCertificatePem() != string(b.authority.PEM()) {
		t.Error("the status does not carry the CA certificate")
	}
	for _, s := range []string{st.GetCertificatePem(), st.GetCaCertificatePem()} {
		if strings.Contains(s, "PRIVATE KEY") {
			t.Error("the status carries a private key")
		}
	}
	cert := parseCertPEM(t, st.GetCertificatePem())
	checkDeviceCertificate(t, b, cert, deviceID)
	if pub, ok := cert.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(key.Public()) {
		t.Error("the certificate is not for the node's key")
	}
	if !st.GetCertificateExpireTime().AsTime().Equal(cert.NotAfter) {
		t.Errorf("certificate_expire_time %v, certificate NotAfter %v", st.GetCertificateExpireTime().AsTime(), cert.NotAfter)
	}
	if identity.Fingerprint(cert.Raw) != approved.GetCertificateFingerprint() {
		t.Error("the certificate is not the one the approval names")
	}

	// Recorded: the certificate with its device, the device, the completed request.
	issued, err := b.store.Q().GetIssuedCertificate(t.Context(), identity.Fingerprint(cert.Raw))
	if err != nil {
		t.Fatalf("the certificate is not recorded: %v", err)
	}
	if issued.Kind != identity.KindDevice || issued.DeviceID == nil || *issued.DeviceID != deviceID || issued.RevokedAt != nil ||
		issued.IssuedByReplica != "replica-test" || len(issued.DnsNames) != 0 {
		t.Errorf("recorded certificate: %+v", issued)
	}
	device, err := b.store.Q().GetDevice(t.Context(), deviceID)
	if err != nil {
		t.Fatalf("no device row: %v", err)
	}
	var labels map[string]string
	if err := json.Unmarshal(device.Labels, &labels); err != nil || labels["rack"] != "4" || len(labels) != 2 {
		t.Errorf("device labels %s", device.Labels)
	}
	if device.Name != "node-1" || device.Platform != "linux/amd64" || device.AgentVersion != "1.2.3" ||
		device.PublicKeyFingerprint != fingerprint(t, key) || device.RevokedAt != nil {
		t.Errorf("device row %+v", device)
	}
	if got := b.getRequest(t, id); got.GetState() != nodev1.PairingState_PAIRING_STATE_COMPLETED {
		t.Errorf("request is %v, want completed", got.GetState())
	}

	// Collecting again returns the same certificate to the secret holder.
	again, err := b.status(t, id, secret)
	if err != nil || again.GetCertificatePem() != st.GetCertificatePem() || again.GetState() != nodev1.PairingState_PAIRING_STATE_COMPLETED {
		t.Errorf("second collection: %v, %v", again, err)
	}
}

// parseCertPEM parses one PEM certificate.
func parseCertPEM(t *testing.T, s string) *x509.Certificate {
	t.Helper()
	block, rest := pem.Decode([]byte(s))
	if block == nil || block.Type != "CERTIFICATE" || len(strings.TrimSpace(string(rest))) != 0 {
		t.Fatalf("not one PEM certificate: %q", s)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// checkDeviceCertificate checks that cert is a device certificate for deviceID from the
// bundle's CA, with nothing the hostile CSR asked for.
func checkDeviceCertificate(t *testing.T, b *testBundle, cert *x509.Certificate, deviceID string) {
	t.Helper()
	verify := func(usage x509.ExtKeyUsage) error {
		_, err := cert.Verify(x509.VerifyOptions{Roots: b.authority.CertPool(), CurrentTime: b.clock.Now(), KeyUsages: []x509.ExtKeyUsage{usage}})
		return err
	}
	if err := verify(x509.ExtKeyUsageClientAuth); err != nil {
		t.Errorf("the certificate does not verify for client authentication: %v", err)
	}
	if verify(x509.ExtKeyUsageServerAuth) == nil {
		t.Error("the certificate verifies for server authentication")
	}
	if len(cert.URIs) != 1 || cert.URIs[0].String() != "palyra://device/"+deviceID {
		t.Errorf("URI SANs %v, want palyra://device/%s only", cert.URIs, deviceID)
	}
	if got, ok := identity.DeviceID(cert); !ok || got != deviceID {
		t.Errorf("identity.DeviceID = %q, %v", got, ok)
	}
	if len(cert.DNSNames) != 0 || len(cert.IPAddresses) != 0 || len(cert.EmailAddresses) != 0 {
		t.Errorf("the CSR's names were copied: %v %v %v", cert.DNSNames, cert.IPAddresses, cert.EmailAddresses)
	}
	if len(cert.ExtKeyUsage) != 1 || cert.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth || len(cert.UnknownExtKeyUsage) != 0 {
		t.Errorf("extended key usages %v %v, want clientAuth only", cert.ExtKeyUsage, cert.UnknownExtKeyUsage)
	}
	if cert.IsCA || cert.Subject.CommonName != deviceID || strings.Contains(cert.Subject.String(), hostileCommonName+",") {
		t.Errorf("subject %q, IsCA %v", cert.Subject, cert.IsCA)
	}
	issuedAt := b.clock.Now().Truncate(time.Second)
	if !cert.NotAfter.Equal(issuedAt.Add(certLifetime)) {
		t.Errorf("the certificate expires %v, want %v (lifetime %v)", cert.NotAfter, issuedAt.Add(certLifetime), certLifetime)
	}
}

// TestConcurrentDecisionsOneWins: of two approvals and a rejection of one request at
// once, exactly one decides it; the others are refused, and a refused approval leaves no
// device and no certificate behind.
func TestConcurrentDecisionsOneWins(t *testing.T) {
	t.Parallel()
	b := setup(t)
	approvals := 0
	for range 8 {
		id, _ := b.pending(t)
		var (
			wg       sync.WaitGroup
			mu       sync.Mutex
			won      []string
			refusals int
			others   []error
		)
		begin := make(chan struct{})
		decide := func(name string, act func() error) {
			wg.Go(func() {
				<-begin
				err := act()
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					won = append(won, name)
				case connect.CodeOf(err) == connect.CodeFailedPrecondition:
					refusals++
				default:
					others = append(others, err)
				}
			})
		}
		for range 2 {
			decide("approve", func() error {
				_, err := b.approve(t, &controlplanev1.ApprovePairingRequestRequest{Id: id})
				return err
			})
		}
		decide("reject", func() error {
			_, err := b.reject(t, id, "changed my mind")
			return err
		})
		close(begin)
		wg.Wait()
		if len(won) != 1 || refusals != 2 || len(others) > 0 {
			t.Fatalf("decisions won: %v, %d refused, other answers %v; want exactly one to win", won, refusals, others)
		}
		if won[0] == "approve" {
			approvals++
		}
	}
	var devs, certs int
	if err := b.store.Pool().QueryRow(t.Context(), "select count(*) from devices").Scan(&devs); err != nil {
		t.Fatal(err)
	}
	if err := b.store.Pool().QueryRow(t.Context(), "select count(*) from issued_certificates where kind = 'device'").Scan(&certs); err != nil {
		t.Fatal(err)
	}
	if devs != approvals || certs != approvals {
		t.Errorf("%d approvals won, and there are %d devices and %d device certificates", approvals, devs, certs)
	}
}

// pending starts a request with a fresh PIN code and returns its id and secret.
func (b *testBundle) pending(t *testing.T) (id, secret string) {
	t.Helper()
	res, _ := b.mustStart(t, b.createPIN(t).GetCode())
	return res.GetRequestId(), res.GetPairingSecret()
}

func TestDecisionsAreFinal(t *testing.T) {
	t.Parallel()
	// Each state is reached from a fresh pending request.
	reach := map[string]func(t *testing.T, b *testBundle, id, secret string){
		"approved": func(t *testing.T, b *testBundle, id, _ string) {
			if _, err := b.approve(t, &controlplanev1.ApprovePairingRequestRequest{Id: id}); err != nil {
				t.Fatal(err)
			}
		},
		"completed": func(t *testing.T, b *testBundle, id, secret string) {
			if _, err := b.approve(t, &controlplanev1.ApprovePairingRequestRequest{Id: id}); err != nil {
				t.Fatal(err)
			}
			if _, err := b.status(t, id, secret); err != nil {
				t.Fatal(err)
			}
		},
		"rejected": func(t *testing.T, b *testBundle, id, _ string) {
			if _, err := b.reject(t, id, "unknown machine"); err != nil {
				t.Fatal(err)
			}
		},
		"expired": func(t *testing.T, b *testBundle, _, _ string) {
			b.clock.Advance(requestTTL)
		},
	}
	decide := map[string]func(t *testing.T, b *testBundle, id string) error{
		"approve": func(t *testing.T, b *testBundle, id string) error {
			_, err := b.approve(t, &controlplanev1.ApprovePairingRequestRequest{Id: id})
			return err
		},
		"reject": func(t *testing.T, b *testBundle, id string) error {
			_, err := b.reject(t, id, "changed my mind")
			return err
		},
	}
	for state, prepare := range reach {
		for decision, act := range decide {
			t.Run(decision+" "+state, func(t *testing.T) {
				t.Parallel()
				b := setup(t)
				id, secret := b.pending(t)
				prepare(t, b, id, secret)
				before, err := b.store.Q().GetPairingRequest(t.Context(), id)
				if err != nil {
					t.Fatal(err)
				}
				ce := wantCode(t, act(t, b, id), connect.CodeFailedPrecondition)
				if !strings.Contains(ce.Message(), state) {
					t.Errorf("the refusal %q does not name the state %s", ce.Message(), state)
				}
				after, err := b.store.Q().GetPairingRequest(t.Context(), id)
				if err != nil {
					t.Fatal(err)
				}
				if after.State != state || after.DecidedBy != before.DecidedBy && state != "expired" || after.Reason != before.Reason && state != "expired" {
					t.Errorf("the refused decision changed the request: %s by %q (%q), was %s by %q", after.State, after.DecidedBy, after.Reason, before.State, before.DecidedBy)
				}
			})
		}
	}
	t.Run("unknown request", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		for decision, act := range decide {
			if err := act(t, b, ulid.Make().String()); connect.CodeOf(err) != connect.CodeNotFound {
				t.Errorf("%s an unknown request: %v, want NotFound", decision, err)
			}
		}
	})
}

func TestDatabaseRefusesIllegalTransitions(t *testing.T) {
	t.Parallel()
	b := setup(t)
	rejected, _ := b.pending(t)
	if _, err := b.reject(t, rejected, "no"); err != nil {
		t.Fatal(err)
	}
	completed, secret := b.pending(t)
	if _, err := b.approve(t, &controlplanev1.ApprovePairingRequestRequest{Id: completed}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.status(t, completed, secret); err != nil {
		t.Fatal(err)
	}
	pending, _ := b.pending(t)
	cases := map[string]struct{ id, to string }{
		"rejected to pending":  {rejected, "pending_approval"},
		"rejected to approved": {rejected, "approved"},
		"completed to pending": {completed, "pending_approval"},
		"completed to expired": {completed, "expired"},
		"pending to completed": {pending, "completed"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := b.store.Pool().Exec(t.Context(), "update pairing_requests set state = $1 where id = $2", tc.to, tc.id)
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != "23514" || pgErr.ConstraintName != "pairing_requests_transition" {
				t.Errorf("the update returned %v, want the pairing_requests_transition check violation", err)
			}
		})
	}
}

func TestApproveRefusesAnUnexpectedKey(t *testing.T) {
	t.Parallel()
	b := setup(t)
	started, key := b.mustStart(t, b.createPIN(t).GetCode())
	other := fingerprint(t, testpki.Key(t))
	_, err := b.approve(t, &controlplanev1.ApprovePairingRequestRequest{Id: started.GetRequestId(), ExpectedKeyFingerprint: other})
	ce := wantCode(t, err, connect.CodeFailedPrecondition)
	if !strings.Contains(ce.Message(), fingerprint(t, key)) || !strings.Contains(ce.Message(), other) {
		t.Errorf("the refusal %q does not name both keys", ce.Message())
	}
	if got := b.getRequest(t, started.GetRequestId()); got.GetState() != nodev1.PairingState_PAIRING_STATE_PENDING_APPROVAL {
		t.Errorf("the refused approval left the request %v", got.GetState())
	}
	if n, err := b.store.Q().ListRevokedDevices(t.Context()); err != nil || len(n) != 0 {
		t.Errorf("devices: %v, %v", n, err)
	}
	if _, err := b.approve(t, &controlplanev1.ApprovePairingRequestRequest{Id: started.GetRequestId(), ExpectedKeyFingerprint: fingerprint(t, key)}); err != nil {
		t.Errorf("approve with the right key: %v", err)
	}
}

func TestPairingStatusNeedsTheSecret(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id, secret := b.pending(t)
	otherID, otherSecret := b.pending(t)
	cases := map[string]struct{ id, secret string }{
		"wrong secret":             {id, secret + "x"},
		"another request's secret": {id, otherSecret},
		"unknown request":          {ulid.Make().String(), secret},
		"secret of the other id":   {otherID, secret},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := b.status(t, tc.id, tc.secret)
			if ce := wantCode(t, err, connect.CodeNotFound); ce.Message() != pairing.StatusRefusal {
				t.Errorf("refused with %q, want %q", ce.Message(), pairing.StatusRefusal)
			}
			stream, err := b.node.WatchPairing(t.Context(), connect.NewRequest(&nodev1.WatchPairingRequest{RequestId: tc.id, PairingSecret: tc.secret}))
			if err != nil {
				t.Fatal(err)
			}
			if stream.Receive() {
				t.Errorf("the watch sent %v", stream.Msg())
			}
			if ce := wantCode(t, stream.Err(), connect.CodeNotFound); ce.Message() != pairing.StatusRefusal {
				t.Errorf("the watch was refused with %q", ce.Message())
			}
			_ = stream.Close()
		})
	}
	// Approved with the wrong secret: no certificate, and the request stays approved.
	if _, err := b.approve(t, &controlplanev1.ApprovePairingRequestRequest{Id: id}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.status(t, id, otherSecret); connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("status with another's secret after approval: %v", err)
	}
	if got := b.getRequest(t, id); got.GetState() != nodev1.PairingState_PAIRING_STATE_APPROVED {
		t.Errorf("a wrong secret moved the request to %v", got.GetState())
	}
}

func TestRejectedRequestTellsTheNodeWhy(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id, secret := b.pending(t)
	rejected, err := b.reject(t, id, "not one of ours")
	if err != nil {
		t.Fatal(err)
	}
	if rejected.GetState() != nodev1.PairingState_PAIRING_STATE_REJECTED || rejected.GetDecidedBy() != admin.ID() || rejected.GetDecideTime() == nil {
		t.Errorf("rejected request %v", rejected)
	}
	if got := b.calls.last(procReject); got != "pairing_request:"+id {
		t.Errorf("RejectPairingRequest named the audit target %q", got)
	}
	st, err := b.status(t, id, secret)
	if err != nil {
		t.Fatal(err)
	}
	if st.GetState() != nodev1.PairingState_PAIRING_STATE_REJECTED || st.GetReason() != "not one of ours" || st.GetCertificatePem() != "" {
		t.Errorf("status %v", st)
	}
	_, err = b.reject(t, id, "")
	wantCode(t, err, connect.CodeInvalidArgument)
}

func TestPendingRequestsExpire(t *testing.T) {
	t.Parallel()
	// Each way of meeting an overdue request must expire it and audit the expiry.
	cases := map[string]func(t *testing.T, b *testBundle, id, secret string){
		"by the sweeper": func(t *testing.T, b *testBundle, id, _ string) {
			b.run(t)
			eventually.NoError(t, "the sweeper expires the request", func() error {
				r, err := b.store.Q().GetPairingRequest(t.Context(), id)
				if err != nil {
					t.Fatal(err)
				}
				if r.State != "expired" {
					return fmt.Errorf("the request is %s", r.State)
				}
				return nil
			})
		},
		"lazily by the node's status": func(t *testing.T, b *testBundle, id, secret string) {
			st, err := b.status(t, id, secret)
			if err != nil {
				t.Fatal(err)
			}
			if st.GetState() != nodev1.PairingState_PAIRING_STATE_EXPIRED || st.GetReason() == "" {
				t.Errorf("status %v", st)
			}
		},
		"lazily by the node's watch": func(t *testing.T, b *testBundle, id, secret string) {
			stream, err := b.node.WatchPairing(t.Context(), connect.NewRequest(&nodev1.WatchPairingRequest{RequestId: id, PairingSecret: secret}))
			if err != nil {
				t.Fatal(err)
			}
			defer stream.Close()
			if !stream.Receive() || stream.Msg().GetStatus().GetState() != nodev1.PairingState_PAIRING_STATE_EXPIRED {
				t.Fatalf("the watch sent %v, %v", stream.Msg(), stream.Err())
			}
			if stream.Receive() || stream.Err() != nil {
				t.Errorf("the watch did not end after the expiry: %v", stream.Err())
			}
		},
		"lazily by GetPairingRequest": func(t *testing.T, b *testBundle, id, _ string) {
			if got := b.getRequest(t, id); got.GetState() != nodev1.PairingState_PAIRING_STATE_EXPIRED {
				t.Errorf("request %v", got.GetState())
			}
		},
		"lazily by ListPairingRequests": func(t *testing.T, b *testBundle, id, _ string) {
			res, err := b.admin.ListPairingRequests(t.Context(), connect.NewRequest(&controlplanev1.ListPairingRequestsRequest{
				State: nodev1.PairingState_PAIRING_STATE_EXPIRED,
			}))
			if err != nil {
				t.Fatal(err)
			}
			if rs := res.Msg.GetPairingRequests(); len(rs) != 1 || rs[0].GetId() != id || rs[0].GetReason() == "" {
				t.Errorf("expired requests: %v", rs)
			}
		},
		"lazily by an approval": func(t *testing.T, b *testBundle, id, _ string) {
			_, err := b.approve(t, &controlplanev1.ApprovePairingRequestRequest{Id: id})
			if ce := wantCode(t, err, connect.CodeFailedPrecondition); !strings.Contains(ce.Message(), "expired") {
				t.Errorf("refused with %q", ce.Message())
			}
		},
	}
	for name, meet := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			id, secret := b.pending(t)
			b.clock.Advance(requestTTL - time.Second)
			if got := b.getRequest(t, id); got.GetState() != nodev1.PairingState_PAIRING_STATE_PENDING_APPROVAL {
				t.Fatalf("the request is %v a second before it expires", got.GetState())
			}
			b.clock.Advance(time.Second)
			meet(t, b, id, secret)

			r, err := b.store.Q().GetPairingRequest(t.Context(), id)
			if err != nil {
				t.Fatal(err)
			}
			if r.State != "expired" || r.DecidedAt == nil || !r.DecidedAt.Equal(r.ExpiresAt) {
				t.Errorf("request %s decided at %v", r.State, r.DecidedAt)
			}
			// The expiry and its audit event are two transactions: the sweeper may be
			// between them.
			var events []audit.Record
			eventually.True(t, "a pairing.expire audit event", func() bool {
				events, err = b.audit.List(t.Context(), audit.Filter{Procedure: "pairing.expire"})
				if err != nil {
					t.Fatal(err)
				}
				return len(events) > 0
			})
			if len(events) != 1 {
				t.Fatalf("%d pairing.expire audit events, want 1", len(events))
			}
			e := events[0]
			if e.Principal != "system" || e.Target != "pairing_request:"+id || e.Outcome != audit.Success || e.Code != "ok" {
				t.Errorf("audit event %+v", e.Event)
			}
		})
	}
}

func TestListPairingRequests(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var ids []string
	for range 4 {
		id, _ := b.pending(t)
		ids = append(ids, id)
		b.clock.Advance(time.Second)
	}
	if _, err := b.reject(t, ids[1], "no"); err != nil {
		t.Fatal(err)
	}
	list := func(req *controlplanev1.ListPairingRequestsRequest) ([]string, string) {
		t.Helper()
		res, err := b.admin.ListPairingRequests(t.Context(), connect.NewRequest(req))
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, r := range res.Msg.GetPairingRequests() {
			out = append(out, r.GetId())
		}
		return out, res.Msg.GetNextPageToken()
	}
	var all []string
	token := ""
	for range 10 {
		page, next := list(&controlplanev1.ListPairingRequestsRequest{PageSize: 3, PageToken: token})
		all = append(all, page...)
		if token = next; token == "" {
			break
		}
	}
	if want := []string{ids[3], ids[2], ids[1], ids[0]}; strings.Join(all, ",") != strings.Join(want, ",") {
		t.Errorf("listed %v, want %v newest first", all, want)
	}
	if got, _ := list(&controlplanev1.ListPairingRequestsRequest{State: nodev1.PairingState_PAIRING_STATE_REJECTED}); len(got) != 1 || got[0] != ids[1] {
		t.Errorf("rejected requests %v, want [%s]", got, ids[1])
	}
	if got, _ := list(&controlplanev1.ListPairingRequestsRequest{State: nodev1.PairingState_PAIRING_STATE_PENDING_APPROVAL}); len(got) != 3 {
		t.Errorf("pending requests %v, want 3", got)
	}
	_, err := b.admin.ListPairingRequests(t.Context(), connect.NewRequest(&controlplanev1.ListPairingRequestsRequest{PageToken: "!!"}))
	wantCode(t, err, connect.CodeInvalidArgument)
	_, err = b.admin.GetPairingRequest(t.Context(), connect.NewRequest(&controlplanev1.GetPairingRequestRequest{Id: ulid.Make().String()}))
	wantCode(t, err, connect.CodeNotFound)
}
