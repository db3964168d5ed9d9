package audit

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"
)

// The limits of summaries.
const (
	// summaryWindow is the length of a summary's window: one summary per remote
	// address, principal and code in each.
	summaryWindow = time.Minute
	// maxSummaryKeys bounds the summaries of one window; the refusals beyond go into
	// one summary of the remote address overflowAddress.
	maxSummaryKeys = 10000
	// overflowAddress is the remote address of the summary of the addresses beyond
	// maxSummaryKeys.
	overflowAddress = "*"
	// maxSummaryProcedures bounds the procedures a summary names.
	maxSummaryProcedures = 64
)

// window is the summaries of one summaryWindow, by its start's index.
type window map[summaryKey]*summary

// summaryKey is what a summary is per.
type summaryKey struct {
	remote, principal, code string
}

// summary is the refusals of one key in one window.
type summary struct {
	count       int64
	first, last time.Time
	procedures  map[string]bool
}

// Refused counts a refusal that does not get an event of its own: one a rate limit
// turned away, or a TLS handshake refused for its client certificate. e's Time is when
// it happened (zero means now), Principal, Code and RemoteAddress what it is summarised
// by, Procedure what it called; the rest is not kept. The summary is appended when its
// window ends (Run), or when the Log stops.
func (l *Log) Refused(e Event) {
	if e.Time.IsZero() {
		e.Time = l.now()
	}
	idx := e.Time.UnixNano() / int64(summaryWindow)
	k := summaryKey{remote: e.RemoteAddress, principal: e.Principal, code: e.Code}
	l.omu.Lock()
	defer l.omu.Unlock()
	w := l.windows[idx]
	if w == nil {
		w = window{}
		l.windows[idx] = w
	}
	s := w[k]
	if s == nil {
		if len(w) >= l.summaryKeys {
			k.remote = overflowAddress
			s = w[k]
		}
		if s == nil {
			s = &summary{first: e.Time, last: e.Time, procedures: map[string]bool{}}
			w[k] = s
		}
	}
	s.count++
	s.first, s.last = minTime(s.first, e.Time), maxTime(s.last, e.Time)
	if len(s.procedures) < maxSummaryProcedures {
		s.procedures[e.Procedure] = true
	}
}

// flush appends the summaries of the windows that ended, or of every window when all
// is true; the events that fail for want of the database are deferred.
func (l *Log) flush(ctx context.Context, all bool) error {
	end := l.now().UnixNano() / int64(summaryWindow) // the current window, not ended
	var events []Event
	l.omu.Lock()
	for _, idx := range slices.Sorted(maps.Keys(l.windows)) {
		if idx >= end && !all {
			continue
		}
		for k, s := range l.windows[idx] {
			events = append(events, Event{
				Time: s.last, Principal: k.principal, Outcome: Failure, Code: k.code, RemoteAddress: k.remote,
				Summary: &Summary{Count: s.count, First: s.first, Procedures: slices.Collect(maps.Keys(s.procedures))},
			})
		}
		delete(l.windows, idx)
	}
	l.omu.Unlock()
	slices.SortFunc(events, func(a, b Event) int {
		return cmp.Or(a.Summary.First.Compare(b.Summary.First), cmp.Compare(a.RemoteAddress, b.RemoteAddress),
			cmp.Compare(a.Principal, b.Principal), cmp.Compare(a.Code, b.Code))
	})
	recs := make([]Record, 0, len(events))
	for _, e := range events {
		r, err := l.record(newID(), e)
		if err != nil {
			return fmt.Errorf("audit: summary: %w", err)
		}
		recs = append(recs, r)
	}
	var errs []error
	for _, w := range l.write(ctx, recs) {
		if w.err != nil && !errors.Is(w.err, ErrDeferred) {
			l.log.Error("audit summary lost", "remote", w.rec.RemoteAddress, "refusals", w.rec.Summary.Count, "err", w.err)
		}
		errs = append(errs, w.err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("audit: summaries: %w", err)
	}
	return nil
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
