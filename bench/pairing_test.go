package bench

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	"github.com/palyra/palyra/gen/go/palyra/controlplane/v1/controlplanev1connect"
	nodev1 "github.com/palyra/palyra/gen/go/palyra/node/v1"
	"github.com/palyra/palyra/gen/go/palyra/node/v1/nodev1connect"
	"github.com/palyra/palyra/internal/testpki"
)

// pairingsPerToken is how many pairings one admin token serves: each makes two admin
// calls (CreatePairingCode, ApprovePairingRequest), and a fresh token's burst is
// maxRatePerMinute calls, so that its rate limit never bites within a run.
const pairingsPerToken = maxRatePerMinute/2 - 1000

// pairingSources numbers the loopback addresses the pairing nodes call from, across
// the whole process, so that no address starts more than a few pairings a minute.
var pairingSources atomic.Int64

// BenchmarkPairing measures completed pairings through the public pairing path, as an
// administrator and `palyra node pair` make them, one after another on each of c
// workers:
//
//  1. the administrator creates a pairing code (CreatePairingCode, a PIN or a QR code);
//  2. the node, on a TLS connection of its own from a loopback address of its own,
//     calls StartPairing with the code and a CSR for a fresh P-256 key, then follows
//     its request with WatchPairing (as the agent does) and gets the pending status;
//  3. the administrator approves it, bound to the key's fingerprint
//     (ApprovePairingRequest: CSR check, device registered, certificate signed and
//     recorded, one transaction);
//  4. the watch delivers the certificate (the request is completed), which the node
//     parses.
//
// The keys and CSRs are made before the clock starts. StartPairing is rate limited per
// remote address (10 a minute, burst 10, not configurable): every pairing calls from
// its own address of 127.0.0.0/8, as distinct nodes do, and pays its own TCP and TLS
// handshake, as a node that pairs does. The administrator's calls share one HTTP/2
// connection and a fresh admin token per pairingsPerToken pairings. Besides closedLoop's
// figures (the whole pairing, steps 1 to 4) it reports:
//
//	approve-to-cert-p50-µs, -p99-µs  from before ApprovePairingRequest to the watch's
//	                                 certificate (signing, persistence, wake-up)
//	create-code-server-µs, start-server-µs, approve-server-µs
//	                                 palyrad's mean time in each call, from its /metrics
//
// One palyrad and one database serve every sub-benchmark.
func BenchmarkPairing(b *testing.B) {
	pg := openPostgres(b)
	d := startDaemon(b, pg.newDatabase(b), b.TempDir())
	m := meter{palyrad: d.pid(), pprof: d.pprof, pg: pg}
	for _, method := range []controlplanev1.PairingMethod{
		controlplanev1.PairingMethod_PAIRING_METHOD_PIN, controlplanev1.PairingMethod_PAIRING_METHOD_QR,
	} {
		for _, c := range []int{1, 16} {
			name := strings.ToLower(strings.TrimPrefix(method.String(), "PAIRING_METHOD_"))
			b.Run(fmt.Sprintf("method=%s/c=%d", name, c), func(b *testing.B) {
				benchPairing(b, d, pg, m, method, c)
			})
		}
	}
}

// benchPairing runs one sub-benchmark of BenchmarkPairing.
func benchPairing(b *testing.B, d *daemon, pg *postgres, m meter, method controlplanev1.PairingMethod, c int) {
	const warmUp = 3
	csrs := newCSRs(b, warmUp+b.N)
	hc := d.apiClient(d.newToken(b, "bench-pairing-warm-up"))
	b.Cleanup(hc.CloseIdleConnections)
	admins := []controlplanev1connect.PairingServiceClient{controlplanev1connect.NewPairingServiceClient(hc, d.baseURL)}
	for range (b.N + pairingsPerToken - 1) / pairingsPerToken {
		hc := d.apiClient(d.newToken(b, "bench-pairing"))
		b.Cleanup(hc.CloseIdleConnections)
		admins = append(admins, controlplanev1connect.NewPairingServiceClient(hc, d.baseURL))
	}
	ctx := context.Background()
	for i := range warmUp {
		if _, err := pairWatching(ctx, d, admins[0], method, csrs[b.N+i]); err != nil {
			b.Fatalf("warm-up: %v", err)
		}
	}
	pg.checkpoint(b)
	scraper := &http.Client{Transport: d.transport(nil, nil)}
	defer scraper.CloseIdleConnections()
	before, err := d.metrics(ctx, scraper)
	if err != nil {
		b.Fatal(err)
	}
	var next atomic.Int64
	approveToCert := make([]time.Duration, b.N)
	closedLoop(b, c, m, "pairings/s", func(ctx context.Context) error {
		i := int(next.Add(1) - 1)
		lat, err := pairWatching(ctx, d, admins[1+i/pairingsPerToken], method, csrs[i])
		approveToCert[i] = lat
		return err
	})
	after, err := d.metrics(ctx, scraper)
	if err != nil {
		b.Fatal(err)
	}
	var h histogram
	for _, l := range approveToCert {
		h.record(l)
	}
	b.ReportMetric(micros(h.quantile(0.50)), "approve-to-cert-p50-µs")
	b.ReportMetric(micros(h.quantile(0.99)), "approve-to-cert-p99-µs")
	for unit, procedure := range map[string]string{
		"create-code-server-µs": controlplanev1connect.PairingServiceCreatePairingCodeProcedure,
		"start-server-µs":       nodev1connect.NodeServiceStartPairingProcedure,
		"approve-server-µs":     controlplanev1connect.PairingServiceApprovePairingRequestProcedure,
	} {
		labels := `{procedure="` + procedure + `"}`
		if n := after["palyra_rpc_handling_seconds_count"+labels] - before["palyra_rpc_handling_seconds_count"+labels]; n > 0 {
			sum := after["palyra_rpc_handling_seconds_sum"+labels] - before["palyra_rpc_handling_seconds_sum"+labels]
			b.ReportMetric(sum/n*1e6, unit)
		}
	}
}

