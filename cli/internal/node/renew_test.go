package node

import (
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"io/fs"
	"math/big"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/palyra/palyra/cli/internal/client"
	"github.com/palyra/palyra/internal/eventually"
)

// TestRenewalTime checks when a certificate is due: a third of its lifetime before it
// expires, brought forward by at most 10 % of the lifetime.
func TestRenewalTime(t *testing.T) {
	t.Parallel()
	ca, caKey := testCA(t)
	key, _ := GenerateKey()
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := deviceCert(ca, caKey, &key.PublicKey, start, start.Add(90*24*time.Hour))
	tests := map[float64]time.Time{
		0:    start.Add(60 * 24 * time.Hour),
		0.05: start.Add(60*24*time.Hour - 108*time.Hour),
		0.1:  start.Add(51 * 24 * time.Hour),
		0.5:  start.Add(51 * 24 * time.Hour), // at most 10 %
		-1:   start.Add(60 * 24 * time.Hour),
	}
	for jitter, want := range tests {
		if got := RenewalTime(c, jitter); !got.Equal(want) {
			t.Errorf("RenewalTime(jitter %v) = %v, want %v", jitter, got, want)
		}
	}
}

// TestRenewal runs an agent on an injected clock: it waits until a third of the
// certificate's lifetime remains, renews it over mutual TLS with the current
// certificate (retrying a failure for the same key, as palyrad requires of a retry
// from a superseded certificate), stores the new key and certificate, and presents the
// new certificate on the next connection while the current session goes on.
func TestRenewal(t *testing.T) {
	t.Parallel()
	start := time.Now().Add(-time.Hour).Truncate(time.Second) // certificates count in seconds
	b := newBench(t, start, start.Add(90*time.Hour))
	b.set(func(f *fakeDaemon) { f.lifetime, f.renewFail = 1000*time.Hour, 1 })
	var clock atomic.Int64
	clock.Store(start.Add(50 * time.Hour).UnixNano())
	var mu sync.Mutex
	var waits []time.Duration
	fire := make(chan time.Time)
	o := b.options()
	o.Now = func() time.Time { return time.Unix(0, clock.Load()) }
	o.Rand = func(int64) int64 { return 0 }
	o.tune.renewCheck = 1000 * time.Hour
	o.tune.after = func(d time.Duration) <-chan time.Time {
		mu.Lock()
		defer mu.Unlock()
		waits = append(waits, d)
		return fire
	}
	b.start(o)
	s := b.session()
	if !s.peer.Equal(b.cert) {
		t.Fatal("the first session does not present the paired certificate")
	}
	lastWait := func() time.Duration {
		mu.Lock()
		defer mu.Unlock()
		if len(waits) == 0 {
			return 0
		}
		return waits[len(waits)-1]
	}
	eventually.True(t, "the renewal loop waits", func() bool { return lastWait() != 0 })
	if d := lastWait(); d != 10*time.Hour {
		t.Errorf("the agent waits %v to renew, want 10h (until a third of 90h remains)", d)
	}
	renewals := func() int {
		b.daemon.mu.Lock()
		defer b.daemon.mu.Unlock()
		return len(b.daemon.renewals)
	}
	if renewals() != 0 {
		t.Fatal("renewed early")
	}

	clock.Store(start.Add(60 * time.Hour).UnixNano())
	fire <- time.Now()
	eventually.True(t, "a first, failed renewal", func() bool { return renewals() == 1 })
	fire <- time.Now() // the retry's backoff
	eventually.True(t, "the renewal", func() bool {
		b.daemon.mu.Lock()
		defer b.daemon.mu.Unlock()
		return len(b.daemon.renewedCerts) == 1
	})
	b.daemon.mu.Lock()
	peers, keys, issued := slices.Clone(b.daemon.renewals), slices.Clone(b.daemon.renewKeys), b.daemon.renewedCerts[0]
	b.daemon.mu.Unlock()
	for _, p := range peers {
		if !p.Equal(b.cert) {
			t.Errorf("RenewCertificate was called with %v, not the current certificate", p.SerialNumber)
		}
	}
	if len(keys) != 2 || !keys[0].(*ecdsa.PublicKey).Equal(keys[1]) || !keys[1].(*ecdsa.PublicKey).Equal(issued.PublicKey) {
		t.Error("the retried renewal asked for another key than the failed one")
	}
	eventually.True(t, "the new certificate in cert.pem", func() bool {
		c, err := b.dir.Certificate()
		return err == nil && c.Equal(issued)
	})
	key, err := b.dir.Key()
	if err != nil || !issued.PublicKey.(*ecdsa.PublicKey).Equal(key.Public()) {
		t.Fatalf("key.pem does not match the new certificate: %v", err)
	}
	eventually.True(t, "the host record", func() bool {
		h, err := b.dir.Host()
		return err == nil && h.CertificateFingerprint == client.Fingerprint(issued) && h.CertificateExpireTime.Equal(issued.NotAfter.UTC().Truncate(time.Second))
	})
	for _, name := range []string{keyNextFile, certNextFile} {
		if _, err := os.Stat(b.dir.File(name)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s left behind: %v", name, err)
		}
	}

	// The session goes on; the next one presents the new certificate, in a full
	// handshake: no TLS session made with the old one is resumed.
	s.quiet(t, 100*time.Millisecond)
	s.end <- connect.NewError(connect.CodeUnavailable, errors.New("restart"))
	if s = b.session(); !s.peer.Equal(issued) || s.resumed {
		t.Errorf("the next session presents %v (resumed: %v), not the renewed certificate in a full handshake", s.peer.SerialNumber, s.resumed)
	}
	// The one after resumes the session made with the new certificate.
	s.end <- connect.NewError(connect.CodeUnavailable, errors.New("restart"))
	if s = b.session(); !s.peer.Equal(issued) || !s.resumed {
		t.Errorf("the session after presents %v (resumed: %v), want the renewed certificate's session resumed", s.peer.SerialNumber, s.resumed)
	}
}

