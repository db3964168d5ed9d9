package identity_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/oklog/ulid/v2"

	"github.com/palyra/palyra/gen/dbsqlc"
	nodev1 "github.com/palyra/palyra/gen/go/palyra/node/v1"
	"github.com/palyra/palyra/internal/testpki"
	"github.com/palyra/palyra/server/internal/identity"
	"github.com/palyra/palyra/server/internal/store"
	"github.com/palyra/palyra/server/internal/store/storetest"
)

// activeRow reads the active authority's row straight from the database.
func activeRow(t *testing.T, s *store.Store) dbsqlc.CertificateAuthority {
	t.Helper()
	row, err := s.Q().GetActiveAuthority(t.Context())
	if err != nil {
		t.Fatalf("active authority row: %v", err)
	}
	return row
}

// countAuthorities counts the rows of certificate_authorities, active or not.
func countAuthorities(t *testing.T, s *store.Store) (all, active int) {
	t.Helper()
	err := s.Pool().QueryRow(t.Context(),
		"select count(*), count(*) filter (where active) from certificate_authorities").Scan(&all, &active)
	if err != nil {
		t.Fatal(err)
	}
	return all, active
}

func TestLoadOrCreateAuthorityCreatesARoot(t *testing.T) {
	t.Parallel()
	b := setup(t)
	a := b.authority
	cert := a.Certificate()

	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Errorf("root key is %T, want ECDSA P-256", cert.PublicKey)
	}
	if !cert.BasicConstraintsValid || !cert.IsCA {
		t.Error("root is not a CA")
	}
	if !cert.MaxPathLenZero || cert.MaxPathLen != 0 {
		t.Errorf("root path length %d (zero set: %v), want 0: it signs leaves only", cert.MaxPathLen, cert.MaxPathLenZero)
	}
	if cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("root key usage %b lacks certificate signing", cert.KeyUsage)
	}
	if err := cert.CheckSignatureFrom(cert); err != nil {
		t.Errorf("root is not self-signed: %v", err)
	}
	// Valid from (a little before) now for ten years.
	if cert.NotBefore.After(testEpoch) || testEpoch.Sub(cert.NotBefore) > time.Hour {
		t.Errorf("root NotBefore %v, want shortly before the clock's %v", cert.NotBefore, testEpoch)
	}
	if life, tenYears := cert.NotAfter.Sub(testEpoch), 10*365*24*time.Hour; life < tenYears || life > tenYears+72*time.Hour {
		t.Errorf("root valid for %v after creation, want about ten years", life)
	}
	if a.Fingerprint() != identity.Fingerprint(cert.Raw) {
		t.Errorf("Fingerprint() %s, want the SHA-256 of the certificate %s", a.Fingerprint(), identity.Fingerprint(cert.Raw))
	}
	block, rest := pem.Decode(a.PEM())
	if block == nil || block.Type != "CERTIFICATE" || len(rest) != 0 || !bytes.Equal(block.Bytes, cert.Raw) {
		t.Error("PEM() is not exactly the root certificate")
	}
	roots := a.CertPool()
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: testEpoch}); err != nil {
		t.Errorf("the root does not verify against CertPool(): %v", err)
	}

	row := activeRow(t, b.store)
	if row.ID != a.ID() || row.Fingerprint != a.Fingerprint() || !bytes.Equal(row.CertificateDer, cert.Raw) {
		t.Errorf("row %s (%s) does not hold the authority %s (%s)", row.ID, row.Fingerprint, a.ID(), a.Fingerprint())
	}
	if row.KekID != b.kek.ID() {
		t.Errorf("row sealed under %s, want %s", row.KekID, b.kek.ID())
	}
	if !row.NotBefore.Equal(cert.NotBefore) || !row.NotAfter.Equal(cert.NotAfter) {
		t.Errorf("row validity %v..%v, certificate %v..%v", row.NotBefore, row.NotAfter, cert.NotBefore, cert.NotAfter)
	}
	if all, active := countAuthorities(t, b.store); all != 1 || active != 1 {
		t.Errorf("%d authorities (%d active), want 1 (1)", all, active)
	}
}

