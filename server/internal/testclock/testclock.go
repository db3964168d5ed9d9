// Package testclock is the settable clock the tests give the code they test as its
// time source (the func() time.Time of its options).
package testclock

import (
	"sync/atomic"
	"time"
)

// Clock is a time source that moves only when told to; safe for concurrent use.
type Clock struct{ ns atomic.Int64 }

// New returns a clock reading t.
func New(t time.Time) *Clock {
	c := &Clock{}
	c.Set(t)
	return c
}

// Now is the time, in UTC: the func() time.Time the options take.
func (c *Clock) Now() time.Time { return time.Unix(0, c.ns.Load()).UTC() }

// Set moves the clock to t.
func (c *Clock) Set(t time.Time) { c.ns.Store(t.UnixNano()) }

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }
