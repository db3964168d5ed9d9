package bench

import (
	"cmp"
	"context"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// meter reads what a run costs the processes involved.
type meter struct {
	palyrad int       // palyrad's process id (or a peer's server's); 0 when there is none
	name    string    // the server's name in the figures: palyrad when ""
	pprof   string    // base URL of palyrad's pprof listener, "" when not profiling
	pg      *postgres // nil when no PostgreSQL is involved (the baselines)
}

// usage is a reading of the meter.
type usage struct {
	palyrad, pg, self time.Duration // CPU time
	xid               int64         // the next transaction id PostgreSQL will assign
	wal               int64         // bytes of WAL PostgreSQL wrote so far
}

func (m meter) read(tb testing.TB) usage {
	tb.Helper()
	var u usage
	if m.palyrad != 0 {
		u.palyrad, _ = cpuTime(m.palyrad)
	}
	u.self, _ = cpuTime(os.Getpid())
	if m.pg == nil {
		return u
	}
	if m.pg.postmaster != 0 {
		u.pg = treeCPU(m.pg.postmaster)
	}
	err := m.pg.admin.QueryRow(context.Background(),
		`select pg_snapshot_xmax(pg_current_snapshot())::text::bigint, (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint`).Scan(&u.xid, &u.wal)
	if err != nil {
		tb.Fatalf("read PostgreSQL's counters: %v", err)
	}
	return u
}

// closedLoop runs b.N calls of op on c workers, each issuing its calls back to back
// (a closed loop, as in PERF-BASELINES.md), and reports:
//
//	mean-µs, p50-µs, p90-µs, p99-µs
//	                         latency of the calls of this run (the quantiles from a
//	                         log-linear histogram, to within 0.1 %: histogram_test.go)
//	<unit>                   calls completed per second of wall time (dispatches/s)
//	palyrad-cpu-µs/op        palyrad's CPU time (user + system) per call (relay-cpu-µs/op
//	                         for the durable relay's process)
//	pg-cpu-µs/op             PostgreSQL's (postmaster and backends), when its process is known
//	bench-cpu-µs/op          this process's: the load generator and the fake node
//	pg-xacts/op              transactions that wrote (took a transaction id), per call
//	wal-B/op                 bytes of WAL written per call
//
// The PostgreSQL figures are the whole server's: exact only when nothing else uses it
// (as under make bench), and left out when m.pg is nil (the baselines, whose servers
// run in this process: bench-cpu-µs/op is then client and server together). ns/op is
// the wall time per call, so at c > 1 it is 1/throughput, not latency. Each run's
// latencies and throughput are also kept for the ratio table (ratios_test.go). The
// first error ends the run and fails the benchmark.
func closedLoop(b *testing.B, c int, m meter, unit string, op func(ctx context.Context) error) {
	ctx := context.Background()
	// One histogram per worker, each allocated on its own (64-byte size class) so that
	// workers do not share a cache line.
	lat := make([]*histogram, c)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, c)
	u0 := m.read(b)
	prof := startProfiling(b, m.pprof)
	b.ResetTimer()
	start := time.Now()
	for w := range c {
		lat[w] = new(histogram)
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				t0 := time.Now()
				if err := op(ctx); err != nil {
					errs <- err
					return
				}
				lat[w].record(time.Since(t0))
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	u1 := m.read(b)
	prof.finish(b)
	close(errs)
	if err := <-errs; err != nil {
		results.fail(b.Name())
		b.Fatal(err)
	}
	var all histogram
	for w := range lat {
		all.merge(lat[w])
	}
	n := float64(b.N)
	r := result{
		n: b.N, mean: all.mean(), p50: all.quantile(0.50), p90: all.quantile(0.90), p99: all.quantile(0.99),
		throughput: n / elapsed.Seconds(), unit: unit,
	}
	results.record(b.Name(), r)
	b.ReportMetric(micros(r.mean), "mean-µs")
	b.ReportMetric(micros(r.p50), "p50-µs")
	b.ReportMetric(micros(r.p90), "p90-µs")
	b.ReportMetric(micros(r.p99), "p99-µs")
	b.ReportMetric(r.throughput, unit)
	if m.palyrad != 0 {
		b.ReportMetric(micros(u1.palyrad-u0.palyrad)/n, cmp.Or(m.name, "palyrad")+"-cpu-µs/op")
	}
	b.ReportMetric(micros(u1.self-u0.self)/n, "bench-cpu-µs/op")
	if m.pg == nil {
		return
	}
	if m.pg.postmaster != 0 {
		b.ReportMetric(micros(u1.pg-u0.pg)/n, "pg-cpu-µs/op")
	}
	b.ReportMetric(float64(u1.xid-u0.xid)/n, "pg-xacts/op")
	b.ReportMetric(float64(u1.wal-u0.wal)/n, "wal-B/op")
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
