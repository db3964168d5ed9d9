package node

import (
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/palyra/palyra/cli/internal/atomicfile"
)

// The files of a state directory.
const (
	// KeyFile holds the node's private key: PKCS#8 "PRIVATE KEY" PEM, mode 0600.
	KeyFile = "key.pem"
	// CertFile holds the node's device certificate (PEM); its presence means paired.
	CertFile = "cert.pem"
	// CAFile holds palyrad's CA certificate (PEM), the only CA the node trusts.
	CAFile = "ca.pem"
	// HostFile holds the node's Host record (JSON, mode 0600).
	HostFile = "node-host.json"
	// PendingFile holds a pending pairing request and its secret (JSON, mode 0600); it
	// exists only while the node waits for a decision.
	PendingFile = "pairing.json"
	// PrevKeyFile and PrevCertFile keep the key and certificate of the device a node
	// pairs again as, from the new request until one is approved: with them it proves
	// to palyrad that it is that device (StartPairingRequest.device_possession).
	PrevKeyFile, PrevCertFile = "key.prev.pem", "cert.prev.pem"
)

// Host is what node-host.json records: the daemon the node pairs with and who it is
// there. It holds no secret.
type Host struct {
	// URL is palyrad's base URL.
	URL string `json:"url"`
	// CAFingerprint pins palyrad's CA, "sha256:<hex>".
	CAFingerprint string `json:"ca_fingerprint"`
	// DeviceName is the name the node paired with.
	DeviceName string `json:"device_name,omitempty"`
	// DeviceID is the node's device id, once paired.
	DeviceID string `json:"device_id,omitempty"`
	// PreviousDeviceID is the device the node was before it started pairing again
	// (--force), sent with every new pairing request until one is approved.
	PreviousDeviceID string `json:"previous_device_id,omitempty"`
	// KeyFingerprint is the SHA-256 of the node's public key, "sha256:<hex>".
	KeyFingerprint string `json:"key_fingerprint,omitempty"`
	// RequestID is the pending pairing request, while there is one.
	RequestID string `json:"request_id,omitempty"`
	// CertificateFingerprint is the SHA-256 of the device certificate's DER.
	CertificateFingerprint string `json:"certificate_fingerprint,omitempty"`
	// CertificateExpireTime is when the device certificate expires.
	CertificateExpireTime time.Time `json:"certificate_expire_time,omitzero"`
	// PairedAt is when the node stored its certificate.
	PairedAt time.Time `json:"paired_at,omitzero"`
}

// Pending is a pairing request the node waits on: what pairing.json records. The
// secret authenticates the node to GetPairingStatus and WatchPairing, so the file is
// private like the key, and it is removed once the request is decided.
type Pending struct {
	// RequestID identifies the request.
	RequestID string `json:"request_id"`
	// Secret is the pairing secret StartPairing returned.
	Secret string `json:"pairing_secret"`
	// ExpireTime is when the request expires if no one decides.
	ExpireTime time.Time `json:"expire_time,omitzero"`
}

// StateDir is a node's state directory: its key, certificate, CA, host record and, while
// it pairs, its pending request. The directory is created with mode 0700, the key and
// the records with mode 0600; every file is written atomically, so that a node killed
// at any moment finds either the old file or the new one.
type StateDir struct {
	path string
}

// DefaultStateDir returns the default state directory: $XDG_STATE_HOME/palyra/node, or
// $HOME/.local/state/palyra/node when XDG_STATE_HOME is unset or not absolute.
func DefaultStateDir(getenv func(string) string) (string, error) {
	if dir := getenv("XDG_STATE_HOME"); filepath.IsAbs(dir) {
		return filepath.Join(dir, "palyra", "node"), nil
	}
	if home := getenv("HOME"); filepath.IsAbs(home) {
		return filepath.Join(home, ".local", "state", "palyra", "node"), nil
	}
	return "", errors.New("cannot locate the node's state directory: set XDG_STATE_HOME or HOME, or pass --state-dir")
}

