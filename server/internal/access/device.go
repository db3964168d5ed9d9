package access

import (
	"context"
	"crypto/x509"
)

// DeviceHeader names the device of a node call when require_mtls is off (development
// only: the header proves nothing).
const DeviceHeader = "X-Palyra-Device-Id"

// Device is a device calling a node RPC.
type Device struct {
	// ID is the device id.
	ID string
	// Verified is true when the device proved its identity with a certificate, false
	// when require_mtls is off and it only named itself.
	Verified bool
}

// principal names the device in the audit log.
func (d *Device) principal() string { return "device:" + d.ID }

// DeviceChecker checks device certificates and ids against the revocations
// (revocation.List).
type DeviceChecker interface {
	// Check returns the device id of a client certificate, or refuses it.
	Check(c *x509.Certificate) (string, error)
	// CheckDevice refuses a revoked device.
	CheckDevice(id string) error
}

type deviceKey struct{}

// WithDevice returns ctx carrying the calling device.
func WithDevice(ctx context.Context, d *Device) context.Context {
	return context.WithValue(ctx, deviceKey{}, d)
}

// DeviceFrom returns the calling device of a node RPC.
func DeviceFrom(ctx context.Context) (*Device, bool) {
	d, ok := ctx.Value(deviceKey{}).(*Device)
	return d, ok
}
