// Package devices manages the identity of paired devices after pairing: their
// certificates, renewal (NodeService.RenewCertificate), rotation and revocation
// (DeviceService). Revocations are enforced by the revocation package, which every
// replica keeps current through PostgreSQL notifications. Pairing registers and
// re-pairs devices with Insert, Repair, Lock and RevokeCertificates, in the transaction
// that approves its request.
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

// Device is a paired device as DeviceService describes it, with its certificates.
type Device struct {
	ID, Name, Platform, AgentVersion string
	// Labels are the labels the approver gave it.
	Labels map[string]string
	// CreatedAt is when it was first paired.
	CreatedAt time.Time
	// RevokedAt is when it was revoked, nil unless it is; RevokedReason says why.
	RevokedAt     *time.Time
	RevokedReason string
	// RotateRequestedAt is when a rotation was last asked for; nil when none was.
	RotateRequestedAt *time.Time
	// PublicKeyFingerprint is the fingerprint of its current key: that of its newest
	// certificate.
	PublicKeyFingerprint string
	// Certificates are its certificates, newest first (nil from Lookup).
	Certificates []Certificate
}

// Certificate is a certificate issued to a device.
type Certificate struct {
	Fingerprint, Serial string
	// DeviceID is the device it was issued to; "" for a certificate of no device.
	DeviceID            string
	NotBefore, NotAfter time.Time
	// RevokedAt is when it is (or will be) revoked, nil unless it is; RevokedReason says
	// why.
	RevokedAt     *time.Time
	RevokedReason string
}

// Get returns a device.
func (s *Service) Get(ctx context.Context, id string) (*Device, error) {
	return s.get(ctx, s.opts.Store.Q(), id)
}

func (s *Service) get(ctx context.Context, q *dbsqlc.Queries, id string) (*Device, error) {
	d, err := deviceOf(q.GetDevice(ctx, id))
	if err != nil {
		return nil, fmt.Errorf("devices: device %s: %w", id, err)
	}
	certs, err := q.ListDeviceCertificates(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("devices: certificates of %s: %w", id, err)
	}
	d.Certificates = make([]Certificate, len(certs))
	for i, c := range certs {
		d.Certificates[i] = certificateOf(c)
	}
	return d, nil
}

// deviceOf returns the Device of a row (without its certificates), or err.
func deviceOf(row dbsqlc.Device, err error) (*Device, error) {
	if err != nil {
		return nil, err
	}
	d := &Device{
		ID: row.ID, Name: row.Name, Platform: row.Platform, AgentVersion: row.AgentVersion,
		Labels: map[string]string{}, CreatedAt: row.CreatedAt, RevokedAt: row.RevokedAt,
		RevokedReason: row.RevokedReason, RotateRequestedAt: row.RotateRequestedAt,
		PublicKeyFingerprint: row.PublicKeyFingerprint,
	}
	if err := json.Unmarshal(row.Labels, &d.Labels); err != nil {
		return nil, fmt.Errorf("labels: %w", err)
	}
	return d, nil
}

// certificateOf returns the Certificate of a row.
func certificateOf(c dbsqlc.IssuedCertificate) Certificate {
	out := Certificate{
		Fingerprint: c.Fingerprint, Serial: c.Serial, NotBefore: c.NotBefore, NotAfter: c.NotAfter,
		RevokedAt: c.RevokedAt, RevokedReason: c.RevokedReason,
	}
	if c.DeviceID != nil {
		out.DeviceID = *c.DeviceID
	}
	return out
}

// Revoke revokes a device and all its certificates, in one transaction; every replica
// learns it through the notification its trigger sends on commit.
func (s *Service) Revoke(ctx context.Context, id, reason string) (*Device, error) {
	var d *Device
	err := s.opts.Store.InTx(ctx, func(tx *store.Tx) error {
		q := tx.Q()
		now := s.opts.Now()
		if _, err := q.RevokeDevice(ctx, dbsqlc.RevokeDeviceParams{ID: id, Now: now, Reason: reason}); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				if _, gerr := q.GetDevice(ctx, id); gerr == nil {
					return fmt.Errorf("devices: revoke %s: %w", id, ErrAlreadyRevoked)
				}
			}
			return fmt.Errorf("devices: revoke %s: %w", id, err)
		}
		if _, err := RevokeCertificates(ctx, tx, id, "", "device revoked: "+reason, now, now); err != nil {
			return err
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
func (s *Service) RevokeCertificate(ctx context.Context, fingerprint, reason string) (*Certificate, error) {
	now := s.opts.Now()
	c, err := s.opts.Store.Q().RevokeCertificate(ctx, dbsqlc.RevokeCertificateParams{Fingerprint: fingerprint, Now: now, Reason: reason})
	if errors.Is(err, store.ErrNotFound) {
		if owner, gerr := s.opts.Authority.DeviceOf(ctx, fingerprint); gerr == nil && owner != "" {
			return nil, fmt.Errorf("devices: revoke certificate %s: %w", fingerprint, ErrAlreadyRevoked)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("devices: revoke certificate %s: %w", fingerprint, err)
	}
	s.log.Info("device certificate revoked", "fingerprint", fingerprint, "reason", reason)
	cert := certificateOf(c)
	return &cert, nil
}

// Revocations is what is revoked in the whole deployment, as the revocation list
// enforces it.
type Revocations struct {
	// Certificates maps the fingerprint of every device certificate revoked now or later
	// that has not expired yet to when it is revoked.
	Certificates map[string]time.Time
	// Devices are the ids of the revoked devices.
	Devices []string
}

// ListRevocations reads the revocations in force at now (package revocation's source;
// a free function, since the revocation list is loaded before the service can be
// made).
func ListRevocations(ctx context.Context, db *store.Store, now time.Time) (Revocations, error) {
	certs, err := db.Q().ListRevokedCertificates(ctx, now)
	if err != nil {
		return Revocations{}, fmt.Errorf("devices: revoked certificates: %w", err)
	}
	ids, err := db.Q().ListRevokedDevices(ctx)
	if err != nil {
		return Revocations{}, fmt.Errorf("devices: revoked devices: %w", err)
	}
	r := Revocations{Certificates: make(map[string]time.Time, len(certs)), Devices: ids}
	for _, c := range certs {
		if c.RevokedAt != nil {
			r.Certificates[c.Fingerprint] = *c.RevokedAt
		}
	}
	return r, nil
}

// Rotate asks a device to rotate: its current certificates are revoked after grace,
// so it must renew (with a new key) before then.
func (s *Service) Rotate(ctx context.Context, id string, grace time.Duration) (*Device, error) {
	var d *Device
	err := s.opts.Store.InTx(ctx, func(tx *store.Tx) error {
		q := tx.Q()
		now := s.opts.Now()
		if _, err := q.RequestDeviceRotation(ctx, dbsqlc.RequestDeviceRotationParams{ID: id, Now: now}); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				if _, gerr := q.GetDevice(ctx, id); gerr == nil {
					return fmt.Errorf("devices: rotate %s: %w", id, ErrRevoked)
				}
			}
			return fmt.Errorf("devices: rotate %s: %w", id, err)
		}
		if _, err := RevokeCertificates(ctx, tx, id, "", "rotated", now.Add(grace), now); err != nil {
			return err
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
	err = s.opts.Store.InTx(ctx, func(tx *store.Tx) error {
		q := tx.Q()
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
		if err := identity.Record(ctx, tx, s.opts.Authority, issued, identity.KindDevice, id, s.opts.ReplicaID); err != nil {
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

// Registration is what pairing pairs a device again with.
type Registration struct {
	Name, Platform, AgentVersion string
	// Labels are the labels the approver gave it; nil for none.
	Labels map[string]string
	// PublicKeyFingerprint is the fingerprint of the key pairing certifies.
	PublicKeyFingerprint string
}

// labelsJSON returns the labels as stored.
func (r Registration) labelsJSON() ([]byte, error) {
	if r.Labels == nil {
		return []byte("{}"), nil
	}
	return json.Marshal(r.Labels)
}

// Repair pairs device id again in tx: a new name, platform, key and labels, and no
// rotation requested; reinstate lifts its revocation (an approver's explicit decision).
func Repair(ctx context.Context, tx *store.Tx, id string, r Registration, reinstate bool, now time.Time) (*Device, error) {
	labels, err := r.labelsJSON()
	if err != nil {
		return nil, fmt.Errorf("devices: re-pair %s: %w", id, err)
	}
	d, err := deviceOf(tx.Q().RepairDevice(ctx, dbsqlc.RepairDeviceParams{
		ID: id, Name: r.Name, Platform: r.Platform, AgentVersion: r.AgentVersion,
		Labels: labels, PublicKeyFingerprint: r.PublicKeyFingerprint, Now: now, Reinstate: reinstate,
	}))
	if err != nil {
		return nil, fmt.Errorf("devices: re-pair %s: %w", id, err)
	}
	return d, nil
}

// Lock locks device id until tx ends; an error matching store.ErrNotFound when there is
// no such device.
func Lock(ctx context.Context, tx *store.Tx, id string) error {
	if _, err := tx.Q().GetDeviceForUpdate(ctx, id); err != nil {
		return fmt.Errorf("devices: lock %s: %w", id, err)
	}
	return nil
}

// Lookup returns device id without its certificates, read through db; an error matching
// store.ErrNotFound when there is no such device.
func Lookup(ctx context.Context, db store.Queryer, id string) (*Device, error) {
	d, err := deviceOf(db.Q().GetDevice(ctx, id))
	if err != nil {
		return nil, fmt.Errorf("devices: device %s: %w", id, err)
	}
	return d, nil
}

// RevokeCertificates revokes, in tx, every certificate of device id that has not
// expired at now and is not revoked by at already, except the one with fingerprint keep
// ("" for none), at at (possibly later than now) for reason. It returns how many it
// revoked.
func RevokeCertificates(ctx context.Context, tx *store.Tx, id, keep, reason string, at, now time.Time) (int64, error) {
	n, err := tx.Q().RevokeDeviceCertificates(ctx, dbsqlc.RevokeDeviceCertificatesParams{
		DeviceID: id, KeepFingerprint: keep, At: at, Now: now, Reason: reason,
	})
	if err != nil {
		return 0, fmt.Errorf("devices: revoke the certificates of %s: %w", id, err)
	}
	return n, nil
}