// pairingKey is a node's fresh key and the CSR for it.
type pairingKey struct {
	key *ecdsa.PrivateKey
	csr []byte
}

// newCSRs makes n P-256 keys and CSRs, as `palyra node pair` does before it starts.
func newCSRs(tb testing.TB, n int) []pairingKey {
	tb.Helper()
	keys := make([]pairingKey, n)
	for i := range keys {
		key := testpki.Key(tb)
		keys[i] = pairingKey{key: key, csr: testpki.CSR(tb, key, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "bench"}})}
	}
	return keys
}

// pairWatching makes one whole pairing with k (steps 1 to 4 of BenchmarkPairing) and
// returns the time from before the approval to the certificate.
func pairWatching(ctx context.Context, d *daemon, admin controlplanev1connect.PairingServiceClient,
	method controlplanev1.PairingMethod, k pairingKey,
) (time.Duration, error) {
	code, err := admin.CreatePairingCode(ctx, connect.NewRequest(&controlplanev1.CreatePairingCodeRequest{
		Method: method, Label: "bench-pairing",
	}))
	if err != nil {
		return 0, fmt.Errorf("create pairing code: %w", err)
	}
	start := &nodev1.StartPairingRequest{Csr: k.csr, DeviceName: "bench-pairing", Platform: "linux/amd64", AgentVersion: "bench"}
	if method == controlplanev1.PairingMethod_PAIRING_METHOD_QR {
		start.Code = &nodev1.StartPairingRequest_QrCode{QrCode: code.Msg.GetCode()}
	} else {
		start.Code = &nodev1.StartPairingRequest_Pin{Pin: code.Msg.GetCode()}
	}
	tr := d.transport(loopback(5, int(pairingSources.Add(1))), nil)
	defer tr.CloseIdleConnections()
	node := nodev1connect.NewNodeServiceClient(&http.Client{Transport: tr}, d.baseURL)
	started, err := node.StartPairing(ctx, connect.NewRequest(start))
	if err != nil {
		return 0, fmt.Errorf("start pairing: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	watch, err := node.WatchPairing(ctx, connect.NewRequest(&nodev1.WatchPairingRequest{
		RequestId: started.Msg.GetRequestId(), PairingSecret: started.Msg.GetPairingSecret(),
	}))
	if err != nil {
		return 0, fmt.Errorf("watch pairing: %w", err)
	}
	defer watch.Close()
	if !watch.Receive() {
		return 0, fmt.Errorf("watch pairing: no first status: %w", watch.Err())
	}
	if st := watch.Msg().GetStatus().GetState(); st != nodev1.PairingState_PAIRING_STATE_PENDING_APPROVAL {
		return 0, fmt.Errorf("watch pairing: first status %s, want pending approval", st)
	}
	approving := time.Now()
	if _, err := admin.ApprovePairingRequest(ctx, connect.NewRequest(&controlplanev1.ApprovePairingRequestRequest{
		Id: started.Msg.GetRequestId(), ExpectedKeyFingerprint: started.Msg.GetPublicKeyFingerprint(),
	})); err != nil {
		return 0, fmt.Errorf("approve: %w", err)
	}
	for watch.Receive() {
		st := watch.Msg().GetStatus()
		if st.GetCertificatePem() == "" {
			continue
		}
		took := time.Since(approving)
		block, _ := pem.Decode([]byte(st.GetCertificatePem()))
		if block == nil {
			return 0, fmt.Errorf("watch pairing: the certificate of request %s is not PEM", st.GetRequestId())
		}
		leaf, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return 0, fmt.Errorf("watch pairing: %w", err)
		}
		if !k.key.PublicKey.Equal(leaf.PublicKey) || st.GetDeviceId() == "" {
			return 0, fmt.Errorf("watch pairing: request %s got a certificate for another key or no device", st.GetRequestId())
		}
		return took, nil
	}
	return 0, fmt.Errorf("watch pairing: ended without a certificate: %v", watch.Err())
}
