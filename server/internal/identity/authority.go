package identity

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/palyra/palyra/gen/dbsqlc"
	"github.com/palyra/palyra/server/internal/errdefs"
	"github.com/palyra/palyra/server/internal/store"
)

// authorityLifetime is the validity of a new root certificate.
const authorityLifetime = 10 * 365 * 24 * time.Hour

// CAFile is the name of the CA certificate file inside the data directory.
const CAFile = "ca.pem"

// ErrMasterKeyMismatch reports a CA sealed under a master key that this replica's ring
// lacks.
var ErrMasterKeyMismatch = errors.New("the CA in the database is sealed under a master key this replica does not hold")

// Authority is the internal CA: the active root certificate and its private key.
type Authority struct {
	id          string
	cert        *x509.Certificate
	signer      crypto.Signer
	fingerprint string
	now         func() time.Time
	store       *store.Store // holds the record of what the CA issued
	keys        *Keyring
	// sealedUnder is the ID of the key-encryption key the CA's key is sealed under in
	// the database, as Refresh last read it.
	sealedUnder atomic.Pointer[string]
}

// AuthorityOptions configures LoadOrCreateAuthority.
type AuthorityOptions struct {
	// Store is the database holding the CA.
	Store *store.Store
	// Keys unseal the CA's private key (the key its row names); the primary seals a new
	// CA's.
	Keys *Keyring
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger receives lifecycle messages; nil discards them.
	Logger *slog.Logger
}

