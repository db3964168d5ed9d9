package access

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	optionsv1 "github.com/palyra/palyra/gen/go/palyra/options/v1"
	"github.com/palyra/palyra/server/internal/audit"
	"github.com/palyra/palyra/server/internal/errdefs"
	"github.com/palyra/palyra/server/internal/identity"
	"github.com/palyra/palyra/server/internal/ratelimit"
	"github.com/palyra/palyra/server/internal/requestctx"
)

// The interceptor is where every RPC's declared access rule is enforced, for unary and
// streaming calls alike:
//
//  1. The rule comes from the RPC's (palyra.options.v1.access) option, read once at
//     start for every method of every palyra.* service; a method without a valid rule
//     is refused.
//  2. public: no credentials. device: a client certificate verified against the CA
//     during the handshake, naming a device, neither revoked nor of a revoked device —
//     checked again on every call, so that a revocation also stops the calls of
//     connections opened before it. (With require_mtls off, for development only, the
//     device names itself in the X-Palyra-Device-Id header.)
//  3. authenticated / permission: the caller authenticates with `Authorization: Bearer
//     plr_...` or the session cookie. Valid credentials pass whatever else came from
//     their address. A failure counts against the address, and every failure gets the
//     same Unauthenticated answer until the address failed too often; from then on its
//     failures get ResourceExhausted. Then the token's rate limit (ResourceExhausted with
//     Retry-After), which refused calls use up too. A permission the caller lacks is
//     PermissionDenied; a call that changes state through a session cookie needs the
//     X-Palyra-CSRF header (PermissionDenied without it).
//  4. Every call that may change state (any RPC not declared NO_SIDE_EFFECTS) is an
//     audit.Call from the moment it is authorized: its changes commit with its audit
//     outbox row, which names the target the handler set (audit.SetTarget) before the
//     change, and its event is appended when it ends. Every refused authentication or
//     permission is appended too. Calls turned away by a rate limit (ResourceExhausted,
//     having changed nothing) and TLS handshakes refused for their client certificate
//     (HandshakeRefused) are counted into the audit log's summaries instead, one per
//     address per minute.

// InterceptorOptions are the interceptor's dependencies.
type InterceptorOptions struct {
	Tokens   *Tokens
	Sessions *Sessions
	Audit    *audit.Log
	// Failures limits failed authentication per remote address (ratelimit.Host).
	Failures *ratelimit.Keyed
	// Devices checks device certificates against the revocations.
	Devices DeviceChecker
	// RequireMTLS refuses node RPCs without a client certificate; off is for
	// development only.
	RequireMTLS bool
	// Translate turns the interceptor's refusals (errdefs errors) into the transport's
	// errors, as the edge does with every other error (apiserver.ErrorTranslator):
	// the interceptor runs outside the edge's error interceptor, and audits the code
	// the caller gets. Required.
	Translate func(procedure string, err error) error
	Logger    *slog.Logger
}

// Interceptor enforces the access rules.
type Interceptor struct {
	opts  InterceptorOptions
	rules map[string]rule
	log   *slog.Logger
}

// rule is the access rule of one procedure.
type rule struct {
	access   *optionsv1.Access
	readOnly bool // declared NO_SIDE_EFFECTS: not audited when it succeeds, no CSRF needed
}

var _ connect.Interceptor = (*Interceptor)(nil)

