package capability

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"runtime"
	"testing"
	"testing/fstest"
)

func TestSystemInfoHost(t *testing.T) {
	t.Parallel()
	c := newSystemInfo(procFS(), os.Hostname)
	res, err := c.Run(t.Context(), json.RawMessage(`{}`), newRecorder())
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if res.Failed || res.ExitCode != 0 {
		t.Errorf("result = %+v, want success", res)
	}
	var fields map[string]any
	if err := json.Unmarshal(res.JSON, &fields); err != nil {
		t.Fatalf("result %s: %v", res.JSON, err)
	}
	want := []string{"hostname", "os", "arch", "cpus", "go_version"}
	if _, err := os.Stat("/proc/meminfo"); err == nil {
		want = append(want, "kernel", "memory_bytes", "uptime_seconds")
	}
	for _, k := range want {
		if v, ok := fields[k]; !ok || v == "" || v == 0.0 {
			t.Errorf("result %s: %s missing or empty", res.JSON, k)
		}
	}
	var info SystemInfo
	if err := json.Unmarshal(res.JSON, &info); err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	if info.OS != runtime.GOOS || info.Arch != runtime.GOARCH || info.GoVersion != runtime.Version() ||
		info.CPUs != runtime.NumCPU() || info.Hostname != host {
		t.Errorf("result %+v does not describe this host", info)
	}
}

func TestSystemInfoProc(t *testing.T) {
	t.Parallel()
	hostname := func() (string, error) { return "node-1", nil }
	base := SystemInfo{Hostname: "node-1", OS: runtime.GOOS, Arch: runtime.GOARCH, CPUs: runtime.NumCPU(), GoVersion: runtime.Version()}
	full := base
	full.Kernel, full.MemoryBytes, full.UptimeSeconds = "6.1.0-test", 16318412*1024, 350735
	tests := map[string]struct {
		proc fstest.MapFS
		want SystemInfo
	}{
		"linux": {
			proc: fstest.MapFS{
				"sys/kernel/osrelease": {Data: []byte("6.1.0-test\n")},
				"meminfo":              {Data: []byte("MemTotal:       16318412 kB\nMemFree:         1000 kB\n")},
				"uptime":               {Data: []byte("350735.97 234388.90\n")},
			},
			want: full,
		},
		"no proc": {proc: fstest.MapFS{}, want: base},
		"garbage": {
			proc: fstest.MapFS{
				"meminfo": {Data: []byte("MemFree: 1 kB\nMemTotal: lots\n")},
				"uptime":  {Data: []byte("-3 x")},
			},
			want: base,
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			res, err := newSystemInfo(tt.proc, hostname).Run(t.Context(), nil, nil)
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			var got SystemInfo
			if err := json.Unmarshal(res.JSON, &got); err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("result %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestSystemInfoRefusesInput(t *testing.T) {
	t.Parallel()
	c := newSystemInfo(fstest.MapFS{}, os.Hostname)
	for name, input := range map[string]string{
		"property":  `{"verbose":true}`,
		"array":     `[]`,
		"malformed": `{`,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := c.Run(t.Context(), json.RawMessage(input), nil)
			wantRefused(t, err, SystemInfoName)
		})
	}
}

func TestSystemInfoCancelled(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := newSystemInfo(fstest.MapFS{}, os.Hostname).Run(ctx, nil, nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want context.Canceled", err)
	}
}
