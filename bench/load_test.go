package bench

import (
	"context"
	"math"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// meter reads what a run costs the processes involved.
type meter struct {
	palyrad int // palyrad's process id; 0 when there is none
	pg      *postgres
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
	if m.pg.postmaster != 0 {
		u.pg = treeCPU(m.pg.postmaster)
	}
	u.self, _ = cpuTime(os.Getpid())
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
//	mean-µs, p50-µs, p99-µs  latency of the calls of this run
//	<unit>                   calls completed per second of wall time (dispatches/s)
//	palyrad-cpu-µs/op        palyrad's CPU time (user + system) per call
//	pg-cpu-µs/op             PostgreSQL's (postmaster and backends), when its process is known
//	bench-cpu-µs/op          this process's: the load generator and the fake node
//	pg-xacts/op              transactions that wrote (took a transaction id), per call
//	wal-B/op                 bytes of WAL written per call
//
// The PostgreSQL figures are the whole server's: exact only when nothing else uses it
// (as under make bench). ns/op is the wall time per call, so at c > 1 it is
// 1/throughput, not latency. The first error ends the run and fails the benchmark.
func closedLoop(b *testing.B, c int, m meter, unit string, op func(ctx context.Context) error) {
	ctx := context.Background()
	lat := make([][]time.Duration, c)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, c)
	u0 := m.read(b)
	b.ResetTimer()
	start := time.Now()
	for w := range c {
		lat[w] = make([]time.Duration, 0, b.N/c+1)
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				t0 := time.Now()
				if err := op(ctx); err != nil {
					errs <- err
					return
				}
				lat[w] = append(lat[w], time.Since(t0))
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	u1 := m.read(b)
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	n := float64(b.N)
	var sum time.Duration
	for _, l := range all {
		sum += l
	}
	b.ReportMetric(micros(sum)/float64(len(all)), "mean-µs")
	b.ReportMetric(micros(percentile(all, 0.50)), "p50-µs")
	b.ReportMetric(micros(percentile(all, 0.99)), "p99-µs")
	b.ReportMetric(n/elapsed.Seconds(), unit)
	if m.palyrad != 0 {
		b.ReportMetric(micros(u1.palyrad-u0.palyrad)/n, "palyrad-cpu-µs/op")
	}
	if m.pg.postmaster != 0 {
		b.ReportMetric(micros(u1.pg-u0.pg)/n, "pg-cpu-µs/op")
	}
	b.ReportMetric(micros(u1.self-u0.self)/n, "bench-cpu-µs/op")
	b.ReportMetric(float64(u1.xid-u0.xid)/n, "pg-xacts/op")
	b.ReportMetric(float64(u1.wal-u0.wal)/n, "wal-B/op")
}

// percentile returns the q-quantile of sorted samples (nearest rank).
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(q * float64(len(sorted))))
	return sorted[min(max(rank-1, 0), len(sorted)-1)]
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