// NewStateDir returns the state directory at path. Nothing is read nor created yet: a
// missing directory holds nothing, and the first write creates it (and its missing
// parents) with mode 0700.
func NewStateDir(path string) *StateDir { return &StateDir{path: path} }

// Path returns the directory's path.
func (s *StateDir) Path() string { return s.path }

// File returns the path of one of the directory's files.
func (s *StateDir) File(name string) string { return filepath.Join(s.path, name) }

// exists reports whether the file name exists.
func (s *StateDir) exists(name string) (bool, error) {
	_, err := os.Stat(s.File(name))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	}
	return false, err
}

// readPrivate reads a file that only its owner may access; one that its group or others
// may access is refused, as it may have leaked. ok is false when it does not exist.
func (s *StateDir) readPrivate(name string) (b []byte, ok bool, err error) {
	f, err := os.Open(s.File(name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, false, err
	}
	// Windows has no such permission bits: its ACLs keep a user's files private.
	if runtime.GOOS != "windows" && info.Mode().Perm()&0o077 != 0 {
		return nil, false, fmt.Errorf("%s is private but its group or others may access it (mode %s); "+
			"run `chmod 600 %s` (and consider whether it leaked)", f.Name(), info.Mode().Perm(), f.Name())
	}
	b, err = io.ReadAll(f)
	return b, err == nil, err
}

// Host reads node-host.json; a missing file is an empty Host.
func (s *StateDir) Host() (*Host, error) {
	b, ok, err := s.readPrivate(HostFile)
	if err != nil || !ok {
		return &Host{}, err
	}
	h := &Host{}
	if err := json.Unmarshal(b, h); err != nil {
		return nil, fmt.Errorf("%s: %w", s.File(HostFile), err)
	}
	return h, nil
}

// SaveHost writes node-host.json.
func (s *StateDir) SaveHost(h *Host) error {
	b, err := json.MarshalIndent(h, "", "  ")
	if err != nil {
		return err
	}
	return s.write(HostFile, append(b, '\n'), 0o600)
}

// Pending reads pairing.json; nil when the node waits on no request.
func (s *StateDir) Pending() (*Pending, error) {
	b, ok, err := s.readPrivate(PendingFile)
	if err != nil || !ok {
		return nil, err
	}
	p := &Pending{}
	if err := json.Unmarshal(b, p); err != nil {
		return nil, fmt.Errorf("%s: %w", s.File(PendingFile), err)
	}
	if p.RequestID == "" || p.Secret == "" {
		return nil, fmt.Errorf("%s lacks the request id or its secret", s.File(PendingFile))
	}
	return p, nil
}

// SavePending writes pairing.json.
func (s *StateDir) SavePending(p *Pending) error {
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return err
	}
	return s.write(PendingFile, append(b, '\n'), 0o600)
}

// RemovePending removes pairing.json, and with it the pairing secret.
func (s *StateDir) RemovePending() error { return s.remove(PendingFile) }

// Key reads the private key; nil when there is none.
func (s *StateDir) Key() (*ecdsa.PrivateKey, error) {
	b, ok, err := s.readPrivate(KeyFile)
	if err != nil || !ok {
		return nil, err
	}
	key, err := ParseKeyPEM(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.File(KeyFile), err)
	}
	return key, nil
}

// SaveKey writes the private key, mode 0600.
func (s *StateDir) SaveKey(key *ecdsa.PrivateKey) error {
	b, err := MarshalKeyPEM(key)
	if err != nil {
		return err
	}
	return s.write(KeyFile, b, 0o600)
}

// Paired reports whether the directory holds a device certificate.
func (s *StateDir) Paired() (bool, error) { return s.exists(CertFile) }

// Certificate reads the device certificate.
func (s *StateDir) Certificate() (*x509.Certificate, error) { return s.readCertificate(CertFile) }