// NewInterceptor reads the access rule of every method of every palyra.* service in the
// protobuf registry, and fails when one is missing or invalid.
func NewInterceptor(opts InterceptorOptions) (*Interceptor, error) {
	if opts.Translate == nil {
		return nil, errors.New("access: the interceptor needs Translate")
	}
	rules := map[string]rule{}
	var problems []error
	protoregistry.GlobalFiles.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
		if !strings.HasPrefix(string(fd.Package()), "palyra.") {
			return true
		}
		for i := range fd.Services().Len() {
			sd := fd.Services().Get(i)
			for j := range sd.Methods().Len() {
				md := sd.Methods().Get(j)
				a, err := Declaration(md)
				if err != nil {
					problems = append(problems, err)
					continue
				}
				opts, _ := md.Options().(*descriptorpb.MethodOptions)
				rules[fmt.Sprintf("/%s/%s", sd.FullName(), md.Name())] = rule{
					access:   a,
					readOnly: opts.GetIdempotencyLevel() == descriptorpb.MethodOptions_NO_SIDE_EFFECTS,
				}
			}
		}
		return true
	})
	if err := errors.Join(problems...); err != nil {
		return nil, fmt.Errorf("access: %w", err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Interceptor{opts: opts, rules: rules, log: log}, nil
}

// call is one RPC going through the interceptor.
type call struct {
	i         *Interceptor
	procedure string
	peer      string
	header    http.Header
	rule      rule
	principal *Principal
	device    *Device
	note      *audit.Note
	// record is the audit record of a call that may change state, once authorized.
	record *audit.Call
	// audited forces an audit record for a read-only call (a refusal).
	audited bool
}

// WrapUnary implements connect.Interceptor.
func (i *Interceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		c := i.newCall(req.Spec().Procedure, req.Peer().Addr, req.Header())
		ctx, err := c.authorize(ctx)
		if err != nil {
			err = i.opts.Translate(c.procedure, err)
			c.finish(ctx, err)
			return nil, err
		}
		res, err := next(c.begin(ctx), req)
		c.finish(ctx, err)
		return res, err
	}
}

// WrapStreamingClient implements connect.Interceptor; clients are not intercepted.
func (i *Interceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

// WrapStreamingHandler implements connect.Interceptor.
func (i *Interceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		c := i.newCall(conn.Spec().Procedure, conn.Peer().Addr, conn.RequestHeader())
		ctx, err := c.authorize(ctx)
		if err != nil {
			err = i.opts.Translate(c.procedure, err)
			c.finish(ctx, err)
			return err
		}
		err = next(c.begin(ctx), conn)
		c.finish(ctx, err)
		return err
	}
}

// Authorize applies the access rule of procedure to an HTTP request that is not an RPC:
// an OpenAI REST endpoint, which shares the rule of the RPC it serves, its rate limit and
// its audit. It returns the handler's context and the function that ends the call (its
// audit record) with the call's error; a refusal is returned as the errdefs error, and
// is already recorded.
func (i *Interceptor) Authorize(ctx context.Context, procedure, peer string, header http.Header) (context.Context, func(error), error) {
	c := i.newCall(procedure, peer, header)
	ctx, err := c.authorize(ctx)
	if err != nil {
		c.finish(ctx, i.opts.Translate(procedure, err))
		return ctx, nil, err
	}
	return c.begin(ctx), func(err error) { c.finish(ctx, i.opts.Translate(procedure, err)) }, nil
}

func (i *Interceptor) newCall(procedure, peer string, header http.Header) *call {
	return &call{i: i, procedure: procedure, peer: peer, header: header}
}

// begin starts the audit record of an authorized call that may change state; the
// returned context is the handler's.
func (c *call) begin(ctx context.Context) context.Context {
	if c.rule.readOnly {
		return ctx
	}
	ctx, c.record = c.i.opts.Audit.Begin(ctx, c.event(ctx))
	return ctx
}

// event is the call's audit event as far as it is known before it ends.
func (c *call) event(ctx context.Context) audit.Event {
	e := audit.Event{
		Principal:     "anonymous",
		Procedure:     c.procedure,
		Target:        c.note.Target(),
		RemoteAddress: ratelimit.Host(c.peer),
		RequestID:     requestctx.RequestID(ctx),
	}
	switch {
	case c.principal != nil:
		e.Principal = c.principal.ID()
	case c.device != nil:
		e.Principal = c.device.principal()
	}
	switch {
	case e.RequestID == "":
	case requestctx.RequestIDGenerated(ctx):
		e.RequestIDSource = audit.FromReplica
	default:
		e.RequestIDSource = audit.FromClient
	}
	return e
}