// LoadOrCreateAuthority loads the active CA from the database, creating it on the first
// start: an ECDSA P-256 root valid for ten years. Replicas starting together on an empty
// database agree on one CA: the first insert wins and the others load it.
func LoadOrCreateAuthority(ctx context.Context, opts AuthorityOptions) (*Authority, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	row, err := opts.Store.Q().GetActiveAuthority(ctx)
	if errors.Is(err, store.ErrNotFound) {
		row, err = createAuthority(ctx, opts)
		if err == nil {
			log.Info("certificate authority created", "id", row.ID, "fingerprint", row.Fingerprint, "not_after", row.NotAfter)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("identity: load CA: %w", err)
	}
	a, err := openAuthority(row, opts.Keys, opts.Now)
	if err != nil {
		return nil, err
	}
	a.store = opts.Store
	a.keys = opts.Keys
	a.sealedUnder.Store(&row.KekID)
	log.Debug("certificate authority loaded", "id", a.id, "fingerprint", a.fingerprint)
	return a, nil
}

// createAuthority generates a root and inserts it, or returns the one another replica
// inserted first.
func createAuthority(ctx context.Context, opts AuthorityOptions) (dbsqlc.CertificateAuthority, error) {
	id := ulid.Make().String()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return dbsqlc.CertificateAuthority{}, fmt.Errorf("generate CA key: %w", err)
	}
	now := opts.Now().UTC().Truncate(time.Second)
	subject := pkix.Name{Organization: []string{"Palyra"}, CommonName: "Palyra Root CA " + id}
	t := &x509.Certificate{
		SerialNumber:          new(big.Int).SetBytes(randomBytes(16)),
		Subject:               subject,
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(authorityLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(nil, t, t, &key.PublicKey, key)
	if err != nil {
		return dbsqlc.CertificateAuthority{}, fmt.Errorf("self-sign CA: %w", err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return dbsqlc.CertificateAuthority{}, fmt.Errorf("encode CA key: %w", err)
	}
	kek := opts.Keys.Primary()
	nonce, sealed := kek.Seal(pkcs8, authorityAAD(id))
	row, err := opts.Store.Q().InsertAuthority(ctx, dbsqlc.InsertAuthorityParams{
		ID:             id,
		Subject:        subject.String(),
		CertificateDer: der,
		Fingerprint:    Fingerprint(der),
		KeyCiphertext:  sealed,
		KeyNonce:       nonce,
		KekID:          kek.ID(),
		NotBefore:      t.NotBefore,
		NotAfter:       t.NotAfter,
	})
	if errors.Is(err, store.ErrNotFound) {
		// Another replica inserted its CA first (ON CONFLICT DO NOTHING returned no row).
		return opts.Store.Q().GetActiveAuthority(ctx)
	}
	return row, err
}

// authorityAAD binds a sealed key to the row it is stored in, so that a key cannot be
// moved to another row unnoticed.
func authorityAAD(id string) []byte { return []byte("palyra/v1/ca/" + id) }

// missingKeyError says that the CA's key is sealed under kekID, which keys lacks, and
// what to do.
func missingKeyError(kekID string, keys *Keyring) error {
	return &errdefs.Error{
		Kind: errdefs.FailedPrecondition,
		Message: fmt.Sprintf("the CA's key is sealed under master key %s, which this replica does not hold (it holds %s): "+
			"add that master key to this replica's master.key (or PALYRA_MASTER_KEY), copied from a replica that has it, and restart it",
			kekID, strings.Join(keys.IDs(), ", ")),
		Cause: ErrMasterKeyMismatch,
	}
}

// openAuthority parses a stored CA and unseals its key with the key of keys its row
// names.
func openAuthority(row dbsqlc.CertificateAuthority, keys *Keyring, now func() time.Time) (*Authority, error) {
	kek, ok := keys.Key(row.KekID)
	if !ok {
		return nil, fmt.Errorf("identity: %w", missingKeyError(row.KekID, keys))
	}
	cert, err := x509.ParseCertificate(row.CertificateDer)
	if err != nil {
		return nil, fmt.Errorf("identity: parse CA certificate %s: %w", row.ID, err)
	}
	// The fingerprint is what clients pin: it must be the certificate's own.
	if Fingerprint(cert.Raw) != row.Fingerprint {
		return nil, fmt.Errorf("identity: CA %s: the stored fingerprint is not the certificate's", row.ID)
	}
	pkcs8, err := kek.Open(row.KeyNonce, row.KeyCiphertext, authorityAAD(row.ID))
	if err != nil {
		return nil, fmt.Errorf("identity: CA %s: %w", row.ID, err)
	}
	parsed, err := x509.ParsePKCS8PrivateKey(pkcs8)
	if err != nil {
		return nil, fmt.Errorf("identity: CA %s: parse private key: %w", row.ID, err)
	}
	key, ok := parsed.(*ecdsa.PrivateKey)
	if !ok || !key.PublicKey.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("identity: CA %s: the private key does not match the certificate", row.ID)
	}
	return &Authority{id: row.ID, cert: cert, signer: key, fingerprint: row.Fingerprint, now: now}, nil
}

// Refresh reads which key-encryption key the CA's key is sealed under now: after a
// re-wrap to a key this replica lacks, Sign refuses, as the replica's next start would.
// The daemon calls it when the database announces a re-wrap of the CA (on
// palyra_master_key) and when its notifications may have been lost.
func (a *Authority) Refresh(ctx context.Context) error {
	kekID, err := a.store.Q().GetActiveAuthorityKEK(ctx)
	if err != nil {
		return fmt.Errorf("identity: read the CA's key-encryption key: %w", err)
	}
	a.sealedUnder.Store(&kekID)
	return nil
}

// usable returns nil while this replica holds the key the CA's key is sealed under,
// else a FailedPrecondition error naming that key.
func (a *Authority) usable() error {
	kekID := *a.sealedUnder.Load()
	if _, ok := a.keys.Key(kekID); !ok {
		return missingKeyError(kekID, a.keys)
	}
	return nil
}

// DeviceOf returns the device a certificate palyrad issued (by fingerprint) was issued
// to, "" when it is not a device certificate; an error matching store.ErrNotFound when
// palyrad issued no such certificate.
func (a *Authority) DeviceOf(ctx context.Context, fingerprint string) (string, error) {
	rec, err := LookupCertificate(ctx, a.store, fingerprint)
	if err != nil {
		return "", err
	}
	if rec.Kind != KindDevice {
		return "", nil
	}
	return rec.DeviceID, nil
}

// ID is the authority's database id.
func (a *Authority) ID() string { return a.id }

// Certificate returns the root certificate.
func (a *Authority) Certificate() *x509.Certificate { return a.cert }

// Fingerprint returns the root certificate's "sha256:<hex>" fingerprint.
func (a *Authority) Fingerprint() string { return a.fingerprint }

// PEM returns the root certificate in PEM form.
func (a *Authority) PEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.cert.Raw})
}

// CertPool returns a pool holding only the root, for verifying client certificates.
func (a *Authority) CertPool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(a.cert)
	return p
}

// WriteCAFile writes the root certificate to <dataDir>/ca.pem (mode 0644) for clients,
// replacing the file atomically and leaving it alone when it is already current.
func (a *Authority) WriteCAFile(dataDir string) (string, error) {
	path := filepath.Join(dataDir, CAFile)
	want := a.PEM()
	if have, err := os.ReadFile(path); err == nil && bytes.Equal(have, want) {
		return path, nil
	}
	tmp, err := os.CreateTemp(dataDir, ".ca-*.pem")
	if err != nil {
		return "", fmt.Errorf("identity: write %s: %w", path, err)
	}
	_, werr := tmp.Write(want)
	serr := tmp.Sync()
	cerr := tmp.Close()
	if err := errors.Join(werr, serr, cerr, os.Chmod(tmp.Name(), 0o644), os.Rename(tmp.Name(), path)); err != nil {
		_ = os.Remove(tmp.Name())
		return "", fmt.Errorf("identity: write %s: %w", path, err)
	}
	return path, nil
}
