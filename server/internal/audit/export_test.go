package audit

import (
	"context"
	"time"

	"github.com/palyra/palyra/server/internal/store"
)

// NewWithBatch is New with Verify reading batch events per query, so that tests cross
// batch boundaries with a handful of events.
func NewWithBatch(s *store.Store, now func() time.Time, batch int32) *Log {
	l := New(Options{Store: s, Now: now})
	l.batch = batch
	return l
}

// PageLimit exposes the rules of Filter.Limit, whose upper clamp would otherwise take a
// thousand events to observe.
var PageLimit = pageLimit

// MaxFieldBytes is the bound on each stored string.
const MaxFieldBytes = maxFieldBytes

// WithAppendAttempts bounds the attempts to write one batch to n and returns l. With
// n = 1, every batch takes the last attempt's path: the head read and the insert in one
// transaction under the append lock.
func WithAppendAttempts(l *Log, n int) *Log {
	l.attempts = n
	return l
}

// WithSummaryKeys bounds the summaries of a window to n and returns l.
func WithSummaryKeys(l *Log, n int) *Log {
	l.summaryKeys = n
	return l
}

// The timing of summaries and the drainer.
const (
	SummaryWindow = summaryWindow
	OrphanGrace   = orphanGrace
)

// Die ends the session holding l's replica lock, if any, as the death of its process
// would.
func Die(l *Log) error {
	if l.owner == nil {
		return nil
	}
	return l.owner.Close(context.Background())
}
