// Package status serves StatusService.GetStatus: what a palyrad replica is and how
// it is doing.
package status

import (
	"context"
	"crypto/x509"
	"errors"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	"github.com/palyra/palyra/gen/go/palyra/controlplane/v1/controlplanev1connect"
	"github.com/palyra/palyra/server/internal/identity"
	"github.com/palyra/palyra/server/internal/store"
)

// pingTimeout bounds the database checks of one GetStatus call, so that a hung database
// makes the status say so instead of hanging the call.
const pingTimeout = 2 * time.Second

// Database is what the status asks of the database.
type Database interface {
	Ping(ctx context.Context) (store.Health, error)
	SchemaVersion(ctx context.Context) (int64, error)
}

// Options are the dependencies of the handler.
type Options struct {
	Version   string
	ReplicaID string
	Hostname  string
	// ListenAddress is the address the listener is bound to.
	ListenAddress string
	StartedAt     time.Time
	// Now is the clock; nil means time.Now.
	Now              func() time.Time
	Database         Database
	EmbeddedDatabase bool
	Authority        *identity.Authority
	// ServerCertificate returns the certificate currently served.
	ServerCertificate func() *x509.Certificate
}

// Handler serves StatusService.
type Handler struct {
	opts Options
}

var _ controlplanev1connect.StatusServiceHandler = (*Handler)(nil)

// NewHandler returns the StatusService handler.
func NewHandler(opts Options) *Handler {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Handler{opts: opts}
}

// GetStatus reports on this replica. A database failure is part of the answer, not an
// error of the call.
func (h *Handler) GetStatus(ctx context.Context, _ *connect.Request[controlplanev1.GetStatusRequest]) (*connect.Response[controlplanev1.GetStatusResponse], error) {
	now := h.opts.Now()
	return connect.NewResponse(&controlplanev1.GetStatusResponse{
		Version:              h.opts.Version,
		ReplicaId:            h.opts.ReplicaID,
		Hostname:             h.opts.Hostname,
		ListenAddress:        h.opts.ListenAddress,
		StartTime:            timestamppb.New(h.opts.StartedAt),
		Uptime:               durationpb.New(now.Sub(h.opts.StartedAt).Truncate(time.Millisecond)),
		Database:             h.database(ctx),
		CertificateAuthority: certificateInfo(h.opts.Authority.Certificate()),
		ServerCertificate:    certificateInfo(h.opts.ServerCertificate()),
	}), nil
}

func (h *Handler) database(ctx context.Context) *controlplanev1.DatabaseStatus {
	ctx, cancel := context.WithTimeout(ctx, pingTimeout)
	defer cancel()
	s := &controlplanev1.DatabaseStatus{Embedded: h.opts.EmbeddedDatabase}
	health, err := h.opts.Database.Ping(ctx)
	if err == nil {
		s.SchemaVersion, err = h.opts.Database.SchemaVersion(ctx)
	}
	if err != nil {
		s.State = controlplanev1.DatabaseState_DATABASE_STATE_UNAVAILABLE
		s.Error = describe(err)
		return s
	}
	s.State = controlplanev1.DatabaseState_DATABASE_STATE_AVAILABLE
	s.ServerVersion = health.ServerVersion
	s.PingLatency = durationpb.New(health.Latency)
	return s
}

// describe turns a database error into a message safe to show any caller.
func describe(err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "the database did not answer within " + pingTimeout.String()
	case errors.Is(err, store.ErrUnavailable):
		return "the database cannot be reached"
	default:
		return "the database query failed"
	}
}

func certificateInfo(c *x509.Certificate) *controlplanev1.CertificateInfo {
	return &controlplanev1.CertificateInfo{
		Fingerprint: identity.Fingerprint(c.Raw),
		Subject:     c.Subject.String(),
		NotBefore:   timestamppb.New(c.NotBefore),
		NotAfter:    timestamppb.New(c.NotAfter),
	}
}
