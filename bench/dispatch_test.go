package bench

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	"github.com/palyra/palyra/gen/go/palyra/controlplane/v1/controlplanev1connect"
)

// inputJSON is the input of every dispatch: a JSON object of 128 bytes.
var inputJSON = `{"payload":"` + strings.Repeat("x", 128-len(`{"payload":""}`)) + `"}`

// BenchmarkDispatch measures DispatchService calls through the whole stack: a client
// on one HTTP/2 connection with an admin token → palyrad (TLS, authentication, rate
// limit, audit, PostgreSQL) → nodes attached with their device certificates, which
// answer each dispatch at once (accepted, 128 bytes of output or
// PALYRA_BENCH_OUTPUT_BYTES, result) → back.
//
//	ExecuteCapability/c=C/nodes=N  create + deliver + accept + output + result + answer,
//	                               C callers, their calls spread round robin over N nodes
//	CreateDispatch/c=C             enqueue only, for a node that is not attached
//
// One palyrad and one database serve every sub-benchmark (and every -count
// repetition); each run takes a fresh token (its own rate limit and burst) and a fresh
// connection, makes three calls before the clock starts, and runs after a CHECKPOINT.
func BenchmarkDispatch(b *testing.B) {
	const attached = 16
	pg := openPostgres(b)
	d := startDaemon(b, pg.newDatabase(b), b.TempDir())
	devs := enroll(b, d, d.newToken(b, "bench-setup"), attached+1)
	workers := make([]*node, attached)
	for i := range workers {
		n, err := attach(d, &devs[i], nil, true)
		if err != nil {
			b.Fatal(err)
		}
		defer n.close()
		workers[i] = n
	}
	// The last node attaches once, so that palyrad knows its capability, then leaves:
	// what is created for it stays queued.
	queue := devs[attached]
	gone, err := attach(d, &queue, nil, false)
	if err != nil {
		b.Fatal(err)
	}
	gone.close()
	d.waitAttached(b, attached)
	m := meter{palyrad: d.pid(), pprof: d.pprof, pg: pg}

	// c=1 and c=64 with one node are the shapes of the ratio table (ratios_test.go)
	// and of the floor's relay (one node process).
	for _, cn := range [][2]int{{1, 1}, {16, 1}, {16, attached}, {64, 1}, {64, attached}} {
		c, nodes := cn[0], cn[1]
		b.Run(fmt.Sprintf("ExecuteCapability/c=%d/nodes=%d", c, nodes), func(b *testing.B) {
			dc := dispatchClient(b, d, pg)
			var turn atomic.Uint64
			run(b, c, m, d, controlplanev1connect.DispatchServiceExecuteCapabilityProcedure, func(ctx context.Context) error {
				i := int(turn.Add(1) % uint64(nodes))
				if err := workers[i].failed(); err != nil {
					return fmt.Errorf("node %d: %w", i, err)
				}
				res, err := dc.ExecuteCapability(ctx, connect.NewRequest(&controlplanev1.ExecuteCapabilityRequest{
					NodeId: devs[i].id, Capability: capability, InputJson: inputJSON, Timeout: durationpb.New(30 * time.Second),
				}))
				if err != nil {
					return err
				}
				out := 0
				for _, o := range res.Msg.GetOutput() {
					out += len(o.GetData())
				}
				if st := res.Msg.GetDispatch().GetState(); st != controlplanev1.DispatchState_DISPATCH_STATE_SUCCEEDED || out != len(outputChunk()) {
					return fmt.Errorf("dispatch %s ended %s with %d bytes of output", res.Msg.GetDispatch().GetId(), st, out)
				}
				return nil
			})
		})
	}
	for _, c := range concurrencies {
		b.Run(fmt.Sprintf("CreateDispatch/c=%d", c), func(b *testing.B) {
			dc := dispatchClient(b, d, pg)
			// A deadline far enough that the sweeper does not end these during the
			// benchmark.
			req := &controlplanev1.CreateDispatchRequest{
				NodeId: queue.id, Capability: capability, InputJson: inputJSON, Timeout: durationpb.New(time.Hour),
			}
			run(b, c, m, d, controlplanev1connect.DispatchServiceCreateDispatchProcedure, func(ctx context.Context) error {
				res, err := dc.CreateDispatch(ctx, connect.NewRequest(req))
				if err != nil {
					return err
				}
				if st := res.Msg.GetDispatch().GetState(); !res.Msg.GetCreated() || st != controlplanev1.DispatchState_DISPATCH_STATE_QUEUED {
					return fmt.Errorf("dispatch %s: created %v, %s", res.Msg.GetDispatch().GetId(), res.Msg.GetCreated(), st)
				}
				return nil
			})
		})
	}
}

// dispatchClient returns a DispatchService client with a fresh token on a fresh
// HTTP/2 connection, and checkpoints the database.
func dispatchClient(b *testing.B, d *daemon, pg *postgres) controlplanev1connect.DispatchServiceClient {
	b.Helper()
	hc := d.apiClient(d.newToken(b, "bench"))
	b.Cleanup(hc.CloseIdleConnections)
	pg.checkpoint(b)
	return controlplanev1connect.NewDispatchServiceClient(hc, d.baseURL)
}

// run makes three calls to open the connection and warm palyrad's caches, then
// measures b.N calls on c workers. Besides closedLoop's figures it reports palyrad's
// own view, from its /metrics, as means over the run:
//
//	server-µs            time palyrad spent on the call (procedure): from the start of
//	                     its interceptors (authentication, rate limit) to the end of
//	                     the audit record, without TLS, HTTP/2 and the client
//	create-to-result-µs  time from a dispatch's creation (before its INSERT) to the
//	                     node's result being recorded (before its UPDATE), when any ended
func run(b *testing.B, c int, m meter, d *daemon, procedure string, op func(ctx context.Context) error) {
	b.Helper()
	for range 3 {
		if err := op(context.Background()); err != nil {
			b.Fatalf("warm-up: %v", err)
		}
	}
	hc := &http.Client{Transport: d.transport(nil, nil)}
	defer hc.CloseIdleConnections()
	scrape := func() map[string]float64 {
		s, err := d.metrics(context.Background(), hc)
		if err != nil {
			b.Fatal(err)
		}
		return s
	}
	before := scrape()
	closedLoop(b, c, m, "dispatches/s", op)
	after := scrape()
	mean := func(name, labels string) (float64, bool) {
		n := after[name+"_count"+labels] - before[name+"_count"+labels]
		return (after[name+"_sum"+labels] - before[name+"_sum"+labels]) / n * 1e6, n > 0
	}
	if v, ok := mean("palyra_rpc_handling_seconds", `{procedure="`+procedure+`"}`); ok {
		b.ReportMetric(v, "server-µs")
	}
	if v, ok := mean("palyra_dispatch_duration_seconds", `{state="succeeded"}`); ok {
		b.ReportMetric(v, "create-to-result-µs")
	}
}