func TestLoadOrCreateAuthorityLoadsTheSameRoot(t *testing.T) {
	t.Parallel()
	b := setup(t)
	later := b.loadAuthority(t, fixed(testEpoch.Add(24*time.Hour)))
	if later.ID() != b.authority.ID() || later.Fingerprint() != b.authority.Fingerprint() ||
		!bytes.Equal(later.Certificate().Raw, b.authority.Certificate().Raw) {
		t.Fatalf("second load gave %s, want %s", later.Fingerprint(), b.authority.Fingerprint())
	}
	// The loaded private key is the created one: what it signs verifies under the
	// root the first load returned.
	key := testpki.Key(t)
	issued, err := later.Sign(&key.PublicKey, identity.ServerIdentity([]string{"localhost"}, nil), identity.Lifetime(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if err := issued.Certificate.CheckSignatureFrom(b.authority.Certificate()); err != nil {
		t.Errorf("the loaded key is not the created one: %v", err)
	}
	if all, _ := countAuthorities(t, b.store); all != 1 {
		t.Errorf("%d authorities after a second load, want 1", all)
	}
}

func TestAuthorityKeyIsSealed(t *testing.T) {
	t.Parallel()
	b := setup(t)
	row := activeRow(t, b.store)

	if bytes.Contains(row.KeyCiphertext, []byte("PRIVATE KEY")) {
		t.Error("key_ciphertext holds a PEM private key")
	}
	pkcs8, err := b.kek.Open(row.KeyNonce, row.KeyCiphertext, identity.AuthorityAAD(row.ID))
	if err != nil {
		t.Fatalf("the right key-encryption key does not open the sealed key: %v", err)
	}
	key, err := x509.ParsePKCS8PrivateKey(pkcs8)
	if err != nil {
		t.Fatalf("sealed key is not PKCS#8: %v", err)
	}
	ec, ok := key.(*ecdsa.PrivateKey)
	if !ok || !ec.PublicKey.Equal(b.authority.Certificate().PublicKey) {
		t.Fatal("the sealed key is not the root's private key")
	}
	if bytes.Contains(row.KeyCiphertext, pkcs8) {
		t.Error("key_ciphertext contains the PKCS#8 DER of the key")
	}
	scalar, err := ec.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(row.KeyCiphertext, scalar) {
		t.Error("key_ciphertext contains the private scalar")
	}
	if _, err := newKEK(t).Open(row.KeyNonce, row.KeyCiphertext, identity.AuthorityAAD(row.ID)); err == nil {
		t.Error("another master key opens the sealed key")
	}
	if _, err := b.kek.Open(row.KeyNonce, row.KeyCiphertext, identity.AuthorityAAD(ulid.Make().String())); err == nil {
		t.Error("the sealed key opens for another row id")
	}
}

func TestLoadOrCreateAuthorityWithAnotherMasterKey(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, err := identity.LoadOrCreateAuthority(t.Context(), identity.AuthorityOptions{
		Store: b.store, Keys: identity.NewKeyring(newKEK(t)), Now: b.clock.Now,
	})
	if !errors.Is(err, identity.ErrMasterKeyMismatch) {
		t.Fatalf("error %v, want ErrMasterKeyMismatch", err)
	}
	// The refusal leaves the database as it was: no second CA.
	if all, _ := countAuthorities(t, b.store); all != 1 {
		t.Errorf("%d authorities after the refusal, want 1", all)
	}
	if row := activeRow(t, b.store); row.ID != b.authority.ID() {
		t.Errorf("active authority is now %s, want %s", row.ID, b.authority.ID())
	}
}

// Replicas starting together on an empty database agree on one CA.
func TestLoadOrCreateAuthorityConcurrently(t *testing.T) {
	t.Parallel()
	s := storetest.New(t)
	kek := newKEK(t)
	const replicas = 8
	authorities := make([]*identity.Authority, replicas)
	errs := make([]error, replicas)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range replicas {
		wg.Go(func() {
			<-start
			authorities[i], errs[i] = identity.LoadOrCreateAuthority(t.Context(), identity.AuthorityOptions{
				Store: s, Keys: identity.NewKeyring(kek), Now: fixed(testEpoch),
			})
		})
	}
	close(start)
	wg.Wait()
	for i := range replicas {
		if errs[i] != nil {
			t.Fatalf("replica %d: %v", i, errs[i])
		}
		if authorities[i].Fingerprint() != authorities[0].Fingerprint() || authorities[i].ID() != authorities[0].ID() {
			t.Errorf("replica %d has CA %s, replica 0 has %s", i, authorities[i].Fingerprint(), authorities[0].Fingerprint())
		}
	}
	if all, active := countAuthorities(t, s); all != 1 || active != 1 {
		t.Errorf("%d authorities (%d active), want exactly one", all, active)
	}
	if row := activeRow(t, s); row.Fingerprint != authorities[0].Fingerprint() {
		t.Errorf("active row %s, replicas agreed on %s", row.Fingerprint, authorities[0].Fingerprint())
	}
}

// A row changed behind the daemon's back is refused rather than trusted. Each case
// starts from two authorities: an older one, retired, and the active one the case
// tampers with using the older one's values.
func TestLoadOrCreateAuthorityRefusesTamperedRows(t *testing.T) {
	t.Parallel()
	cases := map[string]struct {
		// tamper is an UPDATE of the active row; "old" is the retired authority.
		tamper string
		// mismatch says the refusal is ErrMasterKeyMismatch.
		mismatch bool
	}{
		"sealed key of another authority": {tamper: `update certificate_authorities a
			set key_ciphertext = old.key_ciphertext, key_nonce = old.key_nonce
			from certificate_authorities old where a.active and not old.active`},
		"certificate of another authority": {tamper: `update certificate_authorities a
			set certificate_der = old.certificate_der
			from certificate_authorities old where a.active and not old.active`},
		"id changed": {tamper: `update certificate_authorities
			set id = '` + ulid.Make().String() + `' where active`},
		"id of another authority": {tamper: `with old as (
				update certificate_authorities set id = id || '-retired' where not active returning id
			)
			update certificate_authorities set id = (select left(id, -8) from old) where active`},
		"ciphertext byte flipped": {tamper: `update certificate_authorities
			set key_ciphertext = set_byte(key_ciphertext, 0, get_byte(key_ciphertext, 0) # 1) where active`},
		"nonce changed": {tamper: `update certificate_authorities a
			set key_nonce = old.key_nonce
			from certificate_authorities old where a.active and not old.active`},
		"certificate byte flipped": {tamper: `update certificate_authorities
			set certificate_der = set_byte(certificate_der, octet_length(certificate_der) - 1,
				get_byte(certificate_der, octet_length(certificate_der) - 1) # 1) where active`},
		// The fingerprint is what clients pin: one that is not the certificate's must not
		// be served.
		"fingerprint changed": {tamper: `update certificate_authorities
			set fingerprint = 'sha256:' || encode(sha256(fingerprint::bytea), 'hex') where active`},
		"key-encryption key id changed": {tamper: `update certificate_authorities
			set kek_id = kek_id || '0' where active`, mismatch: true},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			ctx := t.Context()
			if _, err := b.store.Pool().Exec(ctx, "update certificate_authorities set active = false"); err != nil {
				t.Fatal(err)
			}
			current := b.loadAuthority(t, b.clock.Now)
			if current.ID() == b.authority.ID() {
				t.Fatal("no second authority was created after retiring the first")
			}
			tag, err := b.store.Pool().Exec(ctx, tc.tamper)
			if err != nil {
				t.Fatalf("tamper: %v", err)
			}
			if tag.RowsAffected() != 1 {
				t.Fatalf("tamper changed %d rows, want 1", tag.RowsAffected())
			}
			a, err := identity.LoadOrCreateAuthority(ctx, identity.AuthorityOptions{Store: b.store, Keys: identity.NewKeyring(b.kek), Now: b.clock.Now})
			if err == nil {
				t.Fatalf("tampered row loaded as CA %s (%s)", a.ID(), a.Fingerprint())
			}
			if got := errors.Is(err, identity.ErrMasterKeyMismatch); got != tc.mismatch {
				t.Errorf("errors.Is(%v, ErrMasterKeyMismatch) = %v, want %v", err, got, tc.mismatch)
			}
			if all, _ := countAuthorities(t, b.store); all != 2 {
				t.Errorf("%d authorities after the refusal, want the 2 there were", all)
			}
		})
	}
}

