package main

// The end-to-end test of pairing and revocation as users run them: the real palyra
// binary pairs a node with one palyrad while an administrator approves it through
// another replica on the same database, then revokes it; the node's certificate must
// then be refused at the TLS handshake of both replicas, each told by the revocation's
// NOTIFY. How soon is BenchmarkRevocation's to measure (BENCHMARKS.md).

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/palyra/palyra/internal/eventually"
	"github.com/palyra/palyra/server/internal/identity"
	"github.com/palyra/palyra/server/internal/store/storetest"
)

func TestCLIPairingAndRevocationAcrossReplicas(t *testing.T) {
	t.Parallel()
	cli := cliBinary(t)
	dbURL := storetest.URL(t)
	dirA := t.TempDir()
	a := startDaemon(t, nil, "--listen", "127.0.0.1:0", "--data-dir", dirA, "--database-url", dbURL)
	masterKey, err := os.ReadFile(filepath.Join(dirA, identity.MasterKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	b := startDaemon(t, map[string]string{"PALYRA_MASTER_KEY": strings.TrimSpace(string(masterKey))},
		"--listen", "127.0.0.1:0", "--data-dir", t.TempDir(), "--database-url", dbURL)
	caFile := filepath.Join(dirA, "ca.pem")
	caFP := caFingerprint(t, dirA)
	admin := newCLIUser(t).with("PALYRA_TOKEN", bootstrapToken(t, dirA), "PALYRA_URL", "https://"+a.addr, "PALYRA_CA_FILE", caFile)

	// 1. The administrator creates a PIN code.
	var code struct {
		Code string `json:"code"`
	}
	if err := json.Unmarshal([]byte(admin.ok(t, "pairing", "codes", "create", "--method", "pin", "--ttl", "10m", "--label", "e2e", "-o", "json")), &code); err != nil || len(code.Code) != 8 {
		t.Fatalf("pairing code: %q, %v", code.Code, err)
	}

	// 2. The node pairs, with replica B, pinning the CA by fingerprint.
	stateDir := t.TempDir()
	ctx, cancel := context.WithTimeout(t.Context(), 3*eventually.Deadline) // a pairing with two waits in it
	defer cancel()
	node := exec.CommandContext(ctx, cli, "node", "pair", "--url", "https://"+b.addr, "--pin", code.Code,
		"--ca-fingerprint", caFP, "--name", "e2e-node", "--state-dir", stateDir)
	node.Env = []string{"HOME=" + t.TempDir()}
	// The node writes while the test reads: buffers safe for both.
	nodeOut, nodeErr := newSyncBuffer(), newSyncBuffer()
	node.Stdout, node.Stderr = nodeOut, nodeErr
	if err := node.Start(); err != nil {
		t.Fatal(err)
	}
	nodeDone := make(chan error, 1)
	go func() { nodeDone <- node.Wait() }()

	// 3. The administrator sees the pending request, checks the key the node shows, and
	// approves it through replica A.
	var request struct {
		ID                   string `json:"id"`
		PublicKeyFingerprint string `json:"publicKeyFingerprint"`
		DeviceName           string `json:"deviceName"`
		SourceAddress        string `json:"sourceAddress"`
	}
	eventually.NoError(t, "a pending request", func() error {
		var list struct {
			PairingRequests []json.RawMessage `json:"pairingRequests"`
		}
		if err := json.Unmarshal([]byte(admin.ok(t, "pairing", "requests", "list", "--state", "pending", "-o", "json")), &list); err != nil {
			t.Fatal(err)
		}
		if len(list.PairingRequests) != 1 {
			return fmt.Errorf("%d pending requests; the node says:\n%s", len(list.PairingRequests), nodeErr)
		}
		return json.Unmarshal(list.PairingRequests[0], &request)
	})
	// The request is visible to the administrator as soon as it is stored, which can be
	// before the node has read the answer and printed it: wait for the node's line.
	eventually.NoError(t, "the node shows its request and key fingerprint", func() error {
		if out := nodeErr.String(); !strings.Contains(out, request.PublicKeyFingerprint) || !strings.Contains(out, request.ID) {
			return fmt.Errorf("not %s and %s in:\n%s", request.ID, request.PublicKeyFingerprint, out)
		}
		return nil
	})
	if request.DeviceName != "e2e-node" || request.SourceAddress != "127.0.0.1" {
		t.Errorf("request %+v", request)
	}
	admin.fails(t, 1, "pairing", "requests", "approve", request.ID, "--expect-fingerprint", "sha256:"+strings.Repeat("0", 64))
	admin.ok(t, "pairing", "requests", "approve", request.ID, "--expect-fingerprint", request.PublicKeyFingerprint)

	select {
	case err := <-nodeDone:
		if err != nil {
			t.Fatalf("palyra node pair: %v\n%s", err, nodeErr.String())
		}
	case <-time.After(eventually.Deadline):
		t.Fatalf("the node did not finish pairing within %v of the approval:\n%s", eventually.Deadline, nodeErr.String())
	}

	// 4. The node holds a certificate for the key it generated, and that key never left it.
	key, cert := readNodeIdentity(t, stateDir)
	if fi, err := os.Stat(filepath.Join(stateDir, "key.pem")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key.pem: %v, mode %v", err, fi.Mode().Perm())
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	deviceID, ok := identity.DeviceID(leaf)
	if !ok || !leaf.PublicKey.(*ecdsa.PublicKey).Equal(&key.PublicKey) {
		t.Fatalf("the certificate is not for the node's key (device %q)", deviceID)
	}
	assertKeyNeverLeft(t, dbURL, key)
	if strings.Contains(nodeOut.String()+nodeErr.String(), "PRIVATE KEY") {
		t.Error("the node printed its private key")
	}

	// 5. Both replicas accept it; revoked through A, both refuse it at the handshake.
	for name, addr := range map[string]string{"A": a.addr, "B": b.addr} {
		if err := handshake(addr, caFile, cert); err != nil {
			t.Fatalf("replica %s refuses the paired node: %v", name, err)
		}
	}
	revoked := time.Now()
	admin.ok(t, "nodes", "revoke", deviceID, "--reason", "lost")
	for name, d := range map[string]*runningDaemon{"A": a, "B": b} {
		eventually.True(t, "replica "+name+" refuses the revoked node", func() bool { return handshake(d.addr, caFile, cert) != nil })
		t.Logf("replica %s refuses the revoked node at the handshake %v after `palyra nodes revoke` started", name, time.Since(revoked))
		// Not by its safety-net reload (every 30 s): the notification came first.
		if !revocationNotified(d.stderr.String(), "device:"+deviceID) {
			t.Errorf("replica %s refused the revoked node before it received the revocation by NOTIFY; its log:\n%s", name, d.stderr)
		}
	}
}

// readNodeIdentity reads the key and certificate the node stored.
func readNodeIdentity(t *testing.T, stateDir string) (*ecdsa.PrivateKey, tls.Certificate) {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(filepath.Join(stateDir, "cert.pem"), filepath.Join(stateDir, "key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	key, ok := cert.PrivateKey.(*ecdsa.PrivateKey)
	if !ok {
		t.Fatalf("the node's key is a %T, want ECDSA", cert.PrivateKey)
	}
	return key, cert
}

// assertKeyNeverLeft looks for the node's private scalar in every row of the pairing
// tables: only its public key may be there.
func assertKeyNeverLeft(t *testing.T, dbURL string, key *ecdsa.PrivateKey) {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	d, err := key.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	secret := hex.EncodeToString(d)
	for _, table := range []string{"pairing_requests", "devices", "issued_certificates", "audit_events"} {
		var dump string
		if err := conn.QueryRow(t.Context(), "select coalesce(string_agg(encode(convert_to(t::text, 'UTF8'), 'hex'), ''), '') from "+table+" t").Scan(&dump); err != nil {
			t.Fatal(err)
		}
		var text string
		_ = conn.QueryRow(t.Context(), "select coalesce(string_agg(t::text, ''), '') from "+table+" t").Scan(&text)
		if strings.Contains(dump, secret) || strings.Contains(text, secret) || strings.Contains(text, "PRIVATE KEY") {
			t.Errorf("table %s holds the node's private key", table)
		}
	}
}

// handshake opens a TLS connection to addr presenting cert and returns the server's
// verdict, which under TLS 1.3 arrives with the first read: the server's HTTP/2
// settings, or an alert. Only a server silent for a minute counts as accepting without
// them: a busy machine may take its time to refuse.
func handshake(addr, caFile string, cert tls.Certificate) error {
	pemBytes, err := os.ReadFile(caFile)
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	block, _ := pem.Decode(pemBytes)
	ca, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return err
	}
	roots.AddCert(ca)
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, ServerName: "localhost", NextProtos: []string{"h2"},
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }})
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(time.Minute))
	_, err = conn.Read(make([]byte, 1))
	if ne, ok := err.(interface{ Timeout() bool }); ok && ne.Timeout() {
		return nil
	}
	return err
}
