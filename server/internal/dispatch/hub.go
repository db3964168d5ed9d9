package dispatch

import "sync"

// hub wakes the watchers of a dispatch (WatchDispatch, ExecuteCapability) when it
// changed or has new output, on this replica.
type hub struct {
	mu       sync.Mutex // guards watchers
	watchers map[string]map[chan struct{}]bool
}

func newHub() *hub { return &hub{watchers: map[string]map[chan struct{}]bool{}} }

// watch returns a channel that receives (coalesced) signals for a dispatch id, and a
// function that ends the watch.
func (h *hub) watch(id string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	h.mu.Lock()
	if h.watchers[id] == nil {
		h.watchers[id] = map[chan struct{}]bool{}
	}
	h.watchers[id][ch] = true
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

// signal wakes the watchers of id.
func (h *hub) signal(id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range h.watchers[id] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// signalAll wakes every watcher.
func (h *hub) signalAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, set := range h.watchers {
		for ch := range set {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
}
