package bench

import (
	"os"
	"path/filepath"
	"testing"
)

// masterKeyFile is the master key palyrad keeps in its data directory
// (server/internal/identity.MasterKeyFile, which this package may not import).
const masterKeyFile = "master.key"

// startReplica starts a second palyrad on the database of a first one, whose data
// directory is firstDataDir, the way an operator adds a replica: a data directory of
// its own holding a copy of the first one's master key, which unseals the CA the
// database holds. It is stopped when the benchmark ends.
func startReplica(tb testing.TB, dbURL, firstDataDir string) *daemon {
	tb.Helper()
	dir := tb.TempDir()
	copyMasterKey(tb, firstDataDir, dir)
	return startDaemon(tb, dbURL, dir)
}

// copyMasterKey copies the master key of the data directory from to the data directory
// to, which makes to a replica's.
func copyMasterKey(tb testing.TB, from, to string) {
	tb.Helper()
	key, err := os.ReadFile(filepath.Join(from, masterKeyFile))
	if err != nil {
		tb.Fatalf("read the first replica's master key: %v", err)
	}
	if err := os.WriteFile(filepath.Join(to, masterKeyFile), key, 0o600); err != nil {
		tb.Fatal(err)
	}
}
