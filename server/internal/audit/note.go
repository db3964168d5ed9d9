package audit

import (
	"context"
	"sync"
)

// Note is how a handler tells the access interceptor what a call acted on: the
// interceptor puts a Note in the call's context with WithNote, the handler calls
// SetTarget, and the interceptor reads Target when it appends the call's event. A call
// that changes state names its target before its first change: the outbox row written
// with that change (Log.Begin) records the target as it is then.
//
// A Note is safe for concurrent use: a streaming handler may set the target from
// another goroutine than the one the interceptor reads it from. The zero value is an
// empty note; a nil *Note reads as empty.
type Note struct {
	mu     sync.Mutex // guards the following
	target string
}

// noteKey is the context key of the Note.
type noteKey struct{}

// WithNote returns a context carrying a new, empty Note, and the Note. A Note set
// further in (a nested WithNote) hides this one from SetTarget.
func WithNote(ctx context.Context) (context.Context, *Note) {
	n := new(Note)
	return context.WithValue(ctx, noteKey{}, n), n
}

// noteOf returns the Note ctx carries, or nil.
func noteOf(ctx context.Context) *Note {
	n, _ := ctx.Value(noteKey{}).(*Note)
	return n
}

// SetTarget records target ("token:<id>", "flag:compat_api", ...) in the Note that ctx
// carries, replacing what was there. It does nothing when ctx carries no Note, so
// handlers call it without knowing whether the call is audited.
func SetTarget(ctx context.Context, target string) {
	n := noteOf(ctx)
	if n == nil {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.target = target
}

// Target returns the last target SetTarget recorded, or "".
func (n *Note) Target() string {
	if n == nil {
		return ""
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.target
}
