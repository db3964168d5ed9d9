package bench

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"testing"
	"time"
)

// settle is how long palyrad is left alone before its memory is read.
const settle = 3 * time.Second

// BenchmarkIdleNodes measures what an attached, idle node costs palyrad: N nodes
// (PALYRA_BENCH_NODES, default 500) pair, palyrad restarts (so that nothing of the
// pairing is left in its heap), then every node opens its own mutual-TLS HTTP/2
// connection and Attach stream (32 handshakes in flight, each from its own loopback
// address), says hello, gets its welcome and from then on only sends heartbeats.
// The fake nodes run in this process and palyrad in its own, so every figure is the
// server's alone: the difference between N nodes and none, divided by N.
//
//	rss-KiB/node         VmRSS, as it is (no forced GC: palyrad has no way to force one)
//	heap-KiB/node        live heap (HeapAlloc) read right after a GC cycle and its sweep
//	heap-inuse-KiB/node  HeapInuse read at the same moment
//	stack-KiB/node       goroutine stacks (StackInuse)
//	goroutines/node      go_goroutines
//	attaches/s           handshakes + Attach + hello + welcome per second, while attaching
//
// ns/op is the time to attach all N. Run it with -benchtime 1x: every call of the
// function is one whole measurement, whatever b.N is.
func BenchmarkIdleNodes(b *testing.B) {
	n := 500
	if v := os.Getenv("PALYRA_BENCH_NODES"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			b.Fatalf("PALYRA_BENCH_NODES=%q is not a positive number", v)
		}
	}
	pg := openPostgres(b)
	dbURL, dataDir := pg.newDatabase(b), b.TempDir()
	first := startDaemon(b, dbURL, dataDir)
	admin := first.newToken(b, "bench-setup")
	devs := enroll(b, first, admin, n)
	first.stop(b)
	d := startDaemon(b, dbURL, dataDir)
	time.Sleep(settle)
	idle := d.memory(b)

	b.ResetTimer()
	began := time.Now()
	nodes := make([]*node, n)
	err := forEach(n, 32, func(i int) error {
		nd, err := attach(d, &devs[i], loopback(4, i), false)
		if err != nil {
			return fmt.Errorf("node %d: %w", i, err)
		}
		nodes[i] = nd
		return nil
	})
	attaching := time.Since(began)
	b.StopTimer()
	defer func() {
		for _, nd := range nodes {
			if nd != nil {
				nd.close()
			}
		}
	}()
	if err != nil {
		b.Fatal(err)
	}
	d.waitAttached(b, n)
	time.Sleep(settle)
	for i, nd := range nodes {
		if err := nd.failed(); err != nil {
			b.Fatalf("node %d: %v", i, err)
		}
	}
	loaded := d.memory(b)

	per := func(f func(memory) float64) float64 { return (f(loaded) - f(idle)) / float64(n) }
	b.ReportMetric(per(func(m memory) float64 { return m.rssKiB }), "rss-KiB/node")
	b.ReportMetric(per(func(m memory) float64 { return m.heapLive })/1024, "heap-KiB/node")
	b.ReportMetric(per(func(m memory) float64 { return m.heapInuseGC })/1024, "heap-inuse-KiB/node")
	b.ReportMetric(per(func(m memory) float64 { return m.stack })/1024, "stack-KiB/node")
	b.ReportMetric(per(func(m memory) float64 { return m.goroutines }), "goroutines/node")
	b.ReportMetric(float64(n)/attaching.Seconds(), "attaches/s")
	b.Logf("palyrad with 0 / %d idle nodes: RSS %.1f / %.1f MiB, live heap %.1f / %.1f MiB, stacks %.1f / %.1f MiB, %.0f / %.0f goroutines",
		n, idle.rssKiB/1024, loaded.rssKiB/1024, idle.heapLive/(1<<20), loaded.heapLive/(1<<20),
		idle.stack/(1<<20), loaded.stack/(1<<20), idle.goroutines, loaded.goroutines)
}

// memory is what palyrad uses at one moment.
type memory struct {
	rssKiB     float64 // VmRSS, before the GC below
	goroutines float64
	stack      float64 // bytes of goroutine stacks
	// heapLive and heapInuseGC are HeapAlloc and HeapInuse in bytes, read just after a
	// GC cycle and its sweep.
	heapLive, heapInuseGC float64
}

// memory reads palyrad's memory: RSS, goroutines and stacks as they are, then drives a
// GC cycle and reads the heap right after it. palyrad exposes no way to force a GC,
// so the driver is its own /metrics: each scrape allocates a little garbage, and the
// scrapes go on (one at a time) until go_gc_duration_seconds_count moves. The scrape
// that sees the new count read the heap statistics just after that cycle: its HeapAlloc
// is the live heap plus the little allocated since.
func (d *daemon) memory(b *testing.B) memory {
	b.Helper()
	ctx := context.Background()
	hc := &http.Client{Transport: d.transport(nil, nil)}
	defer hc.CloseIdleConnections()
	var m memory
	rss, err := rssKiB(d.pid())
	if err != nil {
		b.Fatal(err)
	}
	before, err := d.metrics(ctx, hc)
	if err != nil {
		b.Fatal(err)
	}
	m.rssKiB, m.goroutines, m.stack = rss, before["go_goroutines"], before["go_memstats_stack_inuse_bytes"]
	gcs := before["go_gc_duration_seconds_count"]
	deadline := time.Now().Add(2 * time.Minute)
	for {
		after, err := d.metrics(ctx, hc)
		if err != nil {
			b.Fatal(err)
		}
		if after["go_gc_duration_seconds_count"] > gcs {
			// A cycle ends before its sweep: HeapAlloc counts dead objects until the
			// background sweeper reaches their spans, which an idle process does in
			// well under a second.
			time.Sleep(time.Second)
			swept, err := d.metrics(ctx, hc)
			if err != nil {
				b.Fatal(err)
			}
			m.heapLive, m.heapInuseGC = swept["go_memstats_heap_alloc_bytes"], swept["go_memstats_heap_inuse_bytes"]
			return m
		}
		if time.Now().After(deadline) {
			b.Fatal("no GC cycle in palyrad within 2 minutes of scraping /metrics")
		}
	}
}
