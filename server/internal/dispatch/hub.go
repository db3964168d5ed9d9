package dispatch

import "sync"

// hub wakes the watchers of a dispatch (WatchDispatch, ExecuteCapability) when it
// changed or has new output, on this replica.
type hub struct {
	mu sync.Mutex // guards watchers and ending
	// watchers holds, by dispatch id, each watcher's channel and whether it waits only
	// for the dispatch's end.
	watchers map[string]map[chan *Dispatch]bool
	// ending are the dispatches a session of this replica is ending: it hands the ended
	// row over (end), and the notification of the end, which may come first, is not
	// passed on to have the waiters read the row themselves.
	ending map[string]int
}

// newHub returns a hub without watchers.
func newHub() *hub {
	return &hub{watchers: map[string]map[chan *Dispatch]bool{}, ending: map[string]int{}}
}

// ends notes that a session of this replica is about to end the dispatches ids; done
// must follow, after end for those that ended.
func (h *hub) ends(ids []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, id := range ids {
		h.ending[id]++
	}
}

// done undoes ends.
func (h *hub) done(ids []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, id := range ids {
		if h.ending[id]--; h.ending[id] <= 0 {
			delete(h.ending, id)
		}
	}
}

// watch returns a channel that receives (coalesced) signals for a dispatch id: every
// change and new output, or only its end when endOnly. A signal is the dispatch as it
// ended when the session that ended it runs on this replica (hub.end), else nil: read
// it again. stop ends the watch.
func (h *hub) watch(id string, endOnly bool) (signals <-chan *Dispatch, stop func()) {
	ch := make(chan *Dispatch, 1)
	h.mu.Lock()
	if h.watchers[id] == nil {
		h.watchers[id] = map[chan *Dispatch]bool{}
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
	if ended && h.ending[id] > 0 {
		return
	}
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

// waited reports whether a watcher on this replica waits for id (the copy of its
// output handed with the ended row is made only then).
func (h *hub) waited(id string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.watchers[id]) > 0
}

// end hands every watcher of d the dispatch as it ended (committed), replacing a
// signal still waiting in its channel, so that they need not read it again.
func (h *hub) end(d *Dispatch) {
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
