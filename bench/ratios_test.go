package bench

import (
	"fmt"
	"io"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
)

// result is what one closed-loop run measured.
type result struct {
	n                   int // calls
	mean, p50, p90, p99 time.Duration
	throughput          float64 // calls per second of wall time
	unit                string  // throughput's unit, such as dispatches/s
}

// runs keeps the results of the benchmarks of this process, for the table of
// Palyra / baseline ratios that TestMain prints once they have all run. Keeping them
// in a package variable is what lets the ratios come from one run of go test.
type runs struct {
	mu sync.Mutex // guards the following
	// byName holds, by benchmark name, one result per -count repetition: the last
	// round of each, the one go test reports.
	byName map[string][]result
	// failed names the benchmarks that failed in any round: the tables leave them out,
	// whatever their earlier rounds measured.
	failed map[string]bool
}

// results are the results of this process's closed-loop runs.
var results = &runs{byName: map[string][]result{}, failed: map[string]bool{}}

// record keeps r as the latest round of benchmark name. go test runs a benchmark in
// rounds of growing b.N and reports the last; a round whose b.N is not larger than
// the previous one's starts the next -count repetition.
func (rs *runs) record(name string, r result) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	prev := rs.byName[name]
	if len(prev) > 0 && r.n > prev[len(prev)-1].n {
		prev[len(prev)-1] = r
		return
	}
	rs.byName[name] = append(prev, r)
}

// fail marks benchmark name as failed: its results are left out of the tables.
func (rs *runs) fail(name string) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	rs.failed[name] = true
	delete(rs.byName, name)
}

// ran returns the results of benchmark name, and whether it ran and never failed.
func (rs *runs) ran(name string) ([]result, bool) {
	r, ok := rs.byName[name]
	return r, ok && !rs.failed[name]
}

// Names of the benchmarks the ratio table compares: Palyra's dispatch round trip and
// the baselines, each with its concurrency.
const (
	palyraPrefix   = "BenchmarkDispatch/ExecuteCapability/"
	baselinePrefix = "BenchmarkBaseline/"
	dispatchPrefix = "BenchmarkDispatch/"
	peersPrefix    = "BenchmarkPeers/"
)

var concurrencyRE = regexp.MustCompile(`(?:^|/)c=(\d+)(?:/|$)`)

// concurrency is the c=N element of a benchmark name, or 0.
func concurrency(name string) int {
	m := concurrencyRE.FindStringSubmatch(name)
	if m == nil {
		return 0
	}
	c, _ := strconv.Atoi(m[1])
	return c
}

// medianOf is the median of f over rs (the lower middle one for an even count).
func medianOf(rs []result, f func(result) float64) float64 {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	slices.Sort(v)
	return v[(len(v)-1)/2]
}

// printRatios writes the table of issue 6's ratios from the runs of this process:
// Palyra's p50 over each baseline's at c=1 (lower is better for Palyra), and Palyra's
// throughput over each baseline's at c=64 (higher is better), each side the median
// of its -count repetitions. It writes nothing unless both sides ran.
func (rs *runs) printRatios(w io.Writer) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	var palyra, baselines []string
	for name := range rs.byName {
		if rs.failed[name] {
			continue
		}
		switch {
		case strings.HasPrefix(name, palyraPrefix):
			palyra = append(palyra, name)
		case strings.HasPrefix(name, baselinePrefix):
			baselines = append(baselines, name)
		}
	}
	slices.Sort(palyra)
	slices.Sort(baselines)
	p50 := func(r result) float64 { return micros(r.p50) }
	tput := func(r result) float64 { return r.throughput }
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	printed := false
	for _, cmp := range []struct {
		c          int
		what, unit string
		f          func(result) float64
	}{{1, "p50", "µs", p50}, {64, "throughput", "/s", tput}} {
		for _, p := range palyra {
			if concurrency(p) != cmp.c {
				continue
			}
			pv := medianOf(rs.byName[p], cmp.f)
			for _, bl := range baselines {
				if concurrency(bl) != cmp.c {
					continue
				}
				if !printed {
					fmt.Fprintln(w, "\nPalyra / baseline, same run (medians over -count):")
					fmt.Fprintln(tw, "measure\tPalyra\tbaseline\tPalyra\tbaseline\tratio\t")
					printed = true
				}
				bv := medianOf(rs.byName[bl], cmp.f)
				fmt.Fprintf(tw, "%s at c=%d\t%s\t%s\t%.0f %s\t%.0f %s\t%.2f×\t\n", cmp.what, cmp.c,
					strings.TrimPrefix(p, "BenchmarkDispatch/"), strings.TrimPrefix(bl, baselinePrefix),
					pv, cmp.unit, bv, cmp.unit, pv/bv)
			}
		}
	}
	tw.Flush()
}

