package node

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"

	"github.com/palyra/palyra/cli/internal/client"
)

// PairingURI is what a QR pairing code tells a node: where palyrad is, the code, and the
// CA to pin. Its text form is palyra://pair?url=<url>&code=<code>&ca=sha256:<hex>.
type PairingURI struct {
	// URL is palyrad's base URL, https://host:port.
	URL string
	// Code is the QR pairing code (the token StartPairing takes as qr_code).
	Code string
	// CAFingerprint pins palyrad's CA, "sha256:<hex>".
	CAFingerprint string
}

// The forms of pairing codes, as StartPairing takes them.
var (
	pinPattern    = regexp.MustCompile(`^[0-9]{6,12}$`)
	qrCodePattern = regexp.MustCompile(`^[A-Za-z0-9_-]{20,128}$`)
)

// ValidPIN reports whether pin has the form of a PIN pairing code: 6 to 12 digits.
func ValidPIN(pin string) bool { return pinPattern.MatchString(pin) }

// ParsePairingURI parses a palyra://pair URI. It refuses any other scheme or host, a
// URL that is not https://host[:port][/path], a code not of the QR form, a malformed
// CA fingerprint, and a parameter given twice; parameters it does not know are ignored.
func ParsePairingURI(s string) (PairingURI, error) {
	u, err := url.Parse(strings.TrimSpace(s))
	if err != nil {
		return PairingURI{}, errors.New("the pairing URI is not a URI; copy the whole palyra://pair?... text")
	}
	if !strings.EqualFold(u.Scheme, "palyra") || u.Opaque != "" || !strings.EqualFold(u.Host, "pair") ||
		(u.Path != "" && u.Path != "/") || u.User != nil || u.Fragment != "" {
		// The URI holds a secret: the error does not repeat it.
		return PairingURI{}, errors.New("not a pairing URI: it must read palyra://pair?url=...&code=...&ca=sha256:...")
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return PairingURI{}, fmt.Errorf("the pairing URI's parameters are malformed: %v", err)
	}
	get := func(name string) (string, error) {
		switch v := q[name]; len(v) {
		case 0:
			return "", fmt.Errorf("the pairing URI lacks its %s parameter; copy the whole palyra://pair?... text", name)
		case 1:
			return v[0], nil
		}
		return "", fmt.Errorf("the pairing URI gives its %s parameter %d times", name, len(q[name]))
	}
	var p PairingURI
	if p.URL, err = get("url"); err != nil {
		return PairingURI{}, err
	}
	if p.Code, err = get("code"); err != nil {
		return PairingURI{}, err
	}
	if p.CAFingerprint, err = get("ca"); err != nil {
		return PairingURI{}, err
	}
	if su, err := url.Parse(p.URL); err != nil || su.Scheme != "https" || su.Host == "" || su.User != nil ||
		su.RawQuery != "" || su.Fragment != "" {
		return PairingURI{}, fmt.Errorf("the pairing URI's url %q is not an https://host:port URL", p.URL)
	}
	if !qrCodePattern.MatchString(p.Code) {
		return PairingURI{}, errors.New("the pairing URI's code is malformed (20 to 128 letters, digits, '-' or '_'); copy the whole URI again")
	}
	if !client.ValidFingerprint(p.CAFingerprint) {
		return PairingURI{}, fmt.Errorf("the pairing URI's ca %q is not a sha256:<64 lower-case hex digits> fingerprint", p.CAFingerprint)
	}
	return p, nil
}

// String returns the URI's text form.
func (p PairingURI) String() string {
	q := url.Values{"url": {p.URL}, "code": {p.Code}, "ca": {p.CAFingerprint}}
	return "palyra://pair?" + q.Encode()
}
