// Package devices manages the identity of paired devices after pairing: their
// certificates, renewal (NodeService.RenewCertificate), rotation and revocation
// (DeviceService). Revocations are enforced by the revocation package, which every
// replica keeps current through PostgreSQL notifications.
package devices

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/palyra/palyra/gen/dbsqlc"
	"github.com/palyra/palyra/server/internal/identity"
	"github.com/palyra/palyra/server/internal/store"
)

// DefaultGrace is how long a rotated device's current certificates keep working.
const DefaultGrace = time.Hour

// ErrRevoked refuses to renew or rotate a revoked device.
var ErrRevoked = errors.New("the device is revoked")

// ErrAlreadyRevoked refuses to revoke what is revoked already.
var ErrAlreadyRevoked = errors.New("already revoked")

// ErrSuperseded refuses to renew from a certificate whose key is not the device's
// current one: it was renewed, rotated or re-paired since.
var ErrSuperseded = errors.New("the certificate was superseded")

// Options are the dependencies of the service.
type Options struct {
	Store              *store.Store
	Authority          *identity.Authority
	ReplicaID          string
	DeviceCertLifetime time.Duration
	// Now is the clock; nil means time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// Service manages device identities.
type Service struct {
	opts Options
	log  *slog.Logger
}

// New returns the service.
func New(opts Options) *Service {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Service{opts: opts, log: log}
}

// Device is a device with its certificates, newest first.
type Device struct {
	dbsqlc.Device
	Labels       map[string]string
	Certificates []dbsqlc.IssuedCertificate
}

// Get returns a device.
func (s *Service) Get(ctx context.Context, id string) (*Device, error) {
	return s.get(ctx, s.opts.Store.Q(), id)
}

func (s *Service) get(ctx context.Context, q *dbsqlc.Queries, id string) (*Device, error) {
	row, err := q.GetDevice(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("devices: device %s: %w", id, err)
	}
	certs, err := q.ListDeviceCertificates(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("devices: certificates of %s: %w", id, err)
	}
	d := &Device{Device: row, Certificates: certs, Labels: map[string]string{}}
	if err := json.Unmarshal(row.Labels, &d.Labels); err != nil {
		return nil, fmt.Errorf("devices: labels of %s: %w", id, err)
	}
	return d, nil
}

// Revoke revokes a device and all its certificates, in one transaction; every replica
// learns it through the notification its trigger sends on commit.
func (s *Service) Revoke(ctx context.Context, id, reason string) (*Device, error) {
	var d *Device
	err := s.opts.Store.InTx(ctx, func(q *dbsqlc.Queries) error {
		now := s.opts.Now()
		if _, err := q.RevokeDevice(ctx, dbsqlc.RevokeDeviceParams{ID: id, Now: now, Reason: reason}); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				if _, gerr := q.GetDevice(ctx, id); gerr == nil {
					return fmt.Errorf("devices: revoke %s: %w", id, ErrAlreadyRevoked)
				}
			}
			return fmt.Errorf("devices: revoke %s: %w", id, err)
		}
		if _, err := q.RevokeDeviceCertificates(ctx, dbsqlc.RevokeDeviceCertificatesParams{
			DeviceID: id, At: now, Now: now, Reason: "device revoked: " + reason,
		}); err != nil {
			return fmt.Errorf("devices: revoke the certificates of %s: %w", id, err)
		}
		var err error
		d, err = s.get(ctx, q, id)
		return err
	})
	if err == nil {
		s.log.Info("device revoked", "device_id", id, "reason", reason)
	}
	return d, err
}

