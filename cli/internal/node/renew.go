package node

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"connectrpc.com/connect"

	"github.com/palyra/palyra/cli/internal/client"
	nodev1 "github.com/palyra/palyra/gen/go/palyra/node/v1"
	"github.com/palyra/palyra/internal/retry"
)

// The files of a renewal in progress: the new key, written before the node asks for its
// certificate (a retry asks again for the same key, which palyrad accepts from a
// superseded certificate when its answer was lost), and the new certificate; both then
// replace key.pem and cert.pem.
const (
	keyNextFile  = "key.next.pem"
	certNextFile = "cert.next.pem"
)

// renewalJitter is the largest share of a certificate's lifetime by which renewal is
// brought forward at random, so that nodes paired together do not renew together.
const renewalJitter = 0.10

// RenewalTime returns when a certificate is due for renewal: when a third of its
// lifetime remains, brought forward by jitter (a share of the lifetime, at most 10 %).
func RenewalTime(c *x509.Certificate, jitter float64) time.Time {
	life := c.NotAfter.Sub(c.NotBefore)
	jitter = min(max(jitter, 0), renewalJitter)
	return c.NotAfter.Add(-life/3 - time.Duration(jitter*float64(life)))
}

// renewLoop renews the certificate when it is due, retrying with backoff, until ctx
// ends. It runs in its own goroutine. It looks at the clock at least every
// tune.renewCheck, so that a machine that slept does not oversleep the renewal.
func (a *Agent) renewLoop(ctx context.Context) {
	b := &retry.Backoff{Initial: a.tune.attach.Initial, Max: a.tune.renewBackoffMax, Rand: a.rand}
	var (
		leaf *x509.Certificate
		due  time.Time
	)
	for ctx.Err() == nil {
		if cur := a.leaf(); cur != leaf {
			leaf = cur
			due = RenewalTime(leaf, renewalJitter*a.randFraction())
			now := a.now()
			if now.After(leaf.NotAfter) {
				a.log.Error("the node's certificate has expired: palyrad will refuse it. Pair again: palyra node pair --force --state-dir "+
					a.dir.Path(), "expired_at", leaf.NotAfter)
			} else {
				a.log.Info("certificate", "valid_until", leaf.NotAfter.UTC(), "remaining", leaf.NotAfter.Sub(now).Round(time.Second),
					"renewal_at", due.UTC())
			}
		}
		if wait := due.Sub(a.now()); wait > 0 {
			select {
			case <-ctx.Done():
				return
			case <-a.tune.after(min(wait, a.tune.renewCheck)):
			}
			continue
		}
		err := a.renew(ctx)
		switch {
		case err == nil:
			b.Reset()
			continue
		case ctx.Err() != nil:
			return
		}
		wait := b.Next()
		attrs := []any{"code", connect.CodeOf(err).String(), "err", err, "remaining", leaf.NotAfter.Sub(a.now()).Round(time.Second),
			"retry_in", wait.Round(time.Millisecond)}
		if certificateRefused(err) {
			a.log.Error("palyrad refused to renew this node's certificate. If the node was revoked, it must pair again: "+
				"palyra node pair --force --state-dir "+a.dir.Path(), attrs...)
		} else {
			a.log.Warn("cannot renew the certificate", attrs...)
		}
		select {
		case <-ctx.Done():
			return
		case <-a.tune.after(wait):
		}
	}
}

// renew renews the certificate: a new key (that of the renewal in progress, if any) and
// CSR, RenewCertificate over mutual TLS with the current certificate, checks of what
// comes back, the key and certificate stored, and the new certificate used for new
// connections.
func (a *Agent) renew(ctx context.Context) error {
	key, err := a.dir.renewalKey()
	if err != nil {
		return err
	}
	name := a.host.DeviceName
	if name == "" {
		name = a.host.DeviceID
	}
	csr, err := NewCSR(key, name)
	if err != nil {
		return err
	}
	nodes, closeIdle, err := a.newNodeClient()
	if err != nil {
		return err
	}
	defer closeIdle()
	cctx, cancel := context.WithTimeout(ctx, a.tune.callTimeout)
	defer cancel()
	a.log.Info("renewing the certificate", "remaining", a.leaf().NotAfter.Sub(a.now()).Round(time.Second))
	res, err := nodes.RenewCertificate(cctx, connect.NewRequest(&nodev1.RenewCertificateRequest{DeviceId: a.host.DeviceID, Csr: csr}))
	if err != nil {
		return client.Explain(err, a.host.URL)
	}
	issued, err := CheckIssued(res.Msg.GetCertificatePem(), res.Msg.GetCaCertificatePem(), key, a.ca, a.host.DeviceID)
	if err != nil {
		return fmt.Errorf("palyrad renewed the certificate but the new one is unusable: %w", err)
	}
	if err := a.dir.swapCertificate(key, issued.Certificate); err != nil {
		return err
	}
	h := *a.host
	if err := a.recordCertificate(&h, key, issued.Certificate); err != nil {
		// The files are right; load repairs the record at the next start.
		a.log.Error("cannot update the host record after renewal", "err", err)
	}
	a.useCertificate(key, issued.Certificate)
	a.log.Info("certificate renewed", "valid_until", issued.Certificate.NotAfter.UTC(),
		"fingerprint", client.Fingerprint(issued.Certificate))
	return nil
}

