package apiserver

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"

	"github.com/palyra/palyra/server/internal/store"
)

// healthCacheFor is how long a database ping answers health checks, so that frequent
// probes do not each cost a database round trip.
const healthCacheFor = time.Second

// Pinger is the database as health checks see it.
type Pinger interface {
	Ping(ctx context.Context) (store.Health, error)
}

// Health answers gRPC health checks for the whole server ("") and for each Palyra
// service: SERVING while the database answers and the server is not shutting down,
// NOT_SERVING otherwise, so that load balancers stop sending work to a replica that
// cannot do it.
type Health struct {
	db       Pinger
	stopping atomic.Bool

	mu        sync.Mutex // guards checkedAt and healthy
	checkedAt time.Time
	healthy   bool
}

var _ grpchealth.Checker = (*Health)(nil)

// NewHealth returns a checker over the database.
func NewHealth(db Pinger) *Health { return &Health{db: db} }

// SetShuttingDown makes every check answer NOT_SERVING from now on.
func (h *Health) SetShuttingDown() { h.stopping.Store(true) }

// Check implements grpchealth.Checker.
func (h *Health) Check(ctx context.Context, req *grpchealth.CheckRequest) (*grpchealth.CheckResponse, error) {
	if req.Service != "" && !slices.Contains(serviceNames, req.Service) {
		return nil, connect.NewError(connect.CodeNotFound, nil)
	}
	if h.stopping.Load() || !h.databaseHealthy(ctx) {
		return &grpchealth.CheckResponse{Status: grpchealth.StatusNotServing}, nil
	}
	return &grpchealth.CheckResponse{Status: grpchealth.StatusServing}, nil
}

func (h *Health) databaseHealthy(ctx context.Context) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if time.Since(h.checkedAt) < healthCacheFor {
		return h.healthy
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	_, err := h.db.Ping(ctx)
	h.checkedAt, h.healthy = time.Now(), err == nil
	return h.healthy
}
