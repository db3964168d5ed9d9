// Package apiserver is the HTTP front of palyrad: the one TLS listener (HTTP/1.1 and
// HTTP/2), the mux that mounts every Connect service (Connect, gRPC and gRPC-Web
// protocols), gRPC health and server reflection, /metrics, the OpenAI REST endpoints
// under /v1/, the browser console at /, the interceptor chain every RPC passes through, and the one place where
// errors become Connect codes (errors.go) or OpenAI's error envelope (openai.go).
//
// The listener defends itself before anyone is authenticated: connections are capped
// per address and in total and refused at accept (limitListener), calls in flight are
// capped per address (callCap), and request bodies must arrive in time
// (bodyDeadlines), so that callers who hold connections or calls without finishing
// them cannot take what other callers and the attached nodes need.
package apiserver

import (
	"log/slog"
	"net/http"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"connectrpc.com/validate"

	"github.com/palyra/palyra/gen/go/palyra/access/v1/accessv1connect"
	"github.com/palyra/palyra/gen/go/palyra/agents/v1/agentsv1connect"
	"github.com/palyra/palyra/gen/go/palyra/browser/v1/browserv1connect"
	"github.com/palyra/palyra/gen/go/palyra/compat/v1/compatv1connect"
	"github.com/palyra/palyra/gen/go/palyra/controlplane/v1/controlplanev1connect"
	"github.com/palyra/palyra/gen/go/palyra/node/v1/nodev1connect"
	"github.com/palyra/palyra/server/internal/requestctx"
)

// compressMinBytes keeps connect-go from gzipping small messages, which it does by
// default and which costs about a third of the throughput of small RPCs.
const compressMinBytes = 1024

// Services are the handlers of Palyra's protobuf services.
type Services struct {
	Status      controlplanev1connect.StatusServiceHandler
	Session     controlplanev1connect.SessionServiceHandler
	Pairing     controlplanev1connect.PairingServiceHandler
	Device      controlplanev1connect.DeviceServiceHandler
	Nodes       controlplanev1connect.NodeInventoryServiceHandler
	Dispatch    controlplanev1connect.DispatchServiceHandler
	Node        nodev1connect.NodeServiceHandler
	Access      accessv1connect.AccessServiceHandler
	FeatureFlag accessv1connect.FeatureFlagServiceHandler
	Audit       accessv1connect.AuditServiceHandler
	Compat      compatv1connect.CompatServiceHandler
	Secret      controlplanev1connect.SecretServiceHandler
	MasterKey   controlplanev1connect.MasterKeyServiceHandler
	Config      controlplanev1connect.ConfigServiceHandler
	Agent       agentsv1connect.AgentServiceHandler
	Approval    agentsv1connect.ApprovalServiceHandler
	Browser     browserv1connect.BrowserProfileServiceHandler
	// CompatREST serves the OpenAI REST endpoints under /v1/ (compat.REST).
	CompatREST http.Handler
}

// serviceNames are the fully qualified names of Palyra's services, for health and
// reflection.
var serviceNames = []string{
	controlplanev1connect.StatusServiceName,
	controlplanev1connect.SessionServiceName,
	controlplanev1connect.PairingServiceName,
	controlplanev1connect.DeviceServiceName,
	controlplanev1connect.NodeInventoryServiceName,
	controlplanev1connect.DispatchServiceName,
	nodev1connect.NodeServiceName,
	accessv1connect.AccessServiceName,
	accessv1connect.FeatureFlagServiceName,
	accessv1connect.AuditServiceName,
	compatv1connect.CompatServiceName,
	controlplanev1connect.SecretServiceName,
	controlplanev1connect.MasterKeyServiceName,
	controlplanev1connect.ConfigServiceName,
	agentsv1connect.AgentServiceName,
	agentsv1connect.ApprovalServiceName,
	browserv1connect.BrowserProfileServiceName,
}

// HandlerOptions configures NewHandler.
type HandlerOptions struct {
	// Services are mounted under their Connect paths.
	Services Services
	// Health answers grpc.health.v1.Health.
	Health *Health
	// Metrics counts every RPC and serves /metrics.
	Metrics *Metrics
	// Access enforces every RPC's declared access rule (access.Interceptor).
	Access connect.Interceptor
	// ClientChains verifies the client certificates of requests: the listener's
	// (ServerOptions.ClientChains), which verified them at the handshake.
	ClientChains *requestctx.ChainCache
	// MaxMessageBytes bounds every message read or sent.
	MaxMessageBytes int
	// ReadBodyTimeout bounds the arrival of a request body after its headers, and of
	// each message of an Attach stream after its first byte; 0 means no bound.
	ReadBodyTimeout time.Duration
	// MaxCallsPerAddress bounds the calls in flight from one IPv4 address or IPv6 /64;
	// 0 means no such bound.
	MaxCallsPerAddress int
	// Console serves the browser console at / (console.Handler): mounted under the
	// least specific pattern, it never answers for a path the API serves. Nil serves
	// nothing there.
	Console http.Handler
	// Logger receives unexpected errors.
	Logger *slog.Logger
}