// The database is unreachable: the error says so rather than creating anything.
func TestLoadOrCreateAuthorityCancelled(t *testing.T) {
	t.Parallel()
	s := storetest.New(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := identity.LoadOrCreateAuthority(ctx, identity.AuthorityOptions{Store: s, Keys: identity.NewKeyring(newKEK(t)), Now: fixed(testEpoch)})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
	if all, _ := countAuthorities(t, s); all != 0 {
		t.Errorf("%d authorities, want none", all)
	}
}

func TestWriteCAFile(t *testing.T) {
	t.Parallel()
	b := setup(t)
	dir := t.TempDir()

	path, err := b.authority.WriteCAFile(dir)
	if err != nil {
		t.Fatalf("write: %v", err)
	}
	if path != filepath.Join(dir, identity.CAFile) {
		t.Errorf("path %s, want %s", path, filepath.Join(dir, identity.CAFile))
	}
	first, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if first.Mode().Perm() != 0o644 || !first.Mode().IsRegular() {
		t.Errorf("mode %v, want a regular file with -rw-r--r--", first.Mode())
	}
	content, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, rest := pem.Decode(content)
	if block == nil || block.Type != "CERTIFICATE" || len(bytes.TrimSpace(rest)) != 0 {
		t.Fatalf("%s is not one PEM certificate: %q", path, content)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if !cert.Equal(b.authority.Certificate()) {
		t.Error("the file's certificate is not the CA's")
	}
	assertOnlyFile(t, dir, identity.CAFile)

	// Current: left alone (same file, not rewritten).
	if _, err := b.authority.WriteCAFile(dir); err != nil {
		t.Fatalf("second write: %v", err)
	}
	second, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(first, second) || !second.ModTime().Equal(first.ModTime()) {
		t.Error("a current ca.pem was rewritten")
	}
	assertOnlyFile(t, dir, identity.CAFile)

	// Stale: replaced, with the right mode whatever the old file had.
	if err := os.WriteFile(path, []byte("stale"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := b.authority.WriteCAFile(dir); err != nil {
		t.Fatalf("rewrite: %v", err)
	}
	replaced, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, b.authority.PEM()) {
		t.Errorf("stale ca.pem not replaced: %q", got)
	}
	if replaced.Mode().Perm() != 0o644 {
		t.Errorf("replaced file has mode %v, want -rw-r--r--", replaced.Mode())
	}
	assertOnlyFile(t, dir, identity.CAFile)
}

// assertOnlyFile checks that dir holds name and nothing else (no temporary files).
func assertOnlyFile(t *testing.T, dir, name string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != name {
		names := make([]string, len(entries))
		for i, e := range entries {
			names[i] = e.Name()
		}
		t.Errorf("%s holds %v, want only %s", dir, names, name)
	}
}

func TestTrustHandlerGetServerInfo(t *testing.T) {
	t.Parallel()
	b := setup(t)
	h := identity.NewTrustHandler(b.authority, "v1.2.3-test")
	res, err := h.GetServerInfo(t.Context(), connect.NewRequest(&nodev1.GetServerInfoRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if res.Msg.GetServerVersion() != "v1.2.3-test" {
		t.Errorf("server version %q", res.Msg.GetServerVersion())
	}
	block, _ := pem.Decode([]byte(res.Msg.GetCaCertificatePem()))
	if block == nil || !bytes.Equal(block.Bytes, b.authority.Certificate().Raw) {
		t.Error("the served PEM is not the CA certificate")
	}
	// A node pins this fingerprint: it must be the served certificate's.
	if block != nil && res.Msg.GetCaFingerprint() != identity.Fingerprint(block.Bytes) {
		t.Errorf("served fingerprint %s, the served certificate's is %s", res.Msg.GetCaFingerprint(), identity.Fingerprint(block.Bytes))
	}
}