// CA reads palyrad's CA certificate.
func (s *StateDir) CA() (*x509.Certificate, error) { return s.readCertificate(CAFile) }

// readCertificate reads the first certificate of the PEM file name.
func (s *StateDir) readCertificate(name string) (*x509.Certificate, error) {
	b, err := os.ReadFile(s.File(name))
	if err != nil {
		return nil, err
	}
	c, err := parseCertificatePEM(string(b))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.File(name), err)
	}
	return c, nil
}

// parseCertificatePEM parses the first certificate of a PEM text.
func parseCertificatePEM(s string) (*x509.Certificate, error) {
	for rest := []byte(s); ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, errors.New("no PEM certificate")
		}
		if block.Type == "CERTIFICATE" {
			return x509.ParseCertificate(block.Bytes)
		}
	}
}

// certificatePEM encodes a certificate as a "CERTIFICATE" PEM block.
func certificatePEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// SaveCertificates writes the device certificate and the CA, both PEM: the CA first,
// so that a certificate is never present without the CA that verifies the daemon.
func (s *StateDir) SaveCertificates(cert, ca *x509.Certificate) error {
	if err := s.write(CAFile, certificatePEM(ca), 0o644); err != nil {
		return err
	}
	return s.write(CertFile, certificatePEM(cert), 0o644)
}

// RetireIdentity puts the key and the device certificate aside (PrevKeyFile,
// PrevCertFile): the node is no longer paired, but can still prove that it was that
// device. The key is copied first, so that a crash leaves a usable pair in either place.
func (s *StateDir) RetireIdentity() error {
	b, ok, err := s.readPrivate(KeyFile)
	if err != nil {
		return err
	}
	if ok {
		if err := s.write(PrevKeyFile, b, 0o600); err != nil {
			return err
		}
	}
	if err := os.Rename(s.File(CertFile), s.File(PrevCertFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("put the device certificate aside: %w", err)
	}
	return nil
}

// Identity returns the key and device certificate the node can prove a device with:
// the current ones when it is paired, else those put aside by RetireIdentity; nil when
// it has none, or none that match.
func (s *StateDir) Identity() (*ecdsa.PrivateKey, *x509.Certificate, error) {
	keyFile, certFile := KeyFile, CertFile
	if paired, err := s.Paired(); err != nil {
		return nil, nil, err
	} else if !paired {
		keyFile, certFile = PrevKeyFile, PrevCertFile
	}
	b, ok, err := s.readPrivate(keyFile)
	if err != nil || !ok {
		return nil, nil, err
	}
	key, err := ParseKeyPEM(b)
	if err != nil {
		return nil, nil, nil
	}
	cert, err := s.readCertificate(certFile)
	if err != nil || !certifies(cert, key) {
		return nil, nil, nil
	}
	return key, cert, nil
}

// ForgetIdentity removes the key and certificate put aside by RetireIdentity, once the
// node paired again.
func (s *StateDir) ForgetIdentity() error {
	return errors.Join(s.remove(PrevKeyFile), s.remove(PrevCertFile))
}

// mkdir creates the directory (mode 0700) if it is missing.
func (s *StateDir) mkdir() error {
	if err := os.MkdirAll(s.path, 0o700); err != nil {
		return fmt.Errorf("create the state directory: %w", err)
	}
	return nil
}

// write writes the file name atomically with mode perm, creating the directory first.
func (s *StateDir) write(name string, data []byte, perm fs.FileMode) error {
	if err := s.mkdir(); err != nil {
		return err
	}
	if err := atomicfile.Write(s.File(name), data, perm); err != nil {
		return fmt.Errorf("write %s: %w", s.File(name), err)
	}
	return nil
}

// remove removes the file name; a missing file is no error.
func (s *StateDir) remove(name string) error {
	if err := os.Remove(s.File(name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}
