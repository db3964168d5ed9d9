package main

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/palyra/palyra/internal/eventually"
	"github.com/palyra/palyra/server/internal/store/storetest"
)

// TestAcceptErrorsAreWarnedRateLimited runs palyrad as a process and takes its spare
// file descriptors away (prlimit below what it holds), as when descriptors run out, then
// connects: accepting fails with EMFILE again and again (http.Server retries with a
// backoff and logs each retry at debug level), and palyrad warns once, not once per
// failure. With its limit back, it serves again.
func TestAcceptErrorsAreWarnedRateLimited(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	listen := "127.0.0.1:" + strconv.Itoa(freePort(t))
	d := startDaemonProcess(t, "--listen", listen, "--data-dir", dataDir, "--database-url", storetest.URL(t), "--log-level", "debug")
	pid := d.cmd.Process.Pid

	var limit unix.Rlimit
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, nil, &limit); err != nil {
		t.Fatal(err)
	}
	fds, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		t.Fatal(err)
	}
	none := unix.Rlimit{Cur: uint64(len(fds)), Max: limit.Max}
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &none, nil); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", listen) // completed by the kernel, waiting to be accepted
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	retry := regexp.MustCompile(`level=DEBUG msg="accepting a connection failed; retrying" err=".*too many open files"`)
	warning := regexp.MustCompile(`level=WARN msg="accepting a connection failed; retrying" err=".*too many open files"`)
	eventually.True(t, "8 failed accepts in the log", func() bool { return len(retry.FindAllString(d.stderr.String(), -1)) >= 8 })
	log := d.stderr.String()
	// A warning after the first comes at least 10 s later, in which the backoff (at
	// most 1 s) retries at least 9 times. Real time is what this tests: palyrad runs as
	// a process, and the backoff is the listener's.
	retries, warnings := len(retry.FindAllString(log, -1)), len(warning.FindAllString(log, -1))
	if warnings == 0 || warnings*4 > retries {
		t.Fatalf("%d warnings for %d failed accepts, want one per 10 s:\n%s", warnings, retries, log)
	}

	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &limit, nil); err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dataDir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}, Timeout: time.Minute}
	res, err := hc.Get("https://" + listen + "/metrics")
	if err != nil {
		t.Fatalf("with its open-file limit back: %v", err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if m := regexp.MustCompile(`palyra_listener_accept_errors_total (\d+)`).FindSubmatch(body); m == nil || string(m[1]) == "0" {
		t.Errorf("metrics: %s", strings.Join(regexp.MustCompile(`(?m)^palyra_listener.*$`).FindAllString(string(body), -1), "\n"))
	}
}
