package daemon_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/pflag"

	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	"github.com/palyra/palyra/gen/go/palyra/controlplane/v1/controlplanev1connect"
	nodev1 "github.com/palyra/palyra/gen/go/palyra/node/v1"
	"github.com/palyra/palyra/gen/go/palyra/node/v1/nodev1connect"
	"github.com/palyra/palyra/internal/eventually"
	"github.com/palyra/palyra/internal/testpki"
	"github.com/palyra/palyra/server/internal/config"
	"github.com/palyra/palyra/server/internal/daemon"
	"github.com/palyra/palyra/server/internal/identity"
)

// masterKeyClient is a MasterKeyService client of td with token.
func (td *testDaemon) masterKeyClient(token string) controlplanev1connect.MasterKeyServiceClient {
	return controlplanev1connect.NewMasterKeyServiceClient(td.client(token), td.baseURL)
}

// newPIN creates a PIN pairing code through td as the owner (token) and returns it.
func (td *testDaemon) newPIN(t *testing.T, token string) string {
	t.Helper()
	res, err := controlplanev1connect.NewPairingServiceClient(td.client(token), td.baseURL).CreatePairingCode(t.Context(),
		connect.NewRequest(&controlplanev1.CreatePairingCodeRequest{Method: controlplanev1.PairingMethod_PAIRING_METHOD_PIN}))
	if err != nil {
		t.Fatal(err)
	}
	return res.Msg.GetCode()
}

// startPairingWith starts a pairing request through td with pin.
func (td *testDaemon) startPairingWith(t *testing.T, pin string) (*nodev1.StartPairingResponse, error) {
	t.Helper()
	res, err := nodev1connect.NewNodeServiceClient(td.client(""), td.baseURL).StartPairing(t.Context(), connect.NewRequest(&nodev1.StartPairingRequest{
		Code: &nodev1.StartPairingRequest_Pin{Pin: pin}, Csr: csrFor(t, testpki.Key(t), nil), DeviceName: "rotation-node",
	}))
	if err != nil {
		return nil, err
	}
	return res.Msg, nil
}

// approve approves a pairing request through td as the owner (token).
func (td *testDaemon) approve(t *testing.T, token, id string) error {
	t.Helper()
	_, err := controlplanev1connect.NewPairingServiceClient(td.client(token), td.baseURL).ApprovePairingRequest(t.Context(),
		connect.NewRequest(&controlplanev1.ApprovePairingRequestRequest{Id: id}))
	return err
}

// masterKeyStatus returns td's GetMasterKeyStatus.
func (td *testDaemon) masterKeyStatus(t *testing.T, token string) *controlplanev1.GetMasterKeyStatusResponse {
	t.Helper()
	res, err := td.masterKeyClient(token).GetMasterKeyStatus(t.Context(), connect.NewRequest(&controlplanev1.GetMasterKeyStatusRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	return res.Msg
}

// putSecret stores a new version of the secret name through td as token.
func (td *testDaemon) putSecret(t *testing.T, token, name, value string) {
	t.Helper()
	req := connect.NewRequest(&controlplanev1.PutSecretRequest{Name: name, Value: []byte(value)})
	if _, err := td.secretsClient(token).PutSecret(t.Context(), req); err != nil {
		t.Fatalf("put secret %s: %v", name, err)
	}
}

// revealSecret reveals version of the secret name through td as token.
func (td *testDaemon) revealSecret(t *testing.T, token, name string, version int64) (string, error) {
	t.Helper()
	req := connect.NewRequest(&controlplanev1.RevealSecretRequest{Name: name, Version: version, Reason: "master key rotation test"})
	res, err := td.secretsClient(token).RevealSecret(t.Context(), req)
	if err != nil {
		return "", err
	}
	return string(res.Msg.GetValue()), nil
}

// dataDirWithKeys returns a new data directory whose master.key holds content.
func dataDirWithKeys(t *testing.T, content []byte) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, identity.MasterKeyFile), content, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// loadConfig loads the configuration from args as palyrad does.
func loadConfig(t *testing.T, args ...string) *config.Config {
	t.Helper()
	fs := pflag.NewFlagSet("palyrad", pflag.ContinueOnError)
	config.RegisterFlags(fs, func(string) string { return "" })
	if err := fs.Parse(append([]string{"--listen", "127.0.0.1:0"}, args...)); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(fs, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// wantFailedPrecondition checks that err is FailedPrecondition and its message holds
// every one of want.
func wantFailedPrecondition(t *testing.T, what string, err error, want ...string) {
	t.Helper()
	if connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Fatalf("%s: %v, want FailedPrecondition", what, err)
	}
	t.Logf("%s: %v", what, err)
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("%s: %q does not name %s", what, err, w)
		}
	}
}

