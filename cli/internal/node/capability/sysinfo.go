package capability

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"runtime"
	"strconv"
	"strings"
)

// SystemInfoName is the name of the system.info capability.
const SystemInfoName = "system.info"

// systemInfoSchema is system.info's input: an empty object.
const systemInfoSchema = `{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "system.info input",
  "type": "object",
  "additionalProperties": false
}`

// SystemInfo is system.info's result. Fields the system does not tell (outside Linux,
// or without /proc) are left out.
type SystemInfo struct {
	// Hostname is the host's name.
	Hostname string `json:"hostname"`
	// OS is runtime.GOOS, e.g. "linux".
	OS string `json:"os"`
	// Arch is runtime.GOARCH, e.g. "amd64".
	Arch string `json:"arch"`
	// Kernel is the kernel release (uname -r), from /proc/sys/kernel/osrelease.
	Kernel string `json:"kernel,omitempty"`
	// CPUs is the number of logical CPUs the agent may use.
	CPUs int `json:"cpus"`
	// MemoryBytes is the total memory, from /proc/meminfo.
	MemoryBytes uint64 `json:"memory_bytes,omitempty"`
	// UptimeSeconds is the time since boot, from /proc/uptime.
	UptimeSeconds uint64 `json:"uptime_seconds,omitempty"`
	// GoVersion is the Go version the agent was built with.
	GoVersion string `json:"go_version"`
}

// systemInfo is the system.info capability: facts about the host. It is always
// available and runs nothing.
type systemInfo struct {
	proc     fs.FS                  // the proc file system, e.g. os.DirFS("/proc")
	hostname func() (string, error) // os.Hostname
}

var _ Capability = (*systemInfo)(nil)

// newSystemInfo returns system.info reading the proc file system from proc.
func newSystemInfo(proc fs.FS, hostname func() (string, error)) *systemInfo {
	return &systemInfo{proc: proc, hostname: hostname}
}

// Describe implements Capability.
func (s *systemInfo) Describe() Descriptor {
	return Descriptor{
		Name:        SystemInfoName,
		Description: "Facts about the node's host: hostname, OS, architecture, kernel, CPUs, memory, uptime.",
		InputSchema: json.RawMessage(systemInfoSchema),
		Available:   true,
	}
}

// Run implements Capability.
func (s *systemInfo) Run(ctx context.Context, input json.RawMessage, _ Output) (Result, error) {
	var in struct{}
	if err := decodeInput(SystemInfoName, input, &in); err != nil {
		return Result{}, err
	}
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	info := SystemInfo{
		OS:        runtime.GOOS,
		Arch:      runtime.GOARCH,
		CPUs:      runtime.NumCPU(),
		GoVersion: runtime.Version(),
	}
	h, err := s.hostname()
	if err != nil {
		return Result{}, fmt.Errorf("system.info: hostname: %w", err)
	}
	info.Hostname = h
	if b, err := fs.ReadFile(s.proc, "sys/kernel/osrelease"); err == nil {
		info.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := fs.ReadFile(s.proc, "meminfo"); err == nil {
		info.MemoryBytes = parseMemTotal(b)
	}
	if b, err := fs.ReadFile(s.proc, "uptime"); err == nil {
		info.UptimeSeconds = parseUptime(b)
	}
	b, err := json.Marshal(info)
	if err != nil {
		return Result{}, fmt.Errorf("system.info: encode the result: %w", err)
	}
	return Result{JSON: b}, nil
}

// parseMemTotal returns MemTotal of /proc/meminfo in bytes ("MemTotal: 16318412 kB"),
// or 0.
func parseMemTotal(b []byte) uint64 {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			return 0
		}
		n, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return 0
		}
		if len(f) > 1 && f[1] == "kB" {
			n *= 1024
		}
		return n
	}
	return 0
}

// parseUptime returns the first number of /proc/uptime ("350735.47 234388.90") in whole
// seconds, or 0.
func parseUptime(b []byte) uint64 {
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil || v < 0 {
		return 0
	}
	return uint64(v)
}

// procFS returns the proc file system of the host.
func procFS() fs.FS { return os.DirFS("/proc") }