// recordCertificate writes the certificate's fingerprint and expiry, and the key's
// fingerprint, to node-host.json.
func (a *Agent) recordCertificate(h *Host, key *ecdsa.PrivateKey, cert *x509.Certificate) error {
	fp, err := KeyFingerprint(key.Public())
	if err != nil {
		return err
	}
	h.KeyFingerprint = fp
	h.CertificateFingerprint = client.Fingerprint(cert)
	h.CertificateExpireTime = cert.NotAfter.UTC()
	return a.dir.SaveHost(h)
}

// renewalKey returns the key of the renewal in progress (key.next.pem), or a new one,
// stored there first: the certificate palyrad issues for it may be lost on the way, and
// only a retry for the same key is renewed from the then superseded certificate.
func (s *StateDir) renewalKey() (*ecdsa.PrivateKey, error) {
	b, ok, err := s.readPrivate(keyNextFile)
	if err != nil {
		return nil, err
	}
	if ok {
		if key, err := ParseKeyPEM(b); err == nil {
			return key, nil
		}
	}
	key, err := GenerateKey()
	if err != nil {
		return nil, err
	}
	kb, err := MarshalKeyPEM(key)
	if err != nil {
		return nil, err
	}
	if err := s.write(keyNextFile, kb, 0o600); err != nil {
		return nil, err
	}
	return key, nil
}

// swapCertificate replaces the key and the certificate so that a crash at any point
// leaves a matching pair (recoverCertificateSwap completes or undoes an interrupted
// swap): the new key and certificate are written under new names, then renamed over
// the old ones, the key first.
func (s *StateDir) swapCertificate(key *ecdsa.PrivateKey, cert *x509.Certificate) error {
	kb, err := MarshalKeyPEM(key)
	if err != nil {
		return err
	}
	if err := s.write(keyNextFile, kb, 0o600); err != nil {
		return err
	}
	if err := s.write(certNextFile, certificatePEM(cert), 0o644); err != nil {
		return err
	}
	if err := os.Rename(s.File(keyNextFile), s.File(KeyFile)); err != nil {
		return fmt.Errorf("install the new key: %w", err)
	}
	if err := os.Rename(s.File(certNextFile), s.File(CertFile)); err != nil {
		return fmt.Errorf("install the new certificate: %w", err)
	}
	s.syncDir()
	return nil
}

// recoverCertificateSwap finishes or undoes a swapCertificate that a crash
// interrupted: a new key and certificate that match replace the old pair; a new
// certificate left after the key was renamed is renamed too; a new key without its
// certificate stays for the next renewal to ask for again (renewalKey).
func (s *StateDir) recoverCertificateSwap() error {
	keyNext, err := s.exists(keyNextFile)
	if err != nil {
		return err
	}
	certNext, err := s.exists(certNextFile)
	if err != nil {
		return err
	}
	switch {
	case keyNext && certNext:
		if ok, err := s.matches(keyNextFile, certNextFile); err != nil || !ok {
			return errors.Join(err, s.remove(keyNextFile), s.remove(certNextFile))
		}
		if err := os.Rename(s.File(keyNextFile), s.File(KeyFile)); err != nil {
			return err
		}
		fallthrough
	case certNext:
		if ok, err := s.matches(KeyFile, certNextFile); err != nil || !ok {
			return errors.Join(err, s.remove(certNextFile))
		}
		if err := os.Rename(s.File(certNextFile), s.File(CertFile)); err != nil {
			return err
		}
	case keyNext:
		return nil
	}
	s.syncDir()
	return nil
}

// matches reports whether the certificate in certName certifies the key in keyName.
func (s *StateDir) matches(keyName, certName string) (bool, error) {
	b, ok, err := s.readPrivate(keyName)
	if err != nil || !ok {
		return false, err
	}
	key, err := ParseKeyPEM(b)
	if err != nil {
		return false, nil
	}
	cert, err := s.readCertificate(certName)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return false, err
		}
		return false, nil
	}
	return certifies(cert, key), nil
}

// syncDir makes renames in the directory durable where the system allows it.
func (s *StateDir) syncDir() {
	d, err := os.Open(s.path)
	if err != nil {
		return
	}
	_ = d.Sync()
	d.Close()
}