// authorize applies the rule; the returned context carries the principal and the audit
// note for the handler.
func (c *call) authorize(ctx context.Context) (context.Context, error) {
	ctx, c.note = audit.WithNote(ctx)
	r, ok := c.i.rules[c.procedure]
	if !ok {
		c.audited = true
		return ctx, errdefs.New(errdefs.Internal, "access: %s has no access rule", c.procedure)
	}
	c.rule = r
	switch req := r.access.GetRequirement().(type) {
	case *optionsv1.Access_Public:
		return ctx, nil
	case *optionsv1.Access_Device:
		return c.authenticateDevice(ctx)
	case *optionsv1.Access_Authenticated:
		return c.authenticate(ctx, "")
	case *optionsv1.Access_Permission:
		return c.authenticate(ctx, Permission(req.Permission))
	}
	return ctx, errdefs.New(errdefs.Internal, "access: %s has an unknown access rule", c.procedure)
}

// authenticate authenticates the caller and checks perm (unless empty), CSRF and the
// token's rate limit.
func (c *call) authenticate(ctx context.Context, perm Permission) (context.Context, error) {
	i := c.i
	// Credentials first: the failures of others from the same address do not lock out
	// a valid token. Only failures count against the address.
	p, reason, err := c.credentials(ctx)
	if errors.Is(err, ErrUnauthenticated) {
		c.audited = true
		host := ratelimit.Host(c.peer)
		if wait, ok := i.opts.Failures.Peek(host); !ok {
			return ctx, rateLimited("too many failed authentications from your address", wait)
		}
		i.opts.Failures.Spend(host)
		i.log.Info("authentication failed", "procedure", c.procedure, "remote", host,
			"reason", reason, "request_id", requestctx.RequestID(ctx))
		return ctx, ErrUnauthenticated
	}
	if err != nil {
		return ctx, errdefs.Wrap(err, errdefs.Unavailable, "could not check the credentials; retry later")
	}
	c.principal = p
	ctx = WithPrincipal(ctx, p)
	// The rate limit comes before the other checks, so that refused calls use up the
	// token's allowance too: a token cannot flood the audit log with refusals.
	if err := i.opts.Tokens.Take(ctx, p.TokenID); err != nil {
		var limited *RateLimitedError
		if errors.As(err, &limited) {
			return ctx, rateLimited(fmt.Sprintf("%s is over its rate limit", p.ID()), limited.RetryAfter)
		}
		return ctx, errdefs.Wrap(err, errdefs.Unavailable, "could not apply the rate limit; retry later")
	}
	if perm != "" && !p.Permissions.Has(perm) {
		c.audited = true
		return ctx, errdefs.New(errdefs.PermissionDenied, "this call needs the permission %s, which %s lacks", perm, p.ID())
	}
	if p.Method == SessionCookie && !c.rule.readOnly && !i.opts.Sessions.CheckCSRF(p, c.header.Get(CSRFHeader)) {
		c.audited = true
		return ctx, errdefs.New(errdefs.PermissionDenied, "calls that change state with a session cookie need the session's CSRF token in the %s header", CSRFHeader)
	}
	return ctx, nil
}

// authenticateDevice identifies the calling device by its certificate.
func (c *call) authenticateDevice(ctx context.Context) (context.Context, error) {
	cert := requestctx.ClientCertificate(ctx)
	switch {
	case cert != nil:
		id, err := c.i.opts.Devices.Check(cert)
		if err != nil {
			c.audited = true
			c.i.log.Info("device refused", "procedure", c.procedure, "remote", ratelimit.Host(c.peer), "err", err)
			return ctx, errdefs.Wrap(err, errdefs.Unauthenticated, "the client certificate is not a valid device certificate (revoked, or of a revoked device)")
		}
		c.device = &Device{ID: id, Verified: true}
	case c.i.opts.RequireMTLS:
		c.audited = true
		return ctx, errdefs.New(errdefs.Unauthenticated, "this call needs a device certificate (mutual TLS): pair the node first")
	default:
		id := c.header.Get(DeviceHeader)
		if id == "" || c.i.opts.Devices.CheckDevice(id) != nil {
			c.audited = true
			return ctx, errdefs.New(errdefs.Unauthenticated, "require_mtls is off: name a device that is not revoked in the %s header", DeviceHeader)
		}
		c.device = &Device{ID: id}
	}
	return WithDevice(ctx, c.device), nil
}

