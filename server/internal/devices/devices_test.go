package devices_test

import (
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/palyra/palyra/gen/dbsqlc"
	"github.com/palyra/palyra/internal/testpki"
	"github.com/palyra/palyra/server/internal/devices"
	"github.com/palyra/palyra/server/internal/identity"
	"github.com/palyra/palyra/server/internal/store"
	"github.com/palyra/palyra/server/internal/store/storetest"
	"github.com/palyra/palyra/server/internal/testclock"
)

// testBundle is the devices service on a database of its own, with a CA and a clock.
type testBundle struct {
	store   *store.Store
	clock   *testclock.Clock
	devices *devices.Service
}

func setup(t *testing.T) *testBundle {
	t.Helper()
	s := storetest.New(t)
	keys, _, err := identity.LoadKeyring(t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	clock := testclock.New(time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC))
	authority, err := identity.LoadOrCreateAuthority(t.Context(), identity.AuthorityOptions{Store: s, Keys: keys, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	return &testBundle{store: s, clock: clock, devices: devices.New(devices.Options{
		Store: s, Authority: authority, ReplicaID: "test", DeviceCertLifetime: 24 * time.Hour, Now: clock.Now,
	})}
}

// key is a device key: the key, its fingerprint and a CSR signed with it.
type key struct {
	fingerprint string
	csr         []byte
}

func newKey(t *testing.T) key {
	t.Helper()
	k := testpki.Key(t)
	fp, err := identity.PublicKeyFingerprint(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return key{fingerprint: fp, csr: testpki.CSR(t, k, &x509.CertificateRequest{})}
}

// device stores a device paired with k, as pairing does, and returns its id.
func (b *testBundle) device(t *testing.T, k key) string {
	t.Helper()
	id := ulid.Make().String()
	if _, err := b.store.Q().InsertDevice(t.Context(), dbsqlc.InsertDeviceParams{
		ID: id, Name: "test-" + id, Platform: "linux", Labels: []byte("{}"), PublicKeyFingerprint: k.fingerprint, Now: b.clock.Now(),
	}); err != nil {
		t.Fatal(err)
	}
	return id
}

// TestRenewalFollowsTheCurrentKey renews as nodes do: the holder of the device's
// current key renews to a new key; the old key is superseded then, unless it retries
// with the CSR of the new key (a renewal whose answer was lost); a revoked device
// renews nothing.
func TestRenewalFollowsTheCurrentKey(t *testing.T) {
	t.Parallel()
	b := setup(t)
	first, second, third := newKey(t), newKey(t), newKey(t)
	id := b.device(t, first)

	issued, err := b.devices.Renew(t.Context(), id, first.fingerprint, second.csr)
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := identity.DeviceID(issued.Certificate); !ok || got != id || !issued.Certificate.NotAfter.Equal(b.clock.Now().Add(24*time.Hour)) {
		t.Errorf("renewed certificate for %q (%v), expiring %v", got, ok, issued.Certificate.NotAfter)
	}
	if _, err := b.devices.Renew(t.Context(), id, first.fingerprint, third.csr); !errors.Is(err, devices.ErrSuperseded) {
		t.Errorf("renewal by the superseded key to another key: %v, want ErrSuperseded", err)
	}
	if _, err := b.devices.Renew(t.Context(), id, first.fingerprint, second.csr); err != nil {
		t.Errorf("a retried renewal with the current key's CSR: %v", err)
	}
	d, err := b.devices.Get(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	if d.PublicKeyFingerprint != second.fingerprint || len(d.Certificates) != 2 {
		t.Errorf("device key %s with %d certificates, want %s with 2", d.PublicKeyFingerprint, len(d.Certificates), second.fingerprint)
	}

	if _, err := b.devices.Revoke(t.Context(), id, "lost"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.devices.Renew(t.Context(), id, second.fingerprint, third.csr); !errors.Is(err, devices.ErrRevoked) {
		t.Errorf("renewal of a revoked device: %v, want ErrRevoked", err)
	}
	if _, err := b.devices.Revoke(t.Context(), id, "again"); !errors.Is(err, devices.ErrAlreadyRevoked) {
		t.Errorf("a second revocation: %v, want ErrAlreadyRevoked", err)
	}
	if _, err := b.devices.Rotate(t.Context(), id, time.Hour); !errors.Is(err, devices.ErrRevoked) {
		t.Errorf("rotation of a revoked device: %v, want ErrRevoked", err)
	}
}

// TestRotationAndRevocationStates follows a device's certificates: a rotation revokes
// them at the end of its grace and asks the device to rotate, until its renewal; a
// certificate revoked alone is revoked now, once; a device revoked revokes the rest.
func TestRotationAndRevocationStates(t *testing.T) {
	t.Parallel()
	b := setup(t)
	first, second := newKey(t), newKey(t)
	id := b.device(t, first)
	old, err := b.devices.Renew(t.Context(), id, first.fingerprint, first.csr)
	if err != nil {
		t.Fatal(err)
	}

	rotated := b.clock.Now()
	const grace = 6 * time.Hour
	d, err := b.devices.Rotate(t.Context(), id, grace)
	if err != nil {
		t.Fatal(err)
	}
	if d.RotateRequestedAt == nil || !d.RotateRequestedAt.Equal(rotated) || len(d.Certificates) != 1 ||
		d.Certificates[0].RevokedAt == nil || !d.Certificates[0].RevokedAt.Equal(rotated.Add(grace)) || d.Certificates[0].RevokedReason != "rotated" {
		t.Fatalf("after the rotation: requested %v, certificates %+v; want revoked at %v", d.RotateRequestedAt, d.Certificates, rotated.Add(grace))
	}

	b.clock.Advance(time.Hour)
	renewed, err := b.devices.Renew(t.Context(), id, first.fingerprint, second.csr)
	if err != nil {
		t.Fatal(err)
	}
	if d, err = b.devices.Get(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	if d.RotateRequestedAt != nil {
		t.Errorf("the renewal did not end the rotation: requested %v", d.RotateRequestedAt)
	}
	for _, c := range d.Certificates {
		if c.Fingerprint == renewed.Fingerprint && c.RevokedAt != nil {
			t.Errorf("the renewed certificate is revoked at %v", c.RevokedAt)
		}
	}

	revoked, err := b.devices.RevokeCertificate(t.Context(), renewed.Fingerprint, "leaked")
	if err != nil {
		t.Fatal(err)
	}
	if revoked.RevokedAt == nil || !revoked.RevokedAt.Equal(b.clock.Now()) || revoked.RevokedReason != "leaked" {
		t.Errorf("revoked certificate %+v", revoked)
	}
	if _, err := b.devices.RevokeCertificate(t.Context(), renewed.Fingerprint, "again"); !errors.Is(err, devices.ErrAlreadyRevoked) {
		t.Errorf("a second revocation of the certificate: %v, want ErrAlreadyRevoked", err)
	}

	// Revoking the device revokes now what the rotation would have revoked later.
	if d, err = b.devices.Revoke(t.Context(), id, "stolen"); err != nil {
		t.Fatal(err)
	}
	if d.RevokedAt == nil || d.RevokedReason != "stolen" {
		t.Errorf("device revoked at %v for %q", d.RevokedAt, d.RevokedReason)
	}
	for _, c := range d.Certificates {
		if c.RevokedAt == nil || c.RevokedAt.After(b.clock.Now()) {
			t.Errorf("certificate %s of the revoked device is revoked at %v", c.Fingerprint, c.RevokedAt)
		}
		if c.Fingerprint == old.Fingerprint && c.RevokedReason != "device revoked: stolen" {
			t.Errorf("the rotated certificate's reason is %q", c.RevokedReason)
		}
	}
}
