package dispatch

import (
	"sync"

	"github.com/palyra/palyra/gen/dbsqlc"
)

// hub wakes the watchers of a dispatch (WatchDispatch, ExecuteCapability) when it
// changed or has new output, on this replica.
type hub struct {
	mu sync.Mutex // guards watchers
	// watchers holds, by dispatch id, each watcher's channel and whether it waits only
	// for the dispatch's end.
	watchers map[string]map[chan *dbsqlc.Dispatch]bool
}

// newHub returns a hub without watchers.
func newHub() *hub { return &hub{watchers: map[string]map[chan *dbsqlc.Dispatch]bool{}} }

// watch returns a channel that receives (coalesced) signals for a dispatch id: every
// change and new output, or only its end when endOnly. A signal is the dispatch as it
// ended when the session that ended it runs on this replica (hub.end), else nil: read
// it again. stop ends the watch.
func (h *hub) watch(id string, endOnly bool) (signals <-chan *dbsqlc.Dispatch, stop func()) {
	ch := make(chan *dbsqlc.Dispatch, 1)
	h.mu.Lock()
	if h.watchers[id] == nil {
		h.watchers[id] = map[chan *dbsqlc.Dispatch]bool{}
	}
	h.watchers[id][ch] = endOnly
	h.mu.Unlock()
	return ch, func() {
		h.mu.Lock()
		delete(h.watchers[id], ch)
		if len(h.watchers[id]) == 0 {
			delete(h.watchers, id)
		}
		h.mu.Unlock()
	}
}

// signal wakes the watchers of id: all of them when the dispatch ended (or may have:
// ended is true when the change is not known), else those that follow every change.
func (h *hub) signal(id string, ended bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch, endOnly := range h.watchers[id] {
		if endOnly && !ended {
			continue
		}
		select {
		case ch <- nil:
		default:
		}
	}
}

// end hands every watcher of d the dispatch as it ended (committed), replacing a
// signal still waiting in its channel, so that they need not read it again.
func (h *hub) end(d *dbsqlc.Dispatch) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range h.watchers[d.ID] {
		select {
		case <-ch: // only hub methods send, under mu: the channel is now empty
		default:
		}
		ch <- d
	}
}

// signalAll wakes every watcher.
func (h *hub) signalAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, set := range h.watchers {
		for ch := range set {
			select {
			case ch <- nil:
			default:
			}
		}
	}
}