// credentials authenticates the bearer token, or else the session cookie.
func (c *call) credentials(ctx context.Context) (*Principal, string, error) {
	if auth := c.header.Get("Authorization"); auth != "" {
		scheme, token, ok := strings.Cut(auth, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			return nil, "Authorization is not a bearer token", ErrUnauthenticated
		}
		return c.i.opts.Tokens.Authenticate(ctx, strings.TrimSpace(token))
	}
	req := http.Request{Header: http.Header{"Cookie": c.header.Values("Cookie")}}
	if cookie, err := req.Cookie(CookieName); err == nil {
		return c.i.opts.Sessions.Authenticate(ctx, cookie.Value)
	}
	return nil, "no credentials", ErrUnauthenticated
}

// rateLimited is a ResourceExhausted error asking to retry after wait (the edge sends
// it as a Retry-After header, in whole seconds).
func rateLimited(msg string, wait time.Duration) error {
	return errdefs.Exhausted(wait, "%s: retry in %s", msg, wait.Round(time.Millisecond))
}

// finish writes the audit record of calls that may have changed state or were refused:
// their event, or, for those a rate limit turned away, a count in the summary of their
// address.
func (c *call) finish(ctx context.Context, err error) {
	if c.rule.readOnly && !c.audited {
		return
	}
	code := "ok"
	outcome := audit.Success
	if err != nil {
		outcome, code = audit.Failure, connect.CodeOf(err).String()
	}
	// The call is over: its cancellation must not lose the record.
	ctx = context.WithoutCancel(ctx)
	limited := connect.CodeOf(err) == connect.CodeResourceExhausted
	e := c.event(ctx)
	e.Outcome, e.Code = outcome, code
	var aerr error
	switch {
	case limited && (c.record == nil || !c.record.Wrote()):
		if c.record != nil {
			c.record.Abandon()
		}
		c.i.opts.Audit.Refused(e)
		return
	case c.record != nil:
		aerr = c.record.EndBehind(ctx, outcome, code)
	default:
		_, aerr = c.i.opts.Audit.Append(ctx, e)
	}
	switch {
	case errors.Is(aerr, audit.ErrDeferred):
		c.i.log.Warn("audit record deferred: the database is unavailable", "procedure", c.procedure,
			"principal", e.Principal, "code", code, "request_id", e.RequestID)
	case aerr != nil:
		c.i.log.Error("audit record lost", "procedure", c.procedure, "principal", e.Principal,
			"code", code, "request_id", e.RequestID, "err", aerr)
	}
}

// HandshakeRefused counts a TLS handshake refused for its client certificate into the
// audit log's summary of its remote address (remote is "host:port"). cert is the
// certificate when its chain verified (a revoked one, say), nil otherwise; reason names
// the refusal ("certificate-revoked", "unknown-authority", ...) and becomes the event's
// procedure, "tls:<reason>".
func (i *Interceptor) HandshakeRefused(remote string, cert *x509.Certificate, reason string) {
	e := audit.Event{
		Principal: "anonymous", Procedure: "tls:" + reason, Outcome: audit.Failure,
		Code: connect.CodeUnauthenticated.String(), RemoteAddress: ratelimit.Host(remote),
	}
	if cert != nil {
		if id, ok := identity.DeviceID(cert); ok {
			e.Principal = (&Device{ID: id}).principal()
		}
	}
	i.opts.Audit.Refused(e)
}
