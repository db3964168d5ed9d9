package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// profileDir is where palyrad's profiles go (PALYRA_BENCH_PROFILE); "" turns
// profiling off, and palyrad then runs without its pprof listener.
func profileDir() string { return os.Getenv("PALYRA_BENCH_PROFILE") }

// profileSeconds is the length of each CPU profile (PALYRA_BENCH_PROFILE_SECONDS,
// default 5); runs should last longer (-benchtime) so that the profile sees only load.
func profileSeconds() int {
	if n, err := strconv.Atoi(os.Getenv("PALYRA_BENCH_PROFILE_SECONDS")); err == nil && n > 0 {
		return n
	}
	return 5
}

// profiling captures palyrad's CPU profile from the start of a run and its
// allocations over the run, as <dir>/<benchmark>.cpu.pprof and .allocs.pprof (with
// .allocs-base.pprof taken at the start: `go tool pprof -base`).
type profiling struct {
	base, prefix string
	cpu          chan error
}

// startProfiling starts profiling the run of b when PALYRA_BENCH_PROFILE is set and
// palyrad serves pprof at base; it returns nil otherwise, and for the short probing
// runs the testing package makes before the measured one.
func startProfiling(b *testing.B, base string) *profiling {
	if b.N < 100 {
		return nil
	}
	return profileRun(b, base)
}

// profileRun starts profiling palyrad (as startProfiling) whatever b.N is: for the
// benchmarks whose every run is one whole measurement (-benchtime 1x).
func profileRun(b *testing.B, base string) *profiling {
	if base == "" || profileDir() == "" {
		return nil
	}
	p := &profiling{base: base, prefix: filepath.Join(profileDir(), profileName(b)), cpu: make(chan error, 1)}
	if err := p.fetch("/debug/pprof/allocs", ".allocs-base.pprof", 30*time.Second); err != nil {
		b.Fatal(err)
	}
	secs := profileSeconds()
	go func() {
		p.cpu <- p.fetch("/debug/pprof/profile?seconds="+strconv.Itoa(secs), ".cpu.pprof", time.Duration(secs+30)*time.Second)
	}()
	return p
}

// saveHeapProfile writes palyrad's heap profile (after a GC) as
// <dir>/<benchmark>.heap.pprof when PALYRA_BENCH_PROFILE is set.
func saveHeapProfile(b *testing.B, base string) {
	if base == "" || profileDir() == "" {
		return
	}
	p := &profiling{base: base, prefix: filepath.Join(profileDir(), profileName(b))}
	if err := p.fetch("/debug/pprof/heap?gc=1", ".heap.pprof", time.Minute); err != nil {
		b.Fatal(err)
	}
	if err := p.fetch("/debug/pprof/goroutine", ".goroutine.pprof", time.Minute); err != nil {
		b.Fatal(err)
	}
	b.Logf("heap and goroutine profiles of palyrad: %s.{heap,goroutine}.pprof", p.prefix)
}

// profileName is the benchmark's name as a file name.
func profileName(b *testing.B) string {
	return strings.NewReplacer("/", "_", "=", "-", " ", "_").Replace(b.Name())
}

// finish waits for the CPU profile and takes the allocation profile.
func (p *profiling) finish(b *testing.B) {
	if p == nil {
		return
	}
	if err := <-p.cpu; err != nil {
		b.Fatal(err)
	}
	if err := p.fetch("/debug/pprof/allocs", ".allocs.pprof", 30*time.Second); err != nil {
		b.Fatal(err)
	}
	b.Logf("profiles of palyrad: %s.{cpu,allocs,allocs-base}.pprof", p.prefix)
}

func (p *profiling) fetch(path, suffix string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.base+path, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("pprof %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("pprof %s: %s", path, resp.Status)
	}
	if err := os.MkdirAll(profileDir(), 0o755); err != nil {
		return err
	}
	f, err := os.Create(p.prefix + suffix)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return fmt.Errorf("pprof %s: %w", path, err)
	}
	return f.Close()
}
