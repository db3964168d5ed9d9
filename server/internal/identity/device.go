package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/palyra/palyra/gen/dbsqlc"
	"github.com/palyra/palyra/server/internal/store"
)

// Device certificates: the device id is in a URI SAN palyra://device/<id>; the only
// extended key usage is clientAuth; the node's CSR contributes nothing but its public
// key (names and extensions it asks for are never copied).

// deviceURIScheme and deviceURIHost make the device URI palyra://device/<id>.
const (
	deviceURIScheme = "palyra"
	deviceURIHost   = "device"
)

// DeviceURI returns the URI SAN of a device.
func DeviceURI(deviceID string) *url.URL {
	return &url.URL{Scheme: deviceURIScheme, Host: deviceURIHost, Path: "/" + deviceID}
}

// DeviceID returns the device id of a device certificate, from its URI SAN; ok is false
// when the certificate names no device (or more than one).
func DeviceID(c *x509.Certificate) (id string, ok bool) {
	for _, u := range c.URIs {
		if u.Scheme != deviceURIScheme || u.Host != deviceURIHost {
			continue
		}
		if id != "" {
			return "", false
		}
		id = strings.TrimPrefix(u.Path, "/")
	}
	if _, err := ulid.ParseStrict(id); err != nil || strings.ToUpper(id) != id {
		return "", false
	}
	return id, true
}

// DeviceIdentity makes a client certificate for a device: the device id as common name
// and URI SAN, and clientAuth as the only extended key usage.
func DeviceIdentity(deviceID string) SignOption { return deviceIdentity(deviceID) }

type deviceIdentity string

func (d deviceIdentity) apply(t *x509.Certificate, _ time.Time) error {
	id := string(d)
	if _, err := ulid.ParseStrict(id); err != nil || strings.ToUpper(id) != id {
		return fmt.Errorf("%w: %q is not a device id", ErrPolicy, id)
	}
	t.Subject = pkix.Name{Organization: []string{"Palyra devices"}, CommonName: id}
	t.URIs = []*url.URL{DeviceURI(id)}
	t.DNSNames, t.IPAddresses, t.EmailAddresses = nil, nil, nil
	t.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	return nil
}

// ErrCSR is wrapped by every refusal of a certificate signing request.
var ErrCSR = errors.New("invalid certificate signing request")

// ParseCSR parses a PKCS#10 request in DER form, checks its signature (proof that the
// sender holds the private key) and accepts only ECDSA P-256 keys. It returns the
// request and the fingerprint of its public key.
func ParseCSR(der []byte) (*x509.CertificateRequest, string, error) {
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, "", fmt.Errorf("%w: not a PKCS#10 request in DER form", ErrCSR)
	}
	key, ok := csr.PublicKey.(*ecdsa.PublicKey)
	if !ok || key.Curve != elliptic.P256() {
		return nil, "", fmt.Errorf("%w: the key must be ECDSA P-256", ErrCSR)
	}
	if _, err := key.ECDH(); err != nil {
		return nil, "", fmt.Errorf("%w: the public key is not a valid P-256 point", ErrCSR)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, "", fmt.Errorf("%w: its signature does not verify", ErrCSR)
	}
	fp, err := PublicKeyFingerprint(key)
	if err != nil {
		return nil, "", fmt.Errorf("%w: %v", ErrCSR, err)
	}
	return csr, fp, nil
}

// PublicKeyFingerprint returns the SHA-256 of a public key's SubjectPublicKeyInfo as
// "sha256:<hex>": what an approver compares with what the node shows.
func PublicKeyFingerprint(pub any) (string, error) {
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("encode public key: %w", err)
	}
	sum := sha256.Sum256(spki)
	return "sha256:" + hex.EncodeToString(sum[:]), nil
}

// Kinds of issued certificates, as recorded.
const (
	KindServer = "server"
	KindDevice = "device"
)

// Columns are what issued_certificates keeps of an issued certificate, but its device:
// what Record writes, for a statement that records it together with the change it
// belongs to.
type Columns struct {
	Serial, Fingerprint, AuthorityID, Kind, Subject string
	// DNSNames, IPAddresses and URIs are the subject alternative names, never nil.
	DNSNames, IPAddresses, URIs []string
	NotBefore, NotAfter         time.Time
	IssuedByReplica             string
}

// ColumnsOf returns what issued_certificates keeps of issued, a certificate of kind
// that a signed on replicaID.
func ColumnsOf(a *Authority, issued *Issued, kind, replicaID string) Columns {
	c := issued.Certificate
	ips := make([]string, len(c.IPAddresses))
	for i, ip := range c.IPAddresses {
		ips[i] = ip.String()
	}
	uris := make([]string, len(c.URIs))
	for i, u := range c.URIs {
		uris[i] = u.String()
	}
	return Columns{
		Serial:          issued.Serial,
		Fingerprint:     issued.Fingerprint,
		AuthorityID:     a.ID(),
		Kind:            kind,
		Subject:         c.Subject.String(),
		DNSNames:        append([]string{}, c.DNSNames...), // never nil: pgx sends nil as NULL
		IPAddresses:     ips,
		URIs:            uris,
		NotBefore:       c.NotBefore,
		NotAfter:        c.NotAfter,
		IssuedByReplica: replicaID,
	}
}

// Record records an issued certificate through db (a Tx to record it with the change
// it belongs to); deviceID is empty for server certificates.
func Record(ctx context.Context, db store.Queryer, a *Authority, issued *Issued, kind, deviceID, replicaID string) error {
	var device *string
	if deviceID != "" {
		device = &deviceID
	}
	c := ColumnsOf(a, issued, kind, replicaID)
	err := db.Q().InsertIssuedCertificate(ctx, dbsqlc.InsertIssuedCertificateParams{
		Serial:          c.Serial,
		Fingerprint:     c.Fingerprint,
		AuthorityID:     c.AuthorityID,
		Kind:            c.Kind,
		Subject:         c.Subject,
		DnsNames:        c.DNSNames,
		IpAddresses:     c.IPAddresses,
		Uris:            c.URIs,
		NotBefore:       c.NotBefore,
		NotAfter:        c.NotAfter,
		IssuedByReplica: c.IssuedByReplica,
		DeviceID:        device,
	})
	if err != nil {
		return fmt.Errorf("identity: record %s certificate: %w", kind, err)
	}
	return nil
}

// CertificateRecord is a certificate palyrad issued, as recorded.
type CertificateRecord struct {
	Fingerprint string
	// Kind is KindServer or KindDevice.
	Kind string
	// DeviceID is the device it was issued to; "" for a certificate of no device.
	DeviceID            string
	NotBefore, NotAfter time.Time
	// RevokedAt is when it is (or will be) revoked, nil unless it is.
	RevokedAt *time.Time
}

// LookupCertificate returns the record of the certificate palyrad issued with
// fingerprint, read through db; an error matching store.ErrNotFound when there is none.
func LookupCertificate(ctx context.Context, db store.Queryer, fingerprint string) (*CertificateRecord, error) {
	c, err := db.Q().GetIssuedCertificate(ctx, fingerprint)
	if err != nil {
		return nil, fmt.Errorf("identity: certificate %s: %w", fingerprint, err)
	}
	rec := &CertificateRecord{
		Fingerprint: c.Fingerprint, Kind: c.Kind, NotBefore: c.NotBefore, NotAfter: c.NotAfter, RevokedAt: c.RevokedAt,
	}
	if c.DeviceID != nil {
		rec.DeviceID = *c.DeviceID
	}
	return rec, nil
}
