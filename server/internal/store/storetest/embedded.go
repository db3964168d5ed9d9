package storetest

import (
	"os"
	"testing"
)

// EmbeddedDataDir returns a data directory for a palyrad on its embedded database,
// removed when the test ends. The embedded cluster runs as the postgres user when tests
// run as root, so the directory must be reachable by it (t.TempDir() is not, mode
// 0700), and its path short (the cluster's Unix socket lives under it).
func EmbeddedDataDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "palyra-emb-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}
