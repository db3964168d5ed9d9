package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// echoProcedure is the one method of the echo baselines, as in the floor harness of
// PERF-BASELINES.md: a BytesValue in, the same BytesValue out.
const echoProcedure = "/perf.v1.Echo/Echo"

// natsSubject is the subject the NATS responder answers on.
const natsSubject = "perf.echo"

// echoPayload is the payload of every baseline call: 128 bytes, as a dispatch's input
// and output.
var echoPayload = []byte(strings.Repeat("x", 128))

// concurrencies are the closed-loop concurrencies of the baselines and of
// ExecuteCapability: issue 6 asks for 1, 16 and 64.
var concurrencies = []int{1, 16, 64}

// BenchmarkBaseline measures, in the same run as BenchmarkDispatch and on the same TLS
// setup (mutual TLS with certificates from a throwaway P-256 CA, loopback), what a
// call costs without Palyra, so that the ratio table (ratios_test.go) sets Palyra's
// dispatch against them:
//
//	connect-echo/c=C  connect-go unary echo, Connect protocol, one HTTP/2 connection,
//	                  the handler with connect.WithCompressMinBytes(1024) (no gzip of
//	                  small messages, as palyrad): the floor of one hop through
//	                  connect-go
//	grpc-echo/c=C     grpc-go unary echo (a hand-written grpc.ServiceDesc), one
//	                  connection
//	nats/c=C          NATS request/reply through an embedded nats-server to a
//	                  responder on a connection of its own: what one would otherwise
//	                  pick to dispatch to agents (no persistence)
//
// The servers run in this process (the floor harness ran them in processes of their
// own), so bench-cpu-µs/op is client and server together. No PostgreSQL is needed.
func BenchmarkBaseline(b *testing.B) {
	ca := newThrowawayCA(b)
	targets := []struct {
		name string
		op   func(b *testing.B) func(ctx context.Context) error
	}{
		{"connect-echo", func(b *testing.B) func(context.Context) error {
			return connectEcho(b, ca, startConnectEcho(b, ca))
		}},
		{"grpc-echo", func(b *testing.B) func(context.Context) error {
			return grpcEcho(b, ca, startGRPCEcho(b, ca))
		}},
		{"nats", func(b *testing.B) func(context.Context) error {
			return natsRequest(b, ca, startNATS(b, ca))
		}},
	}
	for _, t := range targets {
		b.Run(t.name, func(b *testing.B) {
			for _, c := range concurrencies {
				b.Run(fmt.Sprintf("c=%d", c), func(b *testing.B) {
					op := t.op(b)
					for range 3 {
						if err := op(context.Background()); err != nil {
							b.Fatalf("warm-up: %v", err)
						}
					}
					closedLoop(b, c, meter{}, "calls/s", op)
				})
			}
		})
	}
}

// The servers and clients below are started afresh for every round of a
// sub-benchmark (b.Cleanup stops them at its end), as BenchmarkDispatch takes a fresh
// connection for each: no round inherits another's connection state.

// startConnectEcho serves the connect-go echo on a TLS listener (HTTP/1.1 and HTTP/2,
// as the floor's http.Server.ListenAndServeTLS) and returns its base URL.
func startConnectEcho(b *testing.B, ca *throwawayCA) string {
	b.Helper()
	mux := http.NewServeMux()
	mux.Handle(echoProcedure, connect.NewUnaryHandler(echoProcedure,
		func(_ context.Context, req *connect.Request[wrapperspb.BytesValue]) (*connect.Response[wrapperspb.BytesValue], error) {
			return connect.NewResponse(req.Msg), nil
		},
		connect.WithCompressMinBytes(1024),
	))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: mux, TLSConfig: ca.serverConfig(), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.ServeTLS(ln, "", "") }()
	b.Cleanup(func() {
		_ = srv.Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			b.Errorf("connect echo server: %v", err)
		}
	})
	return "https://" + ln.Addr().String()
}

// connectEcho returns a call to the connect-go echo at baseURL: a connect-go client,
// Connect protocol, on one HTTP/2 connection of its own (the transport of
// daemon.transport), presenting the client certificate.
func connectEcho(b *testing.B, ca *throwawayCA, baseURL string) func(context.Context) error {
	b.Helper()
	tr := &http.Transport{TLSClientConfig: ca.clientConfig(), TLSHandshakeTimeout: 10 * time.Second}
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetHTTP2(true)
	b.Cleanup(tr.CloseIdleConnections)
	client := connect.NewClient[wrapperspb.BytesValue, wrapperspb.BytesValue](&http.Client{Transport: tr}, baseURL+echoProcedure)
	return func(ctx context.Context) error {
		res, err := client.CallUnary(ctx, connect.NewRequest(wrapperspb.Bytes(echoPayload)))
		if err != nil {
			return err
		}
		return checkEcho(res.Msg.GetValue())
	}
}

