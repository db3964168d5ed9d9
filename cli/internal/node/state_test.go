package node

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// mode returns the permission bits of path.
func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return info.Mode().Perm()
}

// TestStateDir checks the modes of the directory and its files, that every file
// round-trips, that writes leave no temporary files, and that a key others may read is
// refused.
func TestStateDir(t *testing.T) {
	t.Parallel()
	if runtime.GOOS == "windows" {
		t.Skip("no permission bits")
	}
	path := filepath.Join(t.TempDir(), "state", "palyra", "node")
	dir := NewStateDir(path)

	// An empty directory: no host, key, request nor certificate.
	if h, err := dir.Host(); err != nil || *h != (Host{}) {
		t.Errorf("Host of an empty directory = %+v, %v", h, err)
	}
	if k, err := dir.Key(); err != nil || k != nil {
		t.Errorf("Key of an empty directory = %v, %v", k, err)
	}
	if p, err := dir.Pending(); err != nil || p != nil {
		t.Errorf("Pending of an empty directory = %v, %v", p, err)
	}
	if paired, err := dir.Paired(); err != nil || paired {
		t.Errorf("Paired of an empty directory = %v, %v", paired, err)
	}

	key, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err == nil {
		t.Fatal("reading the state directory created it")
	}
	if err := dir.SaveKey(key); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, filepath.Dir(path)} {
		if m := mode(t, p); m != 0o700 {
			t.Errorf("%s mode %v, want 0700", p, m)
		}
	}
	got, err := dir.Key()
	if err != nil || !got.Equal(key) {
		t.Fatalf("Key = %v, %v; want the saved key", got, err)
	}
	raw, err := os.ReadFile(dir.File(KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if block, _ := pem.Decode(raw); block == nil || block.Type != "PRIVATE KEY" {
		t.Errorf("%s is not a PKCS#8 PRIVATE KEY PEM:\n%s", KeyFile, raw)
	}

	expiry := time.Date(2025, 6, 2, 12, 0, 0, 0, time.UTC)
	host := &Host{URL: "https://admin-host:7443", CAFingerprint: testFP, DeviceName: "build-01", DeviceID: "01JD5ZJ8Q0W1X2Y3Z4A5B6C7V1",
		CertificateExpireTime: expiry, PairedAt: expiry.Add(-24 * time.Hour)}
	if err := dir.SaveHost(host); err != nil {
		t.Fatal(err)
	}
	if h, err := dir.Host(); err != nil || *h != *host {
		t.Errorf("Host = %+v, %v; want %+v", h, err, host)
	}
	b, _ := os.ReadFile(dir.File(HostFile))
	for _, want := range []string{`"url": "https://admin-host:7443"`, `"device_id": "01JD5ZJ8Q0W1X2Y3Z4A5B6C7V1"`, `"certificate_expire_time": "2025-06-02T12:00:00Z"`, `"paired_at"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("%s lacks %s:\n%s", HostFile, want, b)
		}
	}
	if strings.Contains(string(b), "request_id") {
		t.Errorf("%s records an empty request id:\n%s", HostFile, b)
	}

	pending := &Pending{RequestID: "01JD5ZJ8Q0W1X2Y3Z4A5B6C7R1", Secret: "pairing-secret", ExpireTime: expiry}
	if err := dir.SavePending(pending); err != nil {
		t.Fatal(err)
	}
	if p, err := dir.Pending(); err != nil || *p != *pending {
		t.Errorf("Pending = %+v, %v; want %+v", p, err, pending)
	}

	ca, caKey := testCA(t)
	cert := issue(t, ca, caKey, &key.PublicKey, "01JD5ZJ8Q0W1X2Y3Z4A5B6C7V1")
	if err := dir.SaveCertificates(cert, ca); err != nil {
		t.Fatal(err)
	}
	if paired, err := dir.Paired(); err != nil || !paired {
		t.Errorf("Paired = %v, %v after saving the certificate", paired, err)
	}
	if c, err := dir.Certificate(); err != nil || !c.Equal(cert) {
		t.Errorf("Certificate = %v, %v", c, err)
	}
	if c, err := dir.CA(); err != nil || !c.Equal(ca) {
		t.Errorf("CA = %v, %v", c, err)
	}

	modes := map[string]os.FileMode{KeyFile: 0o600, HostFile: 0o600, PendingFile: 0o600, CertFile: 0o644, CAFile: 0o644}
	for name, want := range modes {
		if m := mode(t, dir.File(name)); m != want {
			t.Errorf("%s mode %v, want %v", name, m, want)
		}
	}
	// Rewrites keep the modes and leave no temporary file.
	if err := dir.SaveHost(host); err != nil {
		t.Fatal(err)
	}
	if err := dir.SaveKey(key); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(path)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != "ca.pem cert.pem key.pem node-host.json pairing.json" {
		t.Errorf("the directory holds %v", names)
	}

	if err := dir.RemovePending(); err != nil {
		t.Fatal(err)
	}
	if err := dir.RemovePending(); err != nil {
		t.Errorf("removing a missing pairing.json: %v", err)
	}
	if p, err := dir.Pending(); err != nil || p != nil {
		t.Errorf("Pending after RemovePending = %v, %v", p, err)
	}
	if err := dir.RetireIdentity(); err != nil {
		t.Fatal(err)
	}
	if paired, _ := dir.Paired(); paired {
		t.Error("still paired after RetireIdentity")
	}

	// A key, host record or secret that others may read is refused, not used.
	for _, name := range []string{KeyFile, HostFile} {
		if err := os.Chmod(dir.File(name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := dir.Key(); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("Key of a 0644 file = %v, want a refusal", err)
	}
	if _, err := dir.Host(); err == nil {
		t.Error("Host of a 0644 file was read")
	}

	// A file in the directory's place is no directory.
	if err := NewStateDir(dir.File(CAFile)).SaveHost(host); err == nil {
		t.Error("a file was used as a state directory")
	}
}

// TestStateDirDefault checks where the state lives by default.
func TestStateDirDefault(t *testing.T) {
	t.Parallel()
	env := func(kv ...string) func(string) string {
		m := map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return func(k string) string { return m[k] }
	}
	tests := []struct {
		getenv func(string) string
		want   string
	}{
		{env("XDG_STATE_HOME", "/x/state", "HOME", "/home/n"), "/x/state/palyra/node"},
		{env("XDG_STATE_HOME", "relative", "HOME", "/home/n"), "/home/n/.local/state/palyra/node"},
		{env("HOME", "/home/n"), "/home/n/.local/state/palyra/node"},
		{env(), ""},
	}
	for _, tt := range tests {
		got, err := DefaultStateDir(tt.getenv)
		if tt.want == "" {
			if err == nil {
				t.Errorf("DefaultStateDir without HOME = %q", got)
			}
			continue
		}
		if err != nil || got != filepath.FromSlash(tt.want) {
			t.Errorf("DefaultStateDir = %q, %v; want %q", got, err, tt.want)
		}
	}
}

// TestNodeKeyAndCSR checks the node's key and its certificate signing request: ECDSA
// P-256, the device name as the only name, a valid signature, and the fingerprint the
// approver compares.
func TestNodeKeyAndCSR(t *testing.T) {
	t.Parallel()
	key, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	der, err := NewCSR(key, "build-01")
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	pub, ok := csr.PublicKey.(*ecdsa.PublicKey)
	switch {
	case !ok || pub.Curve != elliptic.P256() || !pub.Equal(key.Public()):
		t.Errorf("the CSR's key is %T, not the node's P-256 key", csr.PublicKey)
	case csr.Subject.CommonName != "build-01" || len(csr.Subject.Organization) != 0:
		t.Errorf("subject %v, want CN=build-01 alone", csr.Subject)
	case len(csr.DNSNames)+len(csr.IPAddresses)+len(csr.URIs)+len(csr.EmailAddresses) != 0 || len(csr.Extensions) != 0:
		t.Errorf("the CSR asks for names or extensions: %v %v %v %v %v", csr.DNSNames, csr.IPAddresses, csr.URIs, csr.EmailAddresses, csr.Extensions)
	case csr.SignatureAlgorithm != x509.ECDSAWithSHA256:
		t.Errorf("signature algorithm %v", csr.SignatureAlgorithm)
	}
	if err := csr.CheckSignature(); err != nil {
		t.Errorf("the CSR's signature: %v", err)
	}
	if len(der) < 64 || len(der) > 4096 {
		t.Errorf("the CSR is %d bytes; palyrad takes 64 to 4096", len(der))
	}

	spki, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	sum := sha256.Sum256(spki)
	if fp, err := KeyFingerprint(key.Public()); err != nil || fp != "sha256:"+hex.EncodeToString(sum[:]) {
		t.Errorf("KeyFingerprint = %q, %v", fp, err)
	}

	// Only ECDSA P-256 keys in PKCS#8 are taken back, and errors do not quote the key.
	pemOf := func(k any) []byte {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	sec1, _ := x509.MarshalECPrivateKey(key)
	bad := map[string][]byte{
		"P-384":   pemOf(p384),
		"RSA":     pemOf(rsaKey),
		"SEC 1":   pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}),
		"not PEM": []byte("key"),
		"garbage": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("not a key at all")}),
	}
	for name, b := range bad {
		if _, err := ParseKeyPEM(b); err == nil {
			t.Errorf("%s: ParseKeyPEM worked", name)
		} else if strings.Contains(err.Error(), "PRIVATE KEY-----") {
			t.Errorf("%s: the error quotes the key: %v", name, err)
		}
	}
	b, err := MarshalKeyPEM(key)
	if err != nil {
		t.Fatal(err)
	}
	if back, err := ParseKeyPEM(b); err != nil || !back.Equal(key) {
		t.Errorf("ParseKeyPEM(MarshalKeyPEM(key)) = %v, %v", back, err)
	}
}
