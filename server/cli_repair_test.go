package main

// The end-to-end test of pairing again, as users run it: the real palyra binary re-pairs
// a node with a real palyrad, proving it is the device; an attacker holding a valid
// pairing code names that device without proof and is flagged, refused, and paired as
// a new device only by the approver's choice; a node that lost its key replaces its
// device only by the approver's explicit --replace-device; a revoked device comes back
// only with --reinstate.

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/palyra/palyra/internal/eventually"
	"github.com/palyra/palyra/server/internal/store/storetest"
)

// nodePairing is a `palyra node pair` that runs until its request is decided.
type nodePairing struct {
	stderr *syncBuffer
	done   chan error
}

// startNodePair runs `palyra node pair` with a fresh PIN code from admin, on stateDir,
// and extra flags.
func startNodePair(t *testing.T, admin *cliUser, addr, caFP, stateDir string, extra ...string) *nodePairing {
	t.Helper()
	var code struct {
		Code string `json:"code"`
	}
	if err := json.Unmarshal([]byte(admin.ok(t, "pairing", "codes", "create", "--method", "pin", "-o", "json")), &code); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	args := append([]string{"node", "pair", "--url", "https://" + addr, "--pin", code.Code, "--ca-fingerprint", caFP,
		"--name", "db-1", "--state-dir", stateDir}, extra...)
	cmd := exec.CommandContext(ctx, cliBinary(t), args...)
	cmd.Env = []string{"HOME=" + t.TempDir()}
	n := &nodePairing{stderr: newSyncBuffer(), done: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = newSyncBuffer(), n.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { n.done <- cmd.Wait() }()
	t.Cleanup(func() {
		cancel()
		<-n.done
	})
	return n
}

// wait waits for the node's exit and returns its error (nil for exit 0).
func (n *nodePairing) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-n.done:
		n.done <- err // for the cleanup
		return err
	case <-time.After(time.Minute):
		t.Fatalf("palyra node pair did not finish within a minute:\n%s", n.stderr)
		return nil
	}
}

// pendingRequest is a pending request as `pairing requests list -o json` shows it.
type pendingRequest struct {
	ID                               string `json:"id"`
	PreviousDeviceID                 string `json:"previousDeviceId"`
	DeviceClaim                      string `json:"deviceClaim"`
	PossessionCertificateFingerprint string `json:"possessionCertificateFingerprint"`
}

// awaitRequest waits for the one pending request, and for the node to show it.
func awaitRequest(t *testing.T, admin *cliUser, n *nodePairing) pendingRequest {
	t.Helper()
	var request pendingRequest
	eventually.NoError(t, "one pending request, shown by the node", func() error {
		var list struct {
			PairingRequests []pendingRequest `json:"pairingRequests"`
		}
		if err := json.Unmarshal([]byte(admin.ok(t, "pairing", "requests", "list", "--state", "pending", "-o", "json")), &list); err != nil {
			t.Fatal(err)
		}
		if len(list.PairingRequests) != 1 || !strings.Contains(n.stderr.String(), list.PairingRequests[0].ID) {
			return fmt.Errorf("pending %+v; the node says:\n%s", list.PairingRequests, n.stderr)
		}
		request = list.PairingRequests[0]
		return nil
	})
	return request
}

// deviceOf reads the device id the node in stateDir paired as.
func deviceOf(t *testing.T, stateDir string) string {
	t.Helper()
	var h struct {
		DeviceID string `json:"device_id"`
	}
	b, err := os.ReadFile(filepath.Join(stateDir, "node-host.json"))
	if err != nil || json.Unmarshal(b, &h) != nil || h.DeviceID == "" {
		t.Fatalf("node-host.json of %s: %v, %s", stateDir, err, b)
	}
	return h.DeviceID
}

// waitRefused waits until palyrad at addr refuses cert at the handshake (revocations
// reach the handshake through a notification).
func waitRefused(t *testing.T, addr, caFile string, cert tls.Certificate, what string) {
	t.Helper()
	eventually.True(t, what+" refused after its revocation", func() bool { return handshake(addr, caFile, cert) != nil })
}

