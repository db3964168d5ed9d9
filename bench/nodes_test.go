package bench

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// settle is how long palyrad is left alone before its memory is read.
const settle = 3 * time.Second

// BenchmarkIdleNodes measures what an attached, idle node costs palyrad, in steps of
// N nodes (PALYRA_BENCH_NODES: one number or a comma-separated list such as
// 1000,5000,10000,20000; default 500). The largest step's devices pair first, with the
// public pairing flow; then, for each step, a fresh palyrad process starts (so that
// nothing of earlier steps or of the pairing is left in its heap), and N of them open
// their own mutual-TLS HTTP/2 connection and Attach stream (32 handshakes in flight,
// each node from its own loopback address, so that no source address runs out of
// ports), say hello, get their welcome and from then on only send heartbeats, at the
// default interval. The fake nodes run in this process and palyrad in its own, so every
// figure is the server's alone: the difference between N nodes and none, divided by N.
//
//	rss-KiB/node         VmRSS, as it is (no forced GC: palyrad has no way to force one)
//	heap-KiB/node        live heap (HeapAlloc) read right after a GC cycle and its sweep
//	heap-inuse-KiB/node  HeapInuse read at the same moment
//	stack-KiB/node       goroutine stacks (StackInuse)
//	goroutines/node      go_goroutines
//	attaches/s           handshakes + Attach + hello + welcome per second, while attaching
//	idle-cpu-µs/node/s   palyrad's CPU time per node and second over one heartbeat
//	                     interval of idleness (heartbeats, presence flushes, timers)
//	cpu-µs/heartbeat     the same CPU time per heartbeat received in that interval
//
// ns/op is the time to attach all N. Run it with -benchtime 1x: every call of a step's
// function is one whole measurement, whatever b.N is. The process raises its open-file
// limit first (limits_test.go); a step that fails says what stopped it.
func BenchmarkIdleNodes(b *testing.B) {
	steps, err := nodeSteps(os.Getenv("PALYRA_BENCH_NODES"), 500)
	if err != nil {
		b.Fatalf("PALYRA_BENCH_NODES: %v", err)
	}
	pg := openPostgres(b)
	dbURL, dataDir := pg.newDatabase(b), b.TempDir()
	first := startDaemon(b, dbURL, dataDir)
	devs := enroll(b, first, first.newToken(b, "bench-setup"), slices.Max(steps))
	first.stop(b)
	for _, n := range steps {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) { idleNodes(b, dbURL, dataDir, devs[:n]) })
	}
}

// nodeSteps parses a list of node counts; empty means def.
func nodeSteps(v string, def int) ([]int, error) {
	if v == "" {
		return []int{def}, nil
	}
	var steps []int
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > maxNodes {
			return nil, fmt.Errorf("%q is not a number of nodes from 1 to %d", f, maxNodes)
		}
		steps = append(steps, n)
	}
	return steps, nil
}

// maxNodes is the most nodes a benchmark attaches: loopback gives each its own source
// address up to there (see loopback).
const maxNodes = 250 * 256

// idleNodes measures one step: devs attach to a fresh palyrad and idle.
func idleNodes(b *testing.B, dbURL, dataDir string, devs []device) {
	n := len(devs)
	d := startDaemon(b, dbURL, dataDir)
	defer d.stop(b)
	time.Sleep(settle)
	idle := d.memory(b)

	b.ResetTimer()
	prof := profileRun(b, d.pprof) // the attaching
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
	prof.finish(b)
	defer func() {
		for _, nd := range nodes {
			if nd != nil {
				nd.close()
			}
		}
	}()
	if err != nil {
		b.Fatalf("attaching %d nodes stopped at the first failure (what limits this step): %v", n, err)
	}
	d.waitAttached(b, n)
	time.Sleep(settle)
	for i, nd := range nodes {
		if err := nd.failed(); err != nil {
			b.Fatalf("node %d: %v", i, err)
		}
	}
	loaded := d.memory(b)
	saveHeapProfile(b, d.pprof)
	cpu, beats := d.idleCPU(b, heartbeatInterval)

	per := func(f func(memory) float64) float64 { return (f(loaded) - f(idle)) / float64(n) }
	b.ReportMetric(per(func(m memory) float64 { return m.rssKiB }), "rss-KiB/node")
	b.ReportMetric(per(func(m memory) float64 { return m.heapLive })/1024, "heap-KiB/node")
	b.ReportMetric(per(func(m memory) float64 { return m.heapInuseGC })/1024, "heap-inuse-KiB/node")
	b.ReportMetric(per(func(m memory) float64 { return m.stack })/1024, "stack-KiB/node")
	b.ReportMetric(per(func(m memory) float64 { return m.goroutines }), "goroutines/node")
	b.ReportMetric(float64(n)/attaching.Seconds(), "attaches/s")
	b.ReportMetric(micros(cpu)/float64(n)/heartbeatInterval.Seconds(), "idle-cpu-µs/node/s")
	if beats > 0 {
		b.ReportMetric(micros(cpu)/beats, "cpu-µs/heartbeat")
	}
	b.Logf("palyrad with 0 / %d idle nodes: RSS %.1f / %.1f MiB, live heap %.1f / %.1f MiB, stacks %.1f / %.1f MiB, %.0f / %.0f goroutines; %.0f heartbeats in %s took %s of CPU",
		n, idle.rssKiB/1024, loaded.rssKiB/1024, idle.heapLive/(1<<20), loaded.heapLive/(1<<20),
		idle.stack/(1<<20), loaded.stack/(1<<20), idle.goroutines, loaded.goroutines, beats, heartbeatInterval, cpu.Round(time.Millisecond))
}

// heartbeatInterval is palyrad's default heartbeat interval (nodes.heartbeat_interval).
const heartbeatInterval = 15 * time.Second

// idleCPU returns palyrad's CPU time over window and the heartbeats it received in it
// (palyra_node_messages_total of kind heartbeat).
func (d *daemon) idleCPU(b *testing.B, window time.Duration) (time.Duration, float64) {
	b.Helper()
	ctx := context.Background()
	hc := &http.Client{Transport: d.transport(nil, nil)}
	defer hc.CloseIdleConnections()
	m0, err := d.metrics(ctx, hc)
	if err != nil {
		b.Fatal(err)
	}
	c0, err := cpuTime(d.pid())
	if err != nil {
		b.Fatal(err)
	}
	time.Sleep(window)
	c1, err := cpuTime(d.pid())
	if err != nil {
		b.Fatal(err)
	}
	m1, err := d.metrics(ctx, hc)
	if err != nil {
		b.Fatal(err)
	}
	return c1 - c0, m1[`palyra_node_messages_total{kind="heartbeat"}`] - m0[`palyra_node_messages_total{kind="heartbeat"}`]
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
