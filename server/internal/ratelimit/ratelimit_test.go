package ratelimit

import (
	"testing"
	"time"
)

func TestKeyed(t *testing.T) {
	t.Parallel()
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	l := NewKeyed(Options{Burst: 3, PerMinute: 6, Now: func() time.Time { return now }}) // 3, then one every 10 s
	for i := range 3 {
		if _, ok := l.Take("a"); !ok {
			t.Fatalf("take %d refused within the burst", i)
		}
	}
	wait, ok := l.Take("a")
	if ok || wait != 10*time.Second {
		t.Fatalf("after the burst: ok %v, wait %v; want refused, 10s", ok, wait)
	}
	if _, ok := l.Peek("b"); !ok {
		t.Error("another key is limited too")
	}
	now = now.Add(10 * time.Second)
	if _, ok := l.Peek("a"); !ok {
		t.Error("not refilled after 10 s")
	}
	if _, ok := l.Take("a"); !ok {
		t.Error("take after the refill refused")
	}
	// Spend counts events after the fact, never below empty.
	l.Spend("c")
	l.Spend("c")
	l.Spend("c")
	l.Spend("c")
	if wait, ok := l.Peek("c"); ok || wait != 10*time.Second {
		t.Errorf("after four spends of a burst of three: ok %v, wait %v", ok, wait)
	}
	if Host("10.0.0.1:443") != "10.0.0.1" || Host("[::1]:1") != "::1" || Host("plain") != "plain" {
		t.Error("Host")
	}
}

func TestSweep(t *testing.T) {
	t.Parallel()
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	l := NewKeyed(Options{Burst: 1, PerMinute: 60, Now: func() time.Time { return now }})
	for i := range sweepAt {
		l.Take(string(rune(i)))
	}
	now = now.Add(time.Minute)
	l.Take("new") // over the limit of keys: the refilled ones are forgotten
	if len(l.buckets) != 1 {
		t.Errorf("%d keys kept after the sweep, want 1", len(l.buckets))
	}
}