// RevokeCertificate revokes one device certificate.
func (s *Service) RevokeCertificate(ctx context.Context, fingerprint, reason string) (*dbsqlc.IssuedCertificate, error) {
	now := s.opts.Now()
	c, err := s.opts.Store.Q().RevokeCertificate(ctx, dbsqlc.RevokeCertificateParams{Fingerprint: fingerprint, Now: now, Reason: reason})
	if errors.Is(err, store.ErrNotFound) {
		if cur, gerr := s.opts.Store.Q().GetIssuedCertificate(ctx, fingerprint); gerr == nil && cur.Kind == identity.KindDevice {
			return nil, fmt.Errorf("devices: revoke certificate %s: %w", fingerprint, ErrAlreadyRevoked)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("devices: revoke certificate %s: %w", fingerprint, err)
	}
	s.log.Info("device certificate revoked", "fingerprint", fingerprint, "reason", reason)
	return &c, nil
}

// Rotate asks a device to rotate: its current certificates are revoked after grace,
// so it must renew (with a new key) before then.
func (s *Service) Rotate(ctx context.Context, id string, grace time.Duration) (*Device, error) {
	var d *Device
	err := s.opts.Store.InTx(ctx, func(q *dbsqlc.Queries) error {
		now := s.opts.Now()
		if _, err := q.RequestDeviceRotation(ctx, dbsqlc.RequestDeviceRotationParams{ID: id, Now: now}); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				if _, gerr := q.GetDevice(ctx, id); gerr == nil {
					return fmt.Errorf("devices: rotate %s: %w", id, ErrRevoked)
				}
			}
			return fmt.Errorf("devices: rotate %s: %w", id, err)
		}
		at := now.Add(grace)
		if _, err := q.RevokeDeviceCertificates(ctx, dbsqlc.RevokeDeviceCertificatesParams{
			DeviceID: id, At: at, Now: now, Reason: "rotated",
		}); err != nil {
			return fmt.Errorf("devices: rotate %s: %w", id, err)
		}
		var err error
		d, err = s.get(ctx, q, id)
		return err
	})
	if err == nil {
		s.log.Info("device rotation requested", "device_id", id, "grace", grace)
	}
	return d, err
}

// Renew issues a new certificate to a device that is not revoked, from a new CSR, for
// a caller that presented a certificate for the public key with fingerprint callerKey.
// Only a holder of the device's current key (that of its newest certificate) renews, so
// that a rotated or superseded certificate cannot outlive its replacement: the caller's
// certificate is for that key, or the CSR is (a node retrying a renewal whose answer it
// lost; only the device can sign it).
func (s *Service) Renew(ctx context.Context, id, callerKey string, csrDER []byte) (*identity.Issued, error) {
	csr, keyFingerprint, err := identity.ParseCSR(csrDER)
	if err != nil {
		return nil, err
	}
	var issued *identity.Issued
	err = s.opts.Store.InTx(ctx, func(q *dbsqlc.Queries) error {
		// The device's row lock orders its renewals: its current key holds until commit.
		dev, err := q.GetDeviceForUpdate(ctx, id)
		if err != nil {
			return fmt.Errorf("devices: renew %s: %w", id, err)
		}
		if dev.RevokedAt != nil {
			return fmt.Errorf("devices: renew %s: %w", id, ErrRevoked)
		}
		if callerKey != dev.PublicKeyFingerprint && keyFingerprint != dev.PublicKeyFingerprint {
			s.log.Warn("renewal refused: the caller's certificate was superseded", "device_id", id, "key_fingerprint", callerKey)
			return fmt.Errorf("devices: renew %s: %w", id, ErrSuperseded)
		}
		issued, err = s.opts.Authority.Sign(csr.PublicKey, identity.DeviceIdentity(id), identity.Lifetime(s.opts.DeviceCertLifetime))
		if err != nil {
			return err
		}
		if err := identity.Record(ctx, q, s.opts.Authority, issued, identity.KindDevice, id, s.opts.ReplicaID); err != nil {
			return err
		}
		_, err = q.RenewDevice(ctx, dbsqlc.RenewDeviceParams{ID: id, PublicKeyFingerprint: keyFingerprint, Now: s.opts.Now()})
		return err
	})
	if err != nil {
		return nil, err
	}
	s.log.Info("device certificate renewed", "device_id", id, "fingerprint", issued.Fingerprint, "not_after", issued.Certificate.NotAfter)
	return issued, nil
}