// echoService is the grpc-go echo, described by hand as the floor harness did: no
// code generation.
var echoService = grpc.ServiceDesc{
	ServiceName: "perf.v1.Echo",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Echo",
		Handler: func(_ any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
			in := new(wrapperspb.BytesValue)
			if err := dec(in); err != nil {
				return nil, err
			}
			echo := func(context.Context, any) (any, error) { return in, nil }
			if interceptor == nil {
				return echo(ctx, in)
			}
			return interceptor(ctx, in, &grpc.UnaryServerInfo{FullMethod: echoProcedure}, echo)
		},
	}},
	Metadata: "perf/v1/echo.proto",
}

// startGRPCEcho serves the grpc-go echo with TLS and returns its address.
func startGRPCEcho(b *testing.B, ca *throwawayCA) string {
	b.Helper()
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(ca.serverConfig())))
	srv.RegisterService(&echoService, struct{}{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	b.Cleanup(func() {
		srv.Stop()
		if err := <-done; err != nil {
			b.Errorf("grpc echo server: %v", err)
		}
	})
	return ln.Addr().String()
}

// grpcEcho returns a call to the grpc-go echo at addr, through a grpc-go client on
// one connection of its own (conn.Invoke, no generated stub).
func grpcEcho(b *testing.B, ca *throwawayCA, addr string) func(context.Context) error {
	b.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(ca.clientConfig())))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = conn.Close() })
	return func(ctx context.Context) error {
		out := new(wrapperspb.BytesValue)
		if err := conn.Invoke(ctx, echoProcedure, wrapperspb.Bytes(echoPayload), out); err != nil {
			return err
		}
		return checkEcho(out.GetValue())
	}
}

// startNATS starts a nats-server in this process (runNATSServer) and a responder on a
// connection of its own that answers every request on natsSubject with its payload.
// It returns the client URL.
func startNATS(b *testing.B, ca *throwawayCA) string {
	b.Helper()
	url := runNATSServer(b, ca, nil)
	responder := connectNATS(b, ca, url, "bench-responder")
	sub, err := responder.Subscribe(natsSubject, func(m *nats.Msg) { _ = m.Respond(m.Data) })
	if err != nil {
		b.Fatal(err)
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		b.Fatal(err)
	}
	// The subscription is known to the server once a round trip after it completed.
	if err := responder.Flush(); err != nil {
		b.Fatal(err)
	}
	return url
}

// runNATSServer starts a nats-server in this process, listening with TLS on a free
// loopback port and requiring client certificates from the CA (tls { verify: true }
// in the floor's configuration), with the options more sets when it is not nil, and
// returns its client URL. It stops when b ends.
func runNATSServer(b *testing.B, ca *throwawayCA, more func(*server.Options)) string {
	b.Helper()
	opts := &server.Options{
		Host:       "127.0.0.1",
		Port:       server.RANDOM_PORT,
		NoLog:      true,
		NoSigs:     true,
		TLS:        true,
		TLSVerify:  true,
		TLSConfig:  ca.serverConfig(),
		TLSTimeout: 2,
	}
	if more != nil {
		more(opts)
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		b.Fatal(err)
	}
	go ns.Start()
	b.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	if !ns.ReadyForConnections(10 * time.Second) {
		b.Fatal("nats-server not ready within 10 s")
	}
	return ns.ClientURL()
}

// connectNATS opens a connection named name to the nats-server at url with the client
// certificate; it is closed when b ends.
func connectNATS(b *testing.B, ca *throwawayCA, url, name string) *nats.Conn {
	b.Helper()
	nc, err := nats.Connect(url, nats.Secure(ca.clientConfig()), nats.Name(name))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	return nc
}

// natsRequest returns a NATS request to the responder, through a connection of its
// own with the client certificate: nc.Request with a 5 s timeout, as the floor's load
// generator (the closed loop's context carries no deadline).
func natsRequest(b *testing.B, ca *throwawayCA, url string) func(context.Context) error {
	b.Helper()
	nc := connectNATS(b, ca, url, "bench-requester")
	return func(context.Context) error {
		m, err := nc.Request(natsSubject, echoPayload, 5*time.Second)
		if err != nil {
			return err
		}
		return checkEcho(m.Data)
	}
}

// checkEcho checks that a baseline answered with the payload.
func checkEcho(got []byte) error {
	if !bytes.Equal(got, echoPayload) {
		return fmt.Errorf("echo returned %d bytes, not the %d sent", len(got), len(echoPayload))
	}
	return nil
}