// TestMasterKeyRotation rotates the master key of two replicas on one database: the
// re-wrap is refused while a live replica lacks the new key; once both run with the new
// keys it re-wraps the CA's key and the secrets' data keys, the CA keeps its fingerprint
// and issues certificates, every secret version reads, and pairing PINs minted before
// and after verify on both. A replica left with only the old key refuses what needs the
// CA or a re-wrapped secret, naming the key it lacks, and cannot start.
func TestMasterKeyRotation(t *testing.T) {
	t.Parallel()
	a := startAccess(t)
	owner, dbURL, dirA := a.owner, a.dbURL, a.cfg.DataDir
	oldFile, err := os.ReadFile(filepath.Join(dirA, identity.MasterKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	dirB := dataDirWithKeys(t, oldFile)
	b := startDaemon(t, "--database-url", dbURL, "--data-dir", dirB)
	fp := a.caFingerprint(t)
	before := a.masterKeyStatus(t, owner)
	oldID := before.GetKekIds()[0]
	if len(before.GetKekIds()) != 1 || !slices.ContainsFunc(before.GetUsage(), func(u *controlplanev1.WrappedKeyUsage) bool {
		return u.GetKind() == "ca" && u.GetKekId() == oldID && u.GetCount() == 1
	}) {
		t.Fatalf("status before the rotation: %v", before)
	}
	// PINs minted under the old key, for each replica to verify after the rotation, and
	// one for the replica left behind.
	oldPINs := []string{a.newPIN(t, owner), a.newPIN(t, owner), a.newPIN(t, owner)}
	// A secret sealed under the old key (version 1); version 2 comes after the rotation.
	a.putSecret(t, owner, "openai", "sk-before-rotation")

	// 1. A new primary in replica A's master.key; A restarts with both keys.
	ring, err := identity.RotateMasterKeyFile(dirA, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	newID := ring.Primary().ID()
	if newID == oldID || len(ring.Older()) != 1 || ring.Older()[0].ID() != oldID {
		t.Fatalf("rotated ring %v, want a new primary, then %s", ring.IDs(), oldID)
	}
	a.stop(t)
	a2 := startDaemon(t, "--database-url", dbURL, "--data-dir", dirA)
	if got := a2.masterKeyStatus(t, owner).GetKekIds(); !slices.Equal(got, []string{newID, oldID}) {
		t.Fatalf("A's keys after the restart: %v, want %s then %s", got, newID, oldID)
	}

	// 2. B still has only the old key and is live: the re-wrap is refused and names it.
	_, err = a2.masterKeyClient(owner).RewrapKeys(t.Context(), connect.NewRequest(&controlplanev1.RewrapKeysRequest{}))
	wantFailedPrecondition(t, "re-wrap while B lacks the key", err, b.cfg.ReplicaID, newID)
	if st := a2.masterKeyStatus(t, owner); st.GetLastRewrap() != nil {
		t.Errorf("the refused re-wrap left a record: %v", st.GetLastRewrap())
	}

	// A replica that will be left behind with the old key only; it reports itself now, so
	// it too blocks the re-wrap until it is out of sight (below).
	behind := startDaemon(t, "--database-url", dbURL, "--data-dir", dataDirWithKeys(t, oldFile))
	pending, err := behind.startPairingWith(t, oldPINs[2])
	if err != nil {
		t.Fatalf("a PIN minted under the old key, on the replica with the old key: %v", err)
	}

	// 3. B gets the new master.key and restarts.
	newFile, err := os.ReadFile(filepath.Join(dirA, identity.MasterKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dirB, identity.MasterKeyFile), newFile, 0o600); err != nil {
		t.Fatal(err)
	}
	b.stop(t)
	b2 := startDaemon(t, "--database-url", dbURL, "--data-dir", dirB)
	newPINs := []string{a2.newPIN(t, owner), b2.newPIN(t, owner)}
	b2.putSecret(t, owner, "openai", "sk-after-rotation")

	_, err = a2.masterKeyClient(owner).RewrapKeys(t.Context(), connect.NewRequest(&controlplanev1.RewrapKeysRequest{}))
	wantFailedPrecondition(t, "re-wrap while the replica behind is live", err, behind.cfg.ReplicaID)
	if strings.Contains(err.Error(), b2.cfg.ReplicaID) || strings.Contains(err.Error(), a2.cfg.ReplicaID) {
		t.Errorf("the refusal names a replica that has the key: %v", err)
	}

	// 4. The replica behind goes out of the re-wrap's sight (as an older palyrad that
	// does not report itself would be); the re-wrap goes through.
	var rewrapped *controlplanev1.RewrapKeysResponse
	eventually.NoError(t, "re-wrap", func() error {
		a.sql(t, "delete from replicas where id = '"+behind.cfg.ReplicaID+"'")
		res, err := a2.masterKeyClient(owner).RewrapKeys(t.Context(), connect.NewRequest(&controlplanev1.RewrapKeysRequest{}))
		if err != nil {
			return err
		}
		rewrapped = res.Msg
		return nil
	})
	byKind := map[string]int64{}
	for _, u := range rewrapped.GetRewrapped() {
		byKind[u.GetKind()] = u.GetCount()
	}
	if rw := rewrapped.GetRewrap(); rw.GetKekId() != newID || rw.GetRewrapped() != 2 || rw.GetFinishTime() == nil ||
		len(byKind) != 3 || byKind["ca"] != 1 || byKind["secret"] != 1 || byKind["browser-state"] != 0 {
		t.Errorf("re-wrap: %v, want the CA's key and the data key of version 1", rewrapped)
	}
	st := b2.masterKeyStatus(t, owner)
	if len(st.GetUsage()) != 2 || !slices.ContainsFunc(st.GetUsage(), func(u *controlplanev1.WrappedKeyUsage) bool {
		return u.GetKind() == "secret" && u.GetKekId() == newID && u.GetCount() == 2
	}) || slices.ContainsFunc(st.GetUsage(), func(u *controlplanev1.WrappedKeyUsage) bool { return u.GetKekId() != newID }) ||
		st.GetLastRewrap().GetId() != rewrapped.GetRewrap().GetId() {
		t.Errorf("status after the re-wrap: %v", st)
	}
	// Repeating it is harmless: nothing is left to re-wrap.
	again, err := b2.masterKeyClient(owner).RewrapKeys(t.Context(), connect.NewRequest(&controlplanev1.RewrapKeysRequest{}))
	if err != nil || again.Msg.GetRewrap().GetRewrapped() != 0 {
		t.Errorf("a second re-wrap: %v, %v", again, err)
	}

	// 5. PINs minted before and after the rotation verify on both replicas, and the CA
	// (re-wrapped) issues certificates on both.
	for i, c := range []struct {
		td  *testDaemon
		pin string
	}{{a2, oldPINs[0]}, {b2, oldPINs[1]}, {a2, newPINs[1]}, {b2, newPINs[0]}} {
		started, err := c.td.startPairingWith(t, c.pin)
		if err != nil {
			t.Fatalf("PIN %d: %v", i, err)
		}
		if err := c.td.approve(t, owner, started.GetRequestId()); err != nil {
			t.Fatalf("approve %d: %v", i, err)
		}
	}

	// 6. The replica behind learns of the re-wrap and refuses to sign, naming the key.
	eventually.NoError(t, "the replica behind refuses what needs the CA", func() error {
		err := behind.approve(t, owner, pending.GetRequestId())
		if connect.CodeOf(err) != connect.CodeFailedPrecondition {
			return errors.New("not refused yet")
		}
		return nil
	})
	wantFailedPrecondition(t, "approval on the replica behind", behind.approve(t, owner, pending.GetRequestId()), newID)
	_, err = behind.revealSecret(t, owner, "openai", 1)
	wantFailedPrecondition(t, "a secret re-wrapped under the new key, on the replica behind", err, newID)

	// 7. A replica with the old key only cannot start, and says which key it needs.
	behind.stop(t)
	_, err = daemon.Start(t.Context(), loadConfig(t, "--database-url", dbURL, "--data-dir", dataDirWithKeys(t, oldFile)), slogDiscard())
	if !errors.Is(err, identity.ErrMasterKeyMismatch) || !strings.Contains(err.Error(), newID) {
		t.Errorf("a start with the old key only: %v, want a refusal naming %s", err, newID)
	}
	t.Logf("a start with the old key only: %v", err)

	// 8. The old key leaves the rings: the CA opens with the new key alone, keeps its
	// fingerprint and issues certificates.
	a2.stop(t)
	b2.stop(t)
	lines := strings.Split(string(newFile), "\n")
	a3 := startDaemon(t, "--database-url", dbURL, "--data-dir", dataDirWithKeys(t, []byte(lines[1]+"\n")))
	if got := a3.caFingerprint(t); got != fp {
		t.Errorf("the CA's fingerprint changed: %s, then %s", fp, got)
	}
	if got := a3.masterKeyStatus(t, owner).GetKekIds(); !slices.Equal(got, []string{newID}) {
		t.Errorf("keys of the replica with the new key alone: %v", got)
	}
	started, err := a3.startPairingWith(t, a3.newPIN(t, owner))
	if err != nil {
		t.Fatal(err)
	}
	if err := a3.approve(t, owner, started.GetRequestId()); err != nil {
		t.Errorf("approve with the new key alone: %v", err)
	}
	// Every version of the secret, sealed before and after the rotation, reads with the
	// new key alone.
	for v, want := range map[int64]string{1: "sk-before-rotation", 2: "sk-after-rotation"} {
		if got, err := a3.revealSecret(t, owner, "openai", v); err != nil || got != want {
			t.Errorf("version %d with the new key alone: %q, %v", v, got, err)
		}
	}
}