// TestCertificateSwapRecovery checks what the agent finds after a crash at each step
// of a renewal's swap of key and certificate: always a matching pair.
func TestCertificateSwapRecovery(t *testing.T) {
	t.Parallel()
	ca, caKey := testCA(t)
	oldKey, _ := GenerateKey()
	newKey, _ := GenerateKey()
	oldCert := deviceCert(ca, caKey, &oldKey.PublicKey, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	newCert := deviceCert(ca, caKey, &newKey.PublicKey, time.Now().Add(-time.Hour), time.Now().Add(2*time.Hour))
	tests := map[string]struct {
		steps int // of: write key.next, write cert.next, rename key, rename cert
		want  *x509Pair
	}{
		"new key written":         {steps: 1, want: &x509Pair{oldKey.PublicKey.X, oldCert}}, // key.next kept for the retry
		"new certificate written": {steps: 2, want: &x509Pair{newKey.PublicKey.X, newCert}},
		"key renamed":             {steps: 3, want: &x509Pair{newKey.PublicKey.X, newCert}},
		"done":                    {steps: 4, want: &x509Pair{newKey.PublicKey.X, newCert}},
	}
	for name, tt := range tests {
		dir := NewStateDir(t.TempDir())
		if err := dir.SaveKey(oldKey); err != nil {
			t.Fatal(err)
		}
		if err := dir.SaveCertificates(oldCert, ca); err != nil {
			t.Fatal(err)
		}
		kb, _ := MarshalKeyPEM(newKey)
		steps := []func() error{
			func() error { return dir.write(keyNextFile, kb, 0o600) },
			func() error { return dir.write(certNextFile, []byte(pemOf(newCert)), 0o644) },
			func() error { return os.Rename(dir.File(keyNextFile), dir.File(KeyFile)) },
			func() error { return os.Rename(dir.File(certNextFile), dir.File(CertFile)) },
		}
		for _, step := range steps[:tt.steps] {
			if err := step(); err != nil {
				t.Fatal(err)
			}
		}
		if err := dir.recoverCertificateSwap(); err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		key, err := dir.Key()
		if err != nil {
			t.Fatal(err)
		}
		cert, err := dir.Certificate()
		if err != nil {
			t.Fatal(err)
		}
		if key.PublicKey.X.Cmp(tt.want.x) != 0 || !cert.Equal(tt.want.cert) {
			t.Errorf("%s: the wrong key or certificate after recovery", name)
		}
		gone := []string{keyNextFile, certNextFile}
		if tt.steps == 1 {
			if next, err := dir.renewalKey(); err != nil || !next.Equal(newKey) {
				t.Errorf("%s: the next renewal does not ask again for the new key: %v", name, err)
			}
			gone = gone[1:]
		}
		for _, f := range gone {
			if _, err := os.Stat(dir.File(f)); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("%s: %s left behind", name, f)
			}
		}
	}
}

// x509Pair is a key (by its public X coordinate) and a certificate.
type x509Pair struct {
	x    *big.Int
	cert *x509.Certificate
}
