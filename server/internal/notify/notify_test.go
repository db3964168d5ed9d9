package notify

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/palyra/palyra/internal/eventually"
	"github.com/palyra/palyra/server/internal/store/storetest"
)

// testBundle is a listener running on a database of its own, and a second connection
// that sends notifications and ends the listener's session.
type testBundle struct {
	l     *Listener
	admin *pgx.Conn
}

// setup starts a listener on channels "alpha" and "beta" with a subscription to each
// of channels, made before Run as the daemon's parts make theirs; its connection names
// itself notify-test, so that the test can find its session.
func setup(t *testing.T, channels ...string) (*testBundle, []*Subscription) {
	t.Helper()
	url := storetest.URL(t)
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["application_name"] = "notify-test"
	l := New(Options{Config: cfg, Channels: []string{"alpha", "beta"}})
	subs := make([]*Subscription, len(channels))
	for i, ch := range channels {
		if subs[i], err = l.Subscribe(ch); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	select {
	case <-l.Ready():
	case <-time.After(eventually.Deadline):
		t.Fatal("the listener is not ready")
	}
	admin, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close(context.Background()) })
	return &testBundle{l: l, admin: admin}, subs
}

// notify sends payload on channel from the other connection.
func (b *testBundle) notify(t *testing.T, channel, payload string) {
	t.Helper()
	if _, err := b.admin.Exec(t.Context(), "select pg_notify($1, $2)", channel, payload); err != nil {
		t.Fatal(err)
	}
}

// next returns the subscription's next event.
func next(t *testing.T, s *Subscription) Event {
	t.Helper()
	select {
	case e := <-s.Events():
		return e
	case <-time.After(eventually.Deadline):
		t.Fatal("no event")
		return Event{}
	}
}

// wantEvents checks the subscription's next events.
func wantEvents(t *testing.T, s *Subscription, want ...Event) {
	t.Helper()
	for i, w := range want {
		if e := next(t, s); e != w {
			t.Fatalf("event %d of %s is %+v, want %+v", i, s.channel, e, w)
		}
	}
}

var reset = Event{Reset: true}

func TestNotificationsReachTheSubscribersOfTheirChannel(t *testing.T) {
	t.Parallel()
	b, subs := setup(t, "alpha", "alpha", "beta")
	alpha, alpha2, beta := subs[0], subs[1], subs[2]
	if _, err := b.l.Subscribe("gamma"); err == nil || !strings.Contains(err.Error(), `"gamma"`) {
		t.Errorf("a subscription to a channel the listener does not listen on: %v", err)
	}
	if !b.l.Listening() {
		t.Error("a ready listener does not say it listens")
	}
	b.notify(t, "alpha", "a-1")
	b.notify(t, "beta", "b-1")
	b.notify(t, "alpha", "a-2")
	// Each connection starts with a Reset; then the channel's own notifications, in order.
	wantEvents(t, alpha, reset, Event{Payload: "a-1"}, Event{Payload: "a-2"})
	wantEvents(t, alpha2, reset, Event{Payload: "a-1"}, Event{Payload: "a-2"})
	wantEvents(t, beta, reset, Event{Payload: "b-1"})

	// A closed subscription gets nothing more; the others still do.
	alpha2.Close()
	b.notify(t, "alpha", "a-3")
	wantEvents(t, alpha, Event{Payload: "a-3"})
	select {
	case e := <-alpha2.Events():
		t.Errorf("a closed subscription received %+v", e)
	default:
	}
}

// TestListenerReconnects ends the listener's session as a restart or a failover of
// PostgreSQL would: it connects again, says Reset (what was sent meanwhile is lost),
// and delivers again.
func TestListenerReconnects(t *testing.T) {
	t.Parallel()
	b, subs := setup(t, "alpha")
	alpha := subs[0]
	wantEvents(t, alpha, reset)
	var ended bool
	if err := b.admin.QueryRow(t.Context(), "select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'notify-test' and datname = current_database()").Scan(&ended); err != nil || !ended {
		t.Fatalf("terminate the listener's session: %v, %v", ended, err)
	}
	wantEvents(t, alpha, reset)
	eventually.True(t, "the listener listens again", b.l.Listening)
	b.notify(t, "alpha", "after")
	wantEvents(t, alpha, Event{Payload: "after"})
}

// TestASlowSubscriberGetsAReset fills a subscriber's buffer: the listener drops what
// does not fit rather than wait, and the subscriber learns of the loss by a Reset
// before the next notification.
func TestASlowSubscriberGetsAReset(t *testing.T) {
	t.Parallel()
	b, subs := setup(t, "alpha", "beta")
	alpha, beta := subs[0], subs[1]
	wantEvents(t, alpha, reset)
	wantEvents(t, beta, reset)
	const sent = subscriberBuffer + 44
	if _, err := b.admin.Exec(t.Context(), "select pg_notify('alpha', i::text) from generate_series(1, $1::int) i", sent); err != nil {
		t.Fatal(err)
	}
	// One connection delivers in order: once beta has this, alpha was offered all it
	// was sent, and kept what fit.
	b.notify(t, "beta", "alpha was offered all")
	wantEvents(t, beta, Event{Payload: "alpha was offered all"})
	if n := len(alpha.Events()); n != subscriberBuffer {
		t.Fatalf("%d events buffered, want %d", n, subscriberBuffer)
	}
	for i := 1; i <= subscriberBuffer; i++ {
		wantEvents(t, alpha, Event{Payload: fmt.Sprint(i)})
	}
	b.notify(t, "alpha", "after")
	wantEvents(t, alpha, reset, Event{Payload: "after"})
}
