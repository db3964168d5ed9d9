package identity

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"fmt"
	"math/big"
	"net"
	"time"

	"github.com/palyra/palyra/server/internal/errdefs"
)

// The issuance policy is a list of SignOptions applied, in order, to a template that
// Sign prepares with what every certificate shares (a random serial, the issuer, a
// backdated NotBefore, digital-signature key usage, no CA rights). Options set what
// differs (lifetime, names, extended key usage) or refuse; Sign then checks the result
// against the rules no option may break. Server and device certificates go through the
// same path; only their options differ.

// clockSkew is how far NotBefore is backdated, for clients whose clocks run behind.
const clockSkew = 5 * time.Minute

// ErrPolicy is wrapped by every refusal of the issuance policy (Invalid).
var ErrPolicy = errdefs.New(errdefs.Invalid, "certificate refused by the issuance policy")

// SignOption is one rule of an issuance policy.
type SignOption interface {
	// apply modifies the template or refuses it. now is the issuance time.
	apply(t *x509.Certificate, now time.Time) error
}

// Lifetime makes the certificate valid for d from now.
func Lifetime(d time.Duration) SignOption { return lifetime(d) }

type lifetime time.Duration

func (d lifetime) apply(t *x509.Certificate, now time.Time) error {
	if d <= 0 {
		return fmt.Errorf("%w: lifetime %v is not positive", ErrPolicy, time.Duration(d))
	}
	t.NotAfter = now.Add(time.Duration(d))
	return nil
}

// ServerIdentity makes a TLS server certificate for the given names: the first DNS name
// (or IP) becomes the common name, all of them subject alternative names, and the only
// extended key usage is serverAuth.
func ServerIdentity(dnsNames []string, ips []net.IP) SignOption {
	return serverIdentity{dnsNames: dnsNames, ips: ips}
}

type serverIdentity struct {
	dnsNames []string
	ips      []net.IP
}

func (s serverIdentity) apply(t *x509.Certificate, _ time.Time) error {
	if len(s.dnsNames) == 0 && len(s.ips) == 0 {
		return fmt.Errorf("%w: a server certificate needs at least one name", ErrPolicy)
	}
	t.DNSNames = append([]string(nil), s.dnsNames...)
	t.IPAddresses = append([]net.IP(nil), s.ips...)
	if len(s.dnsNames) > 0 {
		t.Subject = pkix.Name{CommonName: s.dnsNames[0]}
	} else {
		t.Subject = pkix.Name{CommonName: s.ips[0].String()}
	}
	t.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	return nil
}

// Issued is a certificate the authority signed.
type Issued struct {
	// Certificate is the parsed certificate.
	Certificate *x509.Certificate
	// Serial is its serial number in lower-case hex.
	Serial string
	// Fingerprint is its "sha256:<hex>" fingerprint.
	Fingerprint string
}

// Sign issues a certificate for pub under the policy opts. Only ECDSA P-256 public keys
// are accepted; the certificate must end up with a lifetime within the CA's and at
// least one extended key usage. A replica that no longer holds the key the CA is sealed
// under (Refresh) refuses with FailedPrecondition naming that key.
func (a *Authority) Sign(pub any, opts ...SignOption) (*Issued, error) {
	if err := a.usable(); err != nil {
		return nil, err
	}
	key, ok := pub.(*ecdsa.PublicKey)
	if !ok || key == nil || key.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%w: only ECDSA P-256 public keys are accepted", ErrPolicy)
	}
	if _, err := key.ECDH(); err != nil {
		return nil, fmt.Errorf("%w: the public key is not a valid P-256 point", ErrPolicy)
	}
	now := a.now().UTC().Truncate(time.Second)
	serial := new(big.Int).SetBytes(randomBytes(16))
	serial.SetBit(serial, 127, 0) // positive and at most 16 bytes, as RFC 5280 asks
	if serial.Sign() == 0 {
		serial.SetInt64(1)
	}
	t := &x509.Certificate{
		SerialNumber:          serial,
		NotBefore:             now.Add(-clockSkew),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  false,
	}
	if t.NotBefore.Before(a.cert.NotBefore) {
		t.NotBefore = a.cert.NotBefore
	}
	for _, o := range opts {
		if err := o.apply(t, now); err != nil {
			return nil, err
		}
	}
	switch {
	case t.NotAfter.IsZero():
		return nil, fmt.Errorf("%w: no lifetime was set", ErrPolicy)
	case !t.NotAfter.After(t.NotBefore):
		// Only when the clock is far behind the CA's own NotBefore.
		return nil, fmt.Errorf("%w: the certificate would expire before it becomes valid (is the clock right?)", ErrPolicy)
	case t.NotAfter.After(a.cert.NotAfter):
		return nil, fmt.Errorf("%w: the certificate would outlive the CA (which expires %s)", ErrPolicy, a.cert.NotAfter.Format(time.RFC3339))
	case len(t.ExtKeyUsage) == 0:
		return nil, fmt.Errorf("%w: no extended key usage was set", ErrPolicy)
	}
	der, err := x509.CreateCertificate(nil, t, a.cert, key, a.signer)
	if err != nil {
		return nil, fmt.Errorf("identity: sign: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("identity: parse issued certificate: %w", err)
	}
	return &Issued{Certificate: cert, Serial: hex.EncodeToString(serial.Bytes()), Fingerprint: Fingerprint(der)}, nil
}
