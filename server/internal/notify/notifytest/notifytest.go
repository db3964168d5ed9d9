// Package notifytest starts the notification listener of a test replica.
package notifytest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/palyra/palyra/internal/eventually"
	"github.com/palyra/palyra/server/internal/notify"
)

// Start runs a listener on channels of the database at url until the test ends, and
// returns it once it listens.
func Start(t testing.TB, url string, channels ...string) *notify.Listener {
	t.Helper()
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	l := notify.New(notify.Options{Config: cfg, Channels: channels})
	ctx, cancel := context.WithCancel(context.Background())
	var bg sync.WaitGroup
	bg.Go(func() { l.Run(ctx) })
	t.Cleanup(func() {
		cancel()
		bg.Wait()
	})
	select {
	case <-l.Ready():
	case <-time.After(eventually.Deadline):
		t.Fatal("the notification listener is not ready")
	}
	return l
}
