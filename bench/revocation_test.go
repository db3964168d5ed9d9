package bench

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	"github.com/palyra/palyra/gen/go/palyra/controlplane/v1/controlplanev1connect"
)

// revokeTimeout is how long a revoked node's stream may stay open before the run fails.
const revokeTimeout = 10 * time.Second

// BenchmarkRevocation measures how soon a revocation bites an attached node: two
// palyrad replicas (A and B) share one database, the second with a copy of the first's
// master key; b.N + 1 nodes pair (through the replica they will attach to, so that the
// per-address start limit is that replica's) and attach with their device
// certificates over real mutual-TLS Attach streams, all before the clock starts. Then,
// one device at a time, RevokeDevice is called through replica A with an admin token,
// and the time runs from just before the call to the node's Receive returning (the
// replica holding its connection closed it).
//
//	node=other-replica  the nodes are attached to B: the revocation reaches B through
//	                    PostgreSQL's NOTIFY on palyra_revocations
//	node=same-replica   the nodes are attached to A, the replica that revoked
//
// The first node is revoked before the clock starts (warm-up). Besides closedLoop's
// figures (p50-µs and p99-µs are call to stream end; palyrad-cpu-µs/op is A's) it
// reports:
//
//	rpc-p50-µs, rpc-p99-µs       RevokeDevice's own round trip, as the caller sees it
//	holder-cpu-µs/op             CPU time of the replica holding the nodes (B, or A)
//
// Every revocation makes every replica reload its whole revocation list, so later
// runs revoke against a longer list than earlier ones. Run it with -benchtime Nx: b.N is
// the number of revocations measured.
func BenchmarkRevocation(b *testing.B) {
	pg := openPostgres(b)
	dbURL, dirA := pg.newDatabase(b), b.TempDir()
	a := startDaemon(b, dbURL, dirA)
	replicaB := startReplica(b, dbURL, dirA)
	setup := a.newToken(b, "bench-setup")
	for _, holder := range []struct {
		name string
		d    *daemon
	}{{"other-replica", replicaB}, {"same-replica", a}} {
		b.Run("node="+holder.name, func(b *testing.B) {
			benchRevocation(b, a, holder.d, pg, setup)
		})
	}
}

// benchRevocation runs one sub-benchmark of BenchmarkRevocation: revocations through
// caller of nodes attached to holder.
func benchRevocation(b *testing.B, caller, holder *daemon, pg *postgres, setup string) {
	devs := enroll(b, holder, setup, b.N+1)
	nodes := make([]*node, len(devs))
	// Each node from an address of its own, as from hosts of their own: palyrad caps
	// the connections of one address (server.max_connections_per_address).
	err := forEach(len(devs), 16, func(i int) error {
		n, err := attach(holder, &devs[i], loopback(6, i), false)
		if err != nil {
			return fmt.Errorf("attach node %d: %w", i, err)
		}
		nodes[i] = n
		return nil
	})
	defer func() {
		for _, n := range nodes {
			if n != nil {
				n.close()
			}
		}
	}()
	if err != nil {
		b.Fatal(err)
	}
	holder.waitAttached(b, len(devs))
	hc := caller.apiClient(caller.newToken(b, "bench-revocation"))
	defer hc.CloseIdleConnections()
	dc := controlplanev1connect.NewDeviceServiceClient(hc, caller.baseURL)
	ctx := context.Background()
	rpc := make([]time.Duration, len(devs))
	revoke := func(ctx context.Context, i int) error {
		if err := nodes[i].failed(); err != nil {
			return fmt.Errorf("node %d ended before its revocation: %w", i, err)
		}
		began := time.Now()
		if _, err := dc.RevokeDevice(ctx, connect.NewRequest(&controlplanev1.RevokeDeviceRequest{
			Id: devs[i].id, Reason: "bench",
		})); err != nil {
			return fmt.Errorf("revoke device %d: %w", i, err)
		}
		rpc[i] = time.Since(began)
		select {
		case <-nodes[i].done:
		case <-time.After(revokeTimeout):
			return fmt.Errorf("node %d still attached %v after its revocation", i, revokeTimeout)
		}
		// The stream must have been cut, not ended cleanly.
		if nodes[i].err == nil || errors.Is(nodes[i].err, context.Canceled) {
			return fmt.Errorf("node %d: the stream ended without an error (%v)", i, nodes[i].err)
		}
		return nil
	}
	if err := revoke(ctx, len(devs)-1); err != nil {
		b.Fatalf("warm-up: %v", err)
	}
	pg.checkpoint(b)
	var next atomic.Int64
	held0, _ := cpuTime(holder.pid())
	closedLoop(b, 1, meter{palyrad: caller.pid(), pprof: caller.pprof, pg: pg}, "revocations/s", func(ctx context.Context) error {
		return revoke(ctx, int(next.Add(1)-1))
	})
	held1, _ := cpuTime(holder.pid())
	var h histogram
	for _, l := range rpc[:b.N] {
		h.record(l)
	}
	b.ReportMetric(micros(h.quantile(0.50)), "rpc-p50-µs")
	b.ReportMetric(micros(h.quantile(0.99)), "rpc-p99-µs")
	b.ReportMetric(micros(held1-held0)/float64(b.N), "holder-cpu-µs/op")
}
