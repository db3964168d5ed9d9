package daemon_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/pflag"

	"github.com/palyra/palyra/internal/eventually"
	"github.com/palyra/palyra/server/internal/config"
	"github.com/palyra/palyra/server/internal/daemon"
	"github.com/palyra/palyra/server/internal/store/storetest"
)

// TestStartUndoesWhatItStartedWhenAStepFails makes the listener fail (its address is
// taken), a step after the database, the background work and the notification
// listener have started: Start returns the error, and none of their connections to
// the database stays open.
func TestStartUndoesWhatItStartedWhenAStepFails(t *testing.T) {
	t.Parallel()
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	dbURL := storetest.URL(t)
	fs := pflag.NewFlagSet("palyrad", pflag.ContinueOnError)
	getenv := func(string) string { return "" }
	config.RegisterFlags(fs, getenv)
	if err := fs.Parse([]string{"--listen", taken.Addr().String(), "--database-url", dbURL, "--data-dir", t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(fs, getenv)
	if err != nil {
		t.Fatal(err)
	}

	d, err := daemon.Start(t.Context(), cfg, slogDiscard())
	if err == nil {
		_ = d.Stop(context.Background())
		t.Fatal("Start succeeded on a listen address that is taken")
	}
	if !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("Start: %v, want the listener's error", err)
	}

	// The database saw the daemon: its migrations, the owner and the CA are there.
	conn, err := pgx.Connect(t.Context(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var cas int
	if err := conn.QueryRow(t.Context(), "SELECT count(*) FROM certificate_authorities").Scan(&cas); err != nil || cas != 1 {
		t.Fatalf("certificate authorities: %d (%v), want the one Start created before the listener", cas, err)
	}
	// The pool and the notification listener's own connection are closed. (The
	// server notices a closed connection a moment later: wait for it.)
	others := func() int {
		var n int
		err := conn.QueryRow(t.Context(),
			"SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()").Scan(&n)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	eventually.Within(time.Minute).True(t, "the daemon's database connections closed", func() bool { return others() == 0 })
}
