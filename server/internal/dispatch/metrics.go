package dispatch

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the node runtime's Prometheus metrics.
type metrics struct {
	// states is the number of dispatches in each state that has not ended (all
	// replicas), refreshed periodically.
	states *prometheus.GaugeVec
	// endings counts the dispatches this replica ended, by state and by whom ("node" for
	// a reported result, "deadline" for the sweeper, "abandoned" for Abandon).
	endings *prometheus.CounterVec
	// duration is the time from creation to a node's result, by state.
	duration *prometheus.HistogramVec
	// messages counts the messages nodes sent this replica, by kind.
	messages *prometheus.CounterVec
	// byKind are the counters of messages, by kind.
	byKind map[string]prometheus.Counter
}

// The kinds of node messages counted.
const (
	msgHeartbeat           = "heartbeat"
	msgAccepted            = "accepted"
	msgOutput              = "output"
	msgResult              = "result"
	msgCapabilitiesChanged = "capabilities_changed"
)

// newMetrics registers the metrics, and a gauge of the nodes attached to this replica.
// A nil registerer keeps them unregistered.
func newMetrics(reg prometheus.Registerer, sessions *registry) (*metrics, error) {
	m := &metrics{
		states: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "palyra_dispatches",
			Help: "Dispatches that have not ended, in each state, across every replica.",
		}, []string{"state"}),
		endings: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "palyra_dispatches_ended_total",
			Help: "Dispatches this replica ended, by state and by whom: node (its result), deadline (the sweeper) or abandoned (its caller gave up on its node).",
		}, []string{"state", "by"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "palyra_dispatch_duration_seconds",
			Help:    "Time from a dispatch's creation to its node's result, by state.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2.5, 14),
		}, []string{"state"}),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "palyra_node_messages_total",
			Help: "Messages attached nodes sent this replica after their hello, by kind.",
		}, []string{"kind"}),
		byKind: map[string]prometheus.Counter{},
	}
	for _, k := range []string{msgHeartbeat, msgAccepted, msgOutput, msgResult, msgCapabilitiesChanged} {
		m.byKind[k] = m.messages.WithLabelValues(k)
	}
	if reg == nil {
		return m, nil
	}
	attached := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "palyra_nodes_attached",
		Help: "Nodes with an Attach stream open on this replica.",
	}, func() float64 { return float64(sessions.count()) })
	for _, c := range []prometheus.Collector{m.states, m.endings, m.duration, m.messages, attached} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("dispatch: metrics: %w", err)
		}
	}
	return m, nil
}

// received counts a message of a node.
func (m *metrics) received(kind string) { m.byKind[kind].Inc() }

// ended counts a dispatch this replica ended.
func (m *metrics) ended(state State, by string) { m.endings.WithLabelValues(string(state), by).Inc() }

// reported records a node's result.
func (m *metrics) reported(state State, took time.Duration) {
	m.ended(state, "node")
	m.duration.WithLabelValues(string(state)).Observe(took.Seconds())
}

// refreshStates counts the dispatches in each state that has not ended.
func (m *metrics) refreshStates(ctx context.Context, b db) {
	counts, err := b.countActive(ctx)
	if err != nil {
		return // the next refresh tries again; the sweeper logs database failures
	}
	for _, state := range []State{StateQueued, StateSent, StateRunning} {
		m.states.WithLabelValues(string(state)).Set(float64(counts[state]))
	}
}
