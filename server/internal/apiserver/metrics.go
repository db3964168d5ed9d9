package apiserver

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics is palyrad's Prometheus registry and the interceptor that measures RPCs.
type Metrics struct {
	registry *prometheus.Registry
	handled  *prometheus.CounterVec
	seconds  *prometheus.HistogramVec
	// The listener's.
	connections  prometheus.Gauge
	refused      *prometheus.CounterVec
	acceptErrors prometheus.Counter
	callsRefused prometheus.Counter
	bodyTimeouts prometheus.Counter
	restHandled  *prometheus.CounterVec
	restSeconds  *prometheus.HistogramVec
	// The handshakes' (handshake.go).
	handshakes        *prometheus.CounterVec
	handshakeWait     prometheus.Histogram
	handshakesWaiting prometheus.Gauge
	handshaking       prometheus.Gauge
}

// NewMetrics returns a registry holding the Go runtime and process collectors, the
// build information and the RPC metrics.
func NewMetrics(version, replicaID string) *Metrics {
	m := &Metrics{
		registry: prometheus.NewRegistry(),
		handled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "palyra_rpc_handled_total",
			Help: "RPCs completed by the server, by procedure and Connect code.",
		}, []string{"procedure", "code"}),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "palyra_rpc_handling_seconds",
			Help:    "Time from the start of an RPC to its end, by procedure (streams included).",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"procedure"}),
		restHandled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "palyra_openai_requests_total",
			Help: "OpenAI REST requests completed by the server, by route (method and path pattern) and HTTP status.",
		}, []string{"route", "status"}),
		restSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "palyra_openai_request_seconds",
			Help:    "Time from the start of an OpenAI REST request to the end of its response, by route (streams included).",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}, []string{"route"}),
		connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "palyra_listener_connections",
			Help: "Connections open on the listener.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "palyra_listener_refused_total",
			Help: "Connections closed as soon as accepted, by the cap they would exceed (per_address, total).",
		}, []string{"reason"}),
		acceptErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "palyra_listener_accept_errors_total",
			Help: "Failures to accept a connection, such as too many open files.",
		}),
		callsRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "palyra_listener_calls_refused_total",
			Help: "Calls refused at once because their address had server.max_calls_per_address in flight.",
		}),
		bodyTimeouts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "palyra_listener_body_timeouts_total",
			Help: "Calls ended because their request body, or a message of their stream, did not arrive within server.read_body_timeout.",
		}),
		handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "palyra_tls_handshakes_total",
			Help: "TLS handshakes on the listener, by result: full, resumed (a session ticket), failed, or shed (closed after waiting too long for a slot).",
		}, []string{"result"}),
		handshakeWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "palyra_tls_handshake_queue_seconds",
			Help:    "Time a connection waited for a slot to start its TLS handshake (those shed excepted).",
			Buckets: []float64{.0001, .001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		handshakesWaiting: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "palyra_tls_handshakes_waiting",
			Help: "Connections waiting for a slot to start their TLS handshake.",
		}),
		handshaking: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "palyra_tls_handshakes_in_progress",
			Help: "TLS handshakes in progress on the listener.",
		}),
	}
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "palyra_build_info",
		Help: "Always 1; the labels say which build and replica this is.",
	}, []string{"version", "replica_id"})
	build.WithLabelValues(version, replicaID).Set(1)
	m.refused.WithLabelValues(capPerAddress)
	m.refused.WithLabelValues(capTotal)
	for _, r := range []string{handshakeFull, handshakeResumed, handshakeFailed, handshakeShed} {
		m.handshakes.WithLabelValues(r)
	}
	m.registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		build, m.handled, m.seconds, m.restHandled, m.restSeconds,
		m.connections, m.refused, m.acceptErrors, m.callsRefused, m.bodyTimeouts,
		m.handshakes, m.handshakeWait, m.handshakesWaiting, m.handshaking,
	)
	return m
}

// Registry is where other parts of the daemon register their metrics.
func (m *Metrics) Registry() *prometheus.Registry { return m.registry }

// Handler serves the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{Registry: m.registry})
}

// Interceptor measures unary and streaming RPCs.
func (m *Metrics) Interceptor() connect.Interceptor { return metricsInterceptor{m} }

type metricsInterceptor struct{ m *Metrics }

func (i metricsInterceptor) observe(procedure string, start time.Time, err error) {
	code := "ok"
	if err != nil {
		code = connect.CodeOf(err).String()
	}
	i.m.handled.WithLabelValues(procedure, code).Inc()
	i.m.seconds.WithLabelValues(procedure).Observe(time.Since(start).Seconds())
}

func (i metricsInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		start := time.Now()
		res, err := next(ctx, req)
		i.observe(req.Spec().Procedure, start, err)
		return res, err
	}
}

func (i metricsInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i metricsInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		start := time.Now()
		err := next(ctx, conn)
		if errors.Is(err, context.Canceled) && ctx.Err() != nil {
			err = connect.NewError(connect.CodeCanceled, err)
		}
		i.observe(conn.Spec().Procedure, start, err)
		return err
	}
}

// REST measures the OpenAI REST requests h serves: their number by route and status,
// and their duration by route. The route is the pattern of h's ServeMux that matched
// (for example "POST /v1/chat/completions"), so that the labels stay few whatever
// paths clients send.
func (m *Metrics) REST(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		h.ServeHTTP(sw, r)
		status := sw.status
		if status == 0 {
			status = http.StatusOK
		}
		route := r.Pattern
		if route == "" {
			route = "unmatched"
		}
		m.restHandled.WithLabelValues(route, strconv.Itoa(status)).Inc()
		m.restSeconds.WithLabelValues(route).Observe(time.Since(start).Seconds())
	})
}

// statusWriter remembers the status of a response; Unwrap lets an
// http.ResponseController flush the response it wraps.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
