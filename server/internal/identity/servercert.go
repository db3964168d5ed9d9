package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"sync"
	"time"

	"github.com/palyra/palyra/internal/retry"
	"github.com/palyra/palyra/server/internal/store"
)

// ServerCertificateOptions configures NewServerCertificate.
type ServerCertificateOptions struct {
	// Authority signs the certificate.
	Authority *Authority
	// Store records every issued certificate.
	Store *store.Store
	// ReplicaID is recorded as the issuer of each certificate.
	ReplicaID string
	// DNSNames and IPs are the subject alternative names.
	DNSNames []string
	IPs      []net.IP
	// Lifetime is the validity of each certificate; renewal happens at one third of it
	// remaining. Time is the Authority's clock.
	Lifetime time.Duration
	// Logger receives issuance messages; nil discards them.
	Logger *slog.Logger
}

// ServerCertificate is the daemon's TLS server certificate. Its key is generated in
// memory by each replica and never stored; the certificate is recorded in the database
// and renewed by Run before it expires, without restarting the listener
// (GetCertificate always returns the current one).
type ServerCertificate struct {
	opts ServerCertificateOptions
	log  *slog.Logger

	mu      sync.RWMutex // guards current
	current *tls.Certificate
}

// NewServerCertificate issues the first certificate.
func NewServerCertificate(ctx context.Context, opts ServerCertificateOptions) (*ServerCertificate, error) {
	s := &ServerCertificate{opts: opts, log: opts.Logger}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if err := s.renew(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// GetCertificate is the tls.Config callback: it returns the current certificate and
// chain (leaf, then the root so that clients pinning the CA fingerprint can check it).
func (s *ServerCertificate) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.current, nil
}

// Leaf returns the current certificate.
func (s *ServerCertificate) Leaf() *x509.Certificate {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.current.Leaf
}

// Run renews the certificate at one third of its lifetime remaining (with jitter, so
// that replicas started together do not renew together) until ctx is done. A failed
// renewal is retried with backoff (retry.Backoff, from 1 s up to five minutes) and
// logged as an error each time, also after the current certificate has expired. Run is
// meant to have its own goroutine.
func (s *ServerCertificate) Run(ctx context.Context) {
	b := &retry.Backoff{Initial: time.Second, Max: 5 * time.Minute}
	wait := s.untilRenewal()
	for {
		if retry.Sleep(ctx, wait) != nil {
			return
		}
		if err := s.renew(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			wait = b.Next()
			s.log.Error("server certificate renewal failed; retrying", "err", err, "retry_in", wait,
				"current_not_after", s.Leaf().NotAfter)
			continue
		}
		b.Reset()
		wait = s.untilRenewal()
	}
}

// untilRenewal is the time left until the current certificate should be renewed:
// two thirds into its life, minus up to a twentieth of its life at random.
func (s *ServerCertificate) untilRenewal() time.Duration {
	leaf := s.Leaf()
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	jitter := time.Duration(0)
	if n := int64(life / 20); n > 0 {
		j, _ := rand.Int(rand.Reader, big.NewInt(n))
		jitter = time.Duration(j.Int64())
	}
	at := leaf.NotAfter.Add(-life/3 - jitter)
	return max(at.Sub(s.opts.Authority.now()), 0)
}

// renew issues, records and installs a new certificate.
func (s *ServerCertificate) renew(ctx context.Context) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("identity: server key: %w", err)
	}
	issued, err := s.opts.Authority.Sign(&key.PublicKey,
		ServerIdentity(s.opts.DNSNames, s.opts.IPs),
		Lifetime(s.opts.Lifetime))
	if err != nil {
		return fmt.Errorf("identity: issue server certificate: %w", err)
	}
	if err := Record(ctx, s.opts.Store, s.opts.Authority, issued, KindServer, "", s.opts.ReplicaID); err != nil {
		return err
	}
	c := issued.Certificate
	cert := &tls.Certificate{
		Certificate: [][]byte{c.Raw, s.opts.Authority.Certificate().Raw},
		PrivateKey:  key,
		Leaf:        c,
	}
	s.mu.Lock()
	s.current = cert
	s.mu.Unlock()
	s.log.Info("server certificate issued", "fingerprint", issued.Fingerprint, "serial", issued.Serial,
		"not_after", c.NotAfter, "dns_names", c.DNSNames, "ips", c.IPAddresses)
	return nil
}