func TestCLIRepairing(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	d := startDaemon(t, nil, "--listen", "127.0.0.1:0", "--data-dir", dataDir, "--database-url", storetest.URL(t))
	caFile, caFP := filepath.Join(dataDir, "ca.pem"), caFingerprint(t, dataDir)
	admin := newCLIUser(t).with("PALYRA_TOKEN", bootstrapToken(t, dataDir), "PALYRA_URL", "https://"+d.addr, "PALYRA_CA_FILE", caFile)

	// A node pairs.
	node := t.TempDir()
	n := startNodePair(t, admin, d.addr, caFP, node)
	admin.ok(t, "pairing", "requests", "approve", awaitRequest(t, admin, n).ID)
	if err := n.wait(t); err != nil {
		t.Fatalf("node pair: %v\n%s", err, n.stderr)
	}
	device := deviceOf(t, node)
	_, firstCert := readNodeIdentity(t, node)

	// 1. It pairs again with a new key, proving it is the device: flagged as proven, an
	// approval as for any node re-pairs it, and its old certificate is refused.
	n = startNodePair(t, admin, d.addr, caFP, node, "--force")
	r := awaitRequest(t, admin, n)
	if r.PreviousDeviceID != device || r.DeviceClaim != "DEVICE_CLAIM_PROVEN" || r.PossessionCertificateFingerprint == "" {
		t.Errorf("the re-pairing request: %+v", r)
	}
	if list := admin.ok(t, "pairing", "requests", "list", "--state", "pending"); !strings.Contains(list, device+" proven") {
		t.Errorf("the list does not show the proven re-pairing:\n%s", list)
	}
	if !strings.Contains(n.stderr.String(), "pairing again as device "+device+": palyrad checked") {
		t.Errorf("the node does not say it proved the device:\n%s", n.stderr)
	}
	admin.ok(t, "pairing", "requests", "approve", r.ID)
	if err := n.wait(t); err != nil || deviceOf(t, node) != device {
		t.Fatalf("re-pairing: %v, device %s\n%s", err, deviceOf(t, node), n.stderr)
	}
	waitRefused(t, d.addr, caFile, firstCert, "the certificate the node re-paired from")
	_, cert := readNodeIdentity(t, node)
	if err := handshake(d.addr, caFile, cert); err != nil {
		t.Fatalf("the re-paired node's certificate is refused: %v", err)
	}

	// 2. An attacker holding a valid code names the device, without its key: flagged in
	// the list, show and API; a plain approval is refused and changes nothing.
	attacker := t.TempDir()
	host, err := os.ReadFile(filepath.Join(node, "node-host.json")) // the device id is all it has
	if err != nil || os.WriteFile(filepath.Join(attacker, "node-host.json"), host, 0o600) != nil {
		t.Fatal(err)
	}
	n = startNodePair(t, admin, d.addr, caFP, attacker)
	r = awaitRequest(t, admin, n)
	if r.PreviousDeviceID != device || r.DeviceClaim != "DEVICE_CLAIM_UNPROVEN" || r.PossessionCertificateFingerprint != "" {
		t.Errorf("the attacker's request: %+v", r)
	}
	if list := admin.ok(t, "pairing", "requests", "list", "--state", "pending"); !strings.Contains(list, device+" UNPROVEN") {
		t.Errorf("the list does not flag the request:\n%s", list)
	}
	if show := admin.ok(t, "pairing", "requests", "show", r.ID); !strings.Contains(show, "NOT PROVEN: the node names device "+device) {
		t.Errorf("show does not flag the request:\n%s", show)
	}
	refusal := admin.fails(t, 1, "pairing", "requests", "approve", r.ID)
	for _, want := range []string{"NOT PROVEN", "did not prove that it holds that device's key", "--replace-device " + device, "--new-device"} {
		if !strings.Contains(refusal, want) {
			t.Errorf("the refused approval does not say %q:\n%s", want, refusal)
		}
	}
	if err := handshake(d.addr, caFile, cert); err != nil {
		t.Fatalf("the refused approval cost the real node its certificate: %v", err)
	}
	// The approver's choice: a new device, the named one untouched.
	admin.ok(t, "pairing", "requests", "approve", r.ID, "--new-device")
	if err := n.wait(t); err != nil || deviceOf(t, attacker) == device {
		t.Fatalf("approved as a new device: %v, device %s\n%s", err, deviceOf(t, attacker), n.stderr)
	}
	if err := handshake(d.addr, caFile, cert); err != nil {
		t.Fatalf("pairing a new device cost the real node its certificate: %v", err)
	}

	// 3. The node loses its state but its host record: only --replace-device gives the
	// new key the device's identity.
	for _, name := range []string{"key.pem", "cert.pem"} {
		if err := os.Remove(filepath.Join(node, name)); err != nil {
			t.Fatal(err)
		}
	}
	n = startNodePair(t, admin, d.addr, caFP, node)
	r = awaitRequest(t, admin, n)
	admin.ok(t, "pairing", "requests", "approve", r.ID, "--replace-device", device)
	if err := n.wait(t); err != nil || deviceOf(t, node) != device {
		t.Fatalf("replaced: %v, device %s\n%s", err, deviceOf(t, node), n.stderr)
	}
	waitRefused(t, d.addr, caFile, cert, "the replaced device's certificate")

	// 4. A revoked device comes back only with --reinstate.
	admin.ok(t, "nodes", "revoke", device, "--reason", "lost")
	n = startNodePair(t, admin, d.addr, caFP, node, "--force")
	r = awaitRequest(t, admin, n)
	if r.DeviceClaim != "DEVICE_CLAIM_REVOKED" {
		t.Errorf("the revoked device's request: %+v", r)
	}
	if refusal := admin.fails(t, 1, "pairing", "requests", "approve", r.ID, "--replace-device", device); !strings.Contains(refusal, "--reinstate") {
		t.Errorf("approving a revoked device without --reinstate:\n%s", refusal)
	}
	admin.ok(t, "pairing", "requests", "approve", r.ID, "--replace-device", device, "--reinstate")
	if err := n.wait(t); err != nil || deviceOf(t, node) != device {
		t.Fatalf("reinstated: %v, device %s\n%s", err, deviceOf(t, node), n.stderr)
	}
	// The reinstatement reaches the handshake through a notification, as revocations do.
	_, cert = readNodeIdentity(t, node)
	eventually.NoError(t, "the reinstated node's certificate accepted", func() error { return handshake(d.addr, caFile, cert) })
}
