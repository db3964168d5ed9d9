package bench

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	accessv1 "github.com/palyra/palyra/gen/go/palyra/access/v1"
	"github.com/palyra/palyra/gen/go/palyra/access/v1/accessv1connect"
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
// one device at a time, RevokeDevice (or RevokeCertificate of its certificate) is
// called through replica A with an admin token, and the time runs from just before the
// call to the node's Receive returning (the replica holding its connection closed it).
// The same reload of the revocation list refuses the certificate at the handshake just
// before it closes the connections.
//
//	node=other-replica  the nodes are attached to B: the revocation reaches B through
//	                    PostgreSQL's NOTIFY on palyra_revocations
//	node=same-replica   the nodes are attached to A, the replica that revoked
//	node=other-replica,revoke=certificate
//	                    as node=other-replica, revoking the node's certificate only
//
// The first node is revoked before the clock starts (warm-up). Besides closedLoop's
// figures (p50-µs and p99-µs are call to stream end; palyrad-cpu-µs/op is A's) it
// reports:
//
//	rpc-p50-µs, rpc-p99-µs       the revoking call's own round trip, as the caller sees it
//	holder-cpu-µs/op             CPU time of the replica holding the nodes (B, or A)
//
// Every revocation makes every replica reload its whole revocation list, so later
// runs revoke against a longer list than earlier ones. Run it with -benchtime Nx: b.N is
// the number of revocations measured.
func BenchmarkRevocation(b *testing.B) {
	pg, a, replicaB := twoReplicas(b)
	setup := a.newToken(b, "bench-setup")
	for _, run := range []struct {
		name        string
		holder      *daemon
		certificate bool
	}{{"node=other-replica", replicaB, false}, {"node=same-replica", a, false}, {"node=other-replica,revoke=certificate", replicaB, true}} {
		b.Run(run.name, func(b *testing.B) {
			benchRevocation(b, a, run.holder, pg, setup, run.certificate)
		})
	}
}