// target is one of issue 17's targets: Palyra's figure over a peer's, at most or at
// least bound.
type target struct {
	palyra, peer string // benchmark names without "BenchmarkDispatch/" and "BenchmarkPeers/"
	what         string // the measure, as the table prints it
	unit         string
	f            func(result) float64
	atMost       bool // the ratio must be ≤ bound (a latency), else ≥ bound (a throughput)
	bound        float64
}

// targets are issue 17's, against the peers of BenchmarkPeers: ExecuteCapability with
// one node (the relay's shape: one node stream) for the round trips, CreateDispatch
// for River's insert.
var targets = func() []target {
	p50 := func(r result) float64 { return micros(r.p50) }
	p99 := func(r result) float64 { return micros(r.p99) }
	tput := func(r result) float64 { return r.throughput }
	const exec1, exec64 = "ExecuteCapability/c=1/nodes=1", "ExecuteCapability/c=64/nodes=1"
	return []target{
		{exec1, "durable-relay/c=1", "p50", "µs", p50, true, 1},
		{exec1, "jetstream/c=1", "p50", "µs", p50, true, 1},
		{exec64, "durable-relay/c=64", "throughput", "/s", tput, false, 2},
		{exec64, "jetstream/c=64", "throughput", "/s", tput, false, 2},
		{exec64, "durable-relay/c=64", "p99", "µs", p99, true, 2},
		{"CreateDispatch/c=64", "river-insert/c=64", "throughput", "/s", tput, false, 1},
	}
}()

// printTargets writes the table of issue 17's targets from the runs of this process:
// for each target whose two benchmarks both ran, the two figures (each the median of
// its -count repetitions), Palyra's over the peer's, the bound and whether it is met.
func (rs *runs) printTargets(w io.Writer) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	printed := false
	for _, t := range targets {
		pr, ok1 := rs.ran(dispatchPrefix + t.palyra)
		br, ok2 := rs.ran(peersPrefix + t.peer)
		if !ok1 || !ok2 {
			continue
		}
		if !printed {
			fmt.Fprintln(w, "\nIssue 17's targets, Palyra / peer, same run (medians over -count):")
			fmt.Fprintln(tw, "measure\tPalyra\tpeer\tPalyra\tpeer\tratio\ttarget\t\t")
			printed = true
		}
		pv, bv := medianOf(pr, t.f), medianOf(br, t.f)
		ratio := pv / bv
		cmpSign, met := "≥", ratio >= t.bound
		if t.atMost {
			cmpSign, met = "≤", ratio <= t.bound
		}
		verdict := "missed"
		if met {
			verdict = "met"
		}
		fmt.Fprintf(tw, "%s at c=%d\t%s\t%s\t%.0f %s\t%.0f %s\t%.2f×\t%s %g×\t%s\t\n",
			t.what, concurrency(t.palyra), t.palyra, t.peer, pv, t.unit, bv, t.unit, ratio, cmpSign, t.bound, verdict)
	}
	tw.Flush()
	failed := slices.Sorted(maps.Keys(rs.failed))
	if len(failed) > 0 {
		fmt.Fprintf(w, "Left out of the tables, failed: %s\n", strings.Join(failed, ", "))
	}
}
