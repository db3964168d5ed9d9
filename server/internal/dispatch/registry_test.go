package dispatch

import (
	"errors"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
)

// ended reports whether s ended, and why.
func ended(s *session) (bool, error) {
	select {
	case <-s.done:
		return true, s.cause
	default:
		return false, nil
	}
}

// TestLateNotificationOfAnOlderSessionEndsNothing checks that a notification naming a
// device's older session, delivered after the device attached again, leaves the newer
// session alone, while one naming a newer session ends it.
func TestLateNotificationOfAnOlderSessionEndsNothing(t *testing.T) {
	r := newRegistry()
	now := time.Now()
	older := newSession("dev", ulid.Make().String(), now)
	newer := newSession("dev", ulid.Make().String(), now)
	if err := r.add(older); err != nil {
		t.Fatal(err)
	}
	if err := r.add(newer); err != nil {
		t.Fatal(err)
	}
	if done, why := ended(older); !done || !errors.Is(why, errReplaced) {
		t.Fatalf("the older session: ended %v (%v), want replaced", done, why)
	}

	r.replaced("dev", older.id) // the older session's attach, notified late
	r.replaced("dev", newer.id) // its own
	r.replaced("dev", "")       // a detach
	if done, why := ended(newer); done {
		t.Fatalf("the newer session ended on a stale notification: %v", why)
	}

	r.replaced("dev", ulid.Make().String()) // a newer attach, on another replica
	if done, why := ended(newer); !done || !errors.Is(why, errReplaced) {
		t.Fatalf("a newer attach elsewhere: ended %v (%v), want replaced", done, why)
	}
}