// benchRevocation runs one sub-benchmark of BenchmarkRevocation: revocations through
// caller of nodes attached to holder, of their devices or, with certificate, of their
// certificates.
func benchRevocation(b *testing.B, caller, holder *daemon, pg *postgres, setup string, certificate bool) {
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
		var err error
		if certificate {
			sum := sha256.Sum256(devs[i].cert.Certificate[0])
			_, err = dc.RevokeCertificate(ctx, connect.NewRequest(&controlplanev1.RevokeCertificateRequest{
				Fingerprint: "sha256:" + hex.EncodeToString(sum[:]), Reason: "bench",
			}))
		} else {
			_, err = dc.RevokeDevice(ctx, connect.NewRequest(&controlplanev1.RevokeDeviceRequest{
				Id: devs[i].id, Reason: "bench",
			}))
		}
		if err != nil {
			return fmt.Errorf("revoke node %d: %w", i, err)
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
	reportRPC(b, rpc[:b.N])
	b.ReportMetric(micros(held1-held0)/float64(b.N), "holder-cpu-µs/op")
}

// twoReplicas starts palyrad replicas A and B on a new database of one PostgreSQL, B
// with a copy of A's master key.
func twoReplicas(b *testing.B) (pg *postgres, a, replicaB *daemon) {
	pg = openPostgres(b)
	dbURL, dirA := pg.newDatabase(b), b.TempDir()
	a = startDaemon(b, dbURL, dirA)
	return pg, a, startReplica(b, dbURL, dirA)
}

// reportRPC reports the median and 99th percentile of the revoking calls' round trips.
func reportRPC(b *testing.B, rpc []time.Duration) {
	var h histogram
	for _, l := range rpc {
		h.record(l)
	}
	b.ReportMetric(micros(h.quantile(0.50)), "rpc-p50-µs")
	b.ReportMetric(micros(h.quantile(0.99)), "rpc-p99-µs")
}

// tokenCacheTTL is how long a replica keeps a token it verified (server/internal/access,
// which this package may not import): a revocation must be measured within it, or B
// would refuse from the database rather than on the notification.
const tokenCacheTTL = 30 * time.Second

// BenchmarkTokenRevocation measures how soon another replica refuses a revoked API token
// it has cached: replicas A and B share one database; b.N + 1 operator tokens are
// created through A and each is used through B, which keeps it in its verified-token
// cache, all before the clock starts. Then, one token at a time, RevokeToken is called
// through A with an admin token, and the time runs from just before the call to B's
// first refusal (Unauthenticated) of the token, which the token's own client asks for
// with WhoAmI calls in a loop, from the token's own loopback address (one failure per
// address: the per-address failure limit never bites). The revocation reaches B through
// PostgreSQL's NOTIFY on palyra_tokens; the resolution is one WhoAmI round trip. The
// first token is revoked before the clock starts (warm-up). Besides closedLoop's
// figures it reports:
//
//	rpc-p50-µs, rpc-p99-µs       RevokeToken's own round trip, as the caller sees it
//	polls/op                     WhoAmI calls to B per revocation, the refusal included
//
// The run fails if it outlasts B's cache (30 s): the figures would then mix in reads of
// the database. Run it with -benchtime Nx: b.N is the number of revocations measured.
func BenchmarkTokenRevocation(b *testing.B) {
	pg, a, replicaB := twoReplicas(b)
	hc := a.apiClient(a.newToken(b, "bench-revocation"))
	defer hc.CloseIdleConnections()
	admin := accessv1connect.NewAccessServiceClient(hc, a.baseURL)
	ctx := context.Background()
	type token struct {
		id  string
		onB accessv1connect.AccessServiceClient
	}
	tokens := make([]token, b.N+1)
	rate := uint32(maxRatePerMinute) // for the loop of WhoAmI calls
	for i := range tokens {
		res, err := admin.CreateToken(ctx, connect.NewRequest(&accessv1.CreateTokenRequest{
			Label: fmt.Sprintf("bench-revoked-%d", i), Role: accessv1.Role_ROLE_OPERATOR, RateLimitPerMinute: &rate,
		}))
		if err != nil {
			b.Fatalf("create token %d: %v", i, err)
		}
		tr := replicaB.transport(loopback(6, i), nil)
		defer tr.CloseIdleConnections()
		tokens[i] = token{id: res.Msg.GetToken().GetId(), onB: accessv1connect.NewAccessServiceClient(
			&http.Client{Transport: &bearer{token: res.Msg.GetSecret(), next: tr}}, replicaB.baseURL)}
	}
	// B verifies every token, and caches it, just before the clock starts.
	for i, tok := range tokens {
		if _, err := tok.onB.WhoAmI(ctx, connect.NewRequest(&accessv1.WhoAmIRequest{})); err != nil {
			b.Fatalf("token %d through B: %v", i, err)
		}
	}
	cached := time.Now()
	rpc := make([]time.Duration, len(tokens))
	var polls atomic.Int64
	revoke := func(ctx context.Context, i int) error {
		began := time.Now()
		if _, err := admin.RevokeToken(ctx, connect.NewRequest(&accessv1.RevokeTokenRequest{Id: tokens[i].id, Reason: "bench"})); err != nil {
			return fmt.Errorf("revoke token %d: %w", i, err)
		}
		rpc[i] = time.Since(began)
		for {
			polls.Add(1)
			_, err := tokens[i].onB.WhoAmI(ctx, connect.NewRequest(&accessv1.WhoAmIRequest{}))
			switch {
			case connect.CodeOf(err) == connect.CodeUnauthenticated:
				return nil
			case err != nil:
				return fmt.Errorf("token %d through B after its revocation: %w", i, err)
			case time.Since(began) > revokeTimeout:
				return fmt.Errorf("B still accepts token %d %v after its revocation", i, revokeTimeout)
			}
		}
	}
	if err := revoke(ctx, len(tokens)-1); err != nil {
		b.Fatalf("warm-up: %v", err)
	}
	pg.checkpoint(b)
	polls.Store(0)
	var next atomic.Int64
	closedLoop(b, 1, meter{palyrad: a.pid(), pprof: a.pprof, pg: pg}, "revocations/s", func(ctx context.Context) error {
		return revoke(ctx, int(next.Add(1)-1))
	})
	if took := time.Since(cached); took > tokenCacheTTL {
		b.Fatalf("the tokens were cached %v before the run ended, longer than B keeps them (%v)", took.Round(time.Millisecond), tokenCacheTTL)
	}
	reportRPC(b, rpc[:b.N])
	b.ReportMetric(float64(polls.Load())/float64(b.N), "polls/op")
}