// NewHandler returns the root HTTP handler of the listener. Every request passes the
// per-address cap on calls in flight and gets its body deadline; then every RPC passes,
// in order, through metrics, access control (authentication, authorization, rate
// limits, audit), the error translation and request validation (protovalidate);
// validation comes after access so that callers without the right learn nothing about
// the request format.
func NewHandler(opts HandlerOptions) http.Handler {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	common := []connect.HandlerOption{
		connect.WithReadMaxBytes(opts.MaxMessageBytes),
		connect.WithSendMaxBytes(opts.MaxMessageBytes),
		connect.WithCompressMinBytes(compressMinBytes),
	}
	rpc := append([]connect.HandlerOption{connect.WithInterceptors(
		opts.Metrics.Interceptor(),
		opts.Access,
		ErrorInterceptor(log),
		validate.NewInterceptor(),
	)}, common...)

	mux := http.NewServeMux()
	mux.Handle(controlplanev1connect.NewStatusServiceHandler(opts.Services.Status, rpc...))
	mux.Handle(controlplanev1connect.NewSessionServiceHandler(opts.Services.Session, rpc...))
	mux.Handle(controlplanev1connect.NewPairingServiceHandler(opts.Services.Pairing, rpc...))
	mux.Handle(controlplanev1connect.NewDeviceServiceHandler(opts.Services.Device, rpc...))
	mux.Handle(controlplanev1connect.NewNodeInventoryServiceHandler(opts.Services.Nodes, rpc...))
	mux.Handle(controlplanev1connect.NewDispatchServiceHandler(opts.Services.Dispatch, rpc...))
	mux.Handle(nodev1connect.NewNodeServiceHandler(opts.Services.Node, rpc...))
	mux.Handle(accessv1connect.NewAccessServiceHandler(opts.Services.Access, rpc...))
	mux.Handle(accessv1connect.NewFeatureFlagServiceHandler(opts.Services.FeatureFlag, rpc...))
	mux.Handle(accessv1connect.NewAuditServiceHandler(opts.Services.Audit, rpc...))
	mux.Handle(compatv1connect.NewCompatServiceHandler(opts.Services.Compat, rpc...))
	mux.Handle(controlplanev1connect.NewSecretServiceHandler(opts.Services.Secret, rpc...))
	mux.Handle(controlplanev1connect.NewMasterKeyServiceHandler(opts.Services.MasterKey, rpc...))
	mux.Handle(controlplanev1connect.NewConfigServiceHandler(opts.Services.Config, rpc...))
	mux.Handle(agentsv1connect.NewAgentServiceHandler(opts.Services.Agent, rpc...))
	mux.Handle(agentsv1connect.NewApprovalServiceHandler(opts.Services.Approval, rpc...))
	mux.Handle(browserv1connect.NewBrowserProfileServiceHandler(opts.Services.Browser, rpc...))

	mux.Handle(grpchealth.NewHandler(opts.Health, common...))
	reflector := grpcreflect.NewStaticReflector(append([]string{
		grpchealth.HealthV1ServiceName,
		grpcreflect.ReflectV1ServiceName,
		grpcreflect.ReflectV1AlphaServiceName,
	}, serviceNames...)...)
	mux.Handle(grpcreflect.NewHandlerV1(reflector, common...))
	mux.Handle(grpcreflect.NewHandlerV1Alpha(reflector, common...))
	mux.Handle("GET /metrics", opts.Metrics.Handler())
	if opts.Services.CompatREST != nil {
		mux.Handle("/v1/", opts.Metrics.REST(opts.Services.CompatREST))
	}
	if opts.Console != nil {
		mux.Handle("/", opts.Console)
	}
	return newCallCap(bodyDeadlines(requestctx.Middleware(mux, opts.ClientChains), opts.ReadBodyTimeout, opts.Metrics),
		opts.MaxCallsPerAddress, opts.Metrics, log)
}
