package access

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	accessv1 "github.com/palyra/palyra/gen/go/palyra/access/v1"
	"github.com/palyra/palyra/gen/go/palyra/access/v1/accessv1connect"
	"github.com/palyra/palyra/server/internal/audit"
	"github.com/palyra/palyra/server/internal/errdefs"
	"github.com/palyra/palyra/server/internal/store"
)

// defaultPageSize is the page size of lists that do not ask for one.
const defaultPageSize = 100

// HandlerOptions are the AccessService handler's dependencies.
type HandlerOptions struct {
	Tokens *Tokens
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Handler serves AccessService.
type Handler struct {
	opts HandlerOptions
}

var _ accessv1connect.AccessServiceHandler = (*Handler)(nil)

// NewHandler returns the AccessService handler.
func NewHandler(opts HandlerOptions) *Handler {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Handler{opts: opts}
}

// WhoAmI describes the caller.
func (h *Handler) WhoAmI(ctx context.Context, _ *connect.Request[accessv1.WhoAmIRequest]) (*connect.Response[accessv1.WhoAmIResponse], error) {
	p, err := Caller(ctx)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&accessv1.WhoAmIResponse{Principal: p.Proto()}), nil
}

// ListPermissions returns the catalog, filtered by prefix.
func (h *Handler) ListPermissions(_ context.Context, req *connect.Request[accessv1.ListPermissionsRequest]) (*connect.Response[accessv1.ListPermissionsResponse], error) {
	res := &accessv1.ListPermissionsResponse{Permissions: []*accessv1.Permission{}}
	for _, p := range catalog {
		if strings.HasPrefix(p.Name, req.Msg.GetPrefix()) {
			res.Permissions = append(res.Permissions, p)
		}
	}
	return connect.NewResponse(res), nil
}

// ListRoles returns every role and its permissions.
func (h *Handler) ListRoles(context.Context, *connect.Request[accessv1.ListRolesRequest]) (*connect.Response[accessv1.ListRolesResponse], error) {
	res := &accessv1.ListRolesResponse{}
	for _, r := range roleDescriptions {
		res.Roles = append(res.Roles, &accessv1.RoleInfo{
			Role: r.role.Proto(), Name: string(r.role), Description: r.description,
			Permissions: r.role.Permissions().Names(),
		})
	}
	return connect.NewResponse(res), nil
}

// CreateToken creates a token no more powerful than the caller, expiring no later and
// allowing no more calls a minute.
func (h *Handler) CreateToken(ctx context.Context, req *connect.Request[accessv1.CreateTokenRequest]) (*connect.Response[accessv1.CreateTokenResponse], error) {
	p, err := Caller(ctx)
	if err != nil {
		return nil, err
	}
	role, _ := RoleFromProto(req.Msg.GetRole()) // protovalidate refuses unspecified and undefined roles
	scopes, err := parseScopes(req.Msg.GetScopes(), role)
	if err != nil {
		return nil, err
	}
	params := CreateParams{Label: req.Msg.GetLabel(), Role: role, Scopes: scopes, RateLimit: int(req.Msg.GetRateLimitPerMinute()),
		DailyTokenBudget: req.Msg.DailyTokenBudget}
	if req.Msg.ExpireTime != nil {
		at := req.Msg.GetExpireTime().AsTime()
		params.ExpiresAt = &at
	}
	tok, secret, err := h.opts.Tokens.Create(ctx, p, params) // names the target
	if err != nil {
		return nil, tokenError("", err)
	}
	return connect.NewResponse(&accessv1.CreateTokenResponse{Token: h.tokenProto(tok), Secret: secret}), nil
}

// parseScopes checks every scope against the catalog and the token's role; an unknown
// one, or one the role does not hold (it would leave the token without permissions),
// is refused as Invalid naming every field at fault.
func parseScopes(in []string, role Role) ([]Permission, error) {
	out := make([]Permission, 0, len(in))
	var bad []errdefs.Violation
	perms := role.Permissions()
	for i, s := range in {
		field := fmt.Sprintf("scopes[%d]", i)
		switch {
		case !Known(Permission(s)):
			bad = append(bad, errdefs.Violation{
				Field: field, Description: fmt.Sprintf("%q is not a permission in the catalog (see ListPermissions)", s),
			})
		case !perms[Permission(s)]:
			bad = append(bad, errdefs.Violation{
				Field: field, Description: (&ScopeError{Index: i, Scope: Permission(s), Role: role}).Error(),
			})
		default:
			out = append(out, Permission(s))
		}
	}
	if len(bad) == 0 {
		return out, nil
	}
	return nil, errdefs.InvalidFields(bad...)
}

// ListTokens lists tokens, newest first.
func (h *Handler) ListTokens(ctx context.Context, req *connect.Request[accessv1.ListTokensRequest]) (*connect.Response[accessv1.ListTokensResponse], error) {
	params := ListParams{PageToken: req.Msg.GetPageToken(), Limit: int(req.Msg.GetPageSize())}
	if params.Limit == 0 {
		params.Limit = defaultPageSize
	}
	switch req.Msg.GetState() {
	case accessv1.TokenState_TOKEN_STATE_ACTIVE:
		params.State = Active
	case accessv1.TokenState_TOKEN_STATE_EXPIRED:
		params.State = Expired
	case accessv1.TokenState_TOKEN_STATE_REVOKED:
		params.State = Revoked
	}
	toks, next, err := h.opts.Tokens.List(ctx, params)
	if err != nil {
		return nil, tokenError("", err)
	}
	res := &accessv1.ListTokensResponse{Tokens: make([]*accessv1.Token, len(toks)), NextPageToken: next}
	for i, t := range toks {
		res.Tokens[i] = h.tokenProto(t)
	}
	return connect.NewResponse(res), nil
}

// GetToken returns one token.
func (h *Handler) GetToken(ctx context.Context, req *connect.Request[accessv1.GetTokenRequest]) (*connect.Response[accessv1.GetTokenResponse], error) {
	tok, err := h.opts.Tokens.Get(ctx, req.Msg.GetId())
	if err != nil {
		return nil, tokenError(req.Msg.GetId(), err)
	}
	return connect.NewResponse(&accessv1.GetTokenResponse{Token: h.tokenProto(tok)}), nil
}

// RotateToken replaces a token by a new one, bounded by the caller's own token as
// CreateToken's is.
func (h *Handler) RotateToken(ctx context.Context, req *connect.Request[accessv1.RotateTokenRequest]) (*connect.Response[accessv1.RotateTokenResponse], error) {
	p, err := Caller(ctx)
	if err != nil {
		return nil, err
	}
	audit.SetTarget(ctx, "token:"+req.Msg.GetId())
	var expiresAt *time.Time
	if req.Msg.ExpireTime != nil {
		at := req.Msg.GetExpireTime().AsTime()
		expiresAt = &at
	}
	tok, secret, err := h.opts.Tokens.Rotate(ctx, p, req.Msg.GetId(), expiresAt) // names the new token too
	if err != nil {
		return nil, tokenError(req.Msg.GetId(), err)
	}
	return connect.NewResponse(&accessv1.RotateTokenResponse{Token: h.tokenProto(tok), Secret: secret}), nil
}

// RevokeToken revokes a token and ends its sessions.
func (h *Handler) RevokeToken(ctx context.Context, req *connect.Request[accessv1.RevokeTokenRequest]) (*connect.Response[accessv1.RevokeTokenResponse], error) {
	p, err := Caller(ctx)
	if err != nil {
		return nil, err
	}
	audit.SetTarget(ctx, "token:"+req.Msg.GetId())
	reason := req.Msg.GetReason()
	if reason == "" {
		reason = "revoked by " + p.ID()
	}
	tok, err := h.opts.Tokens.Revoke(ctx, p, req.Msg.GetId(), reason)
	if err != nil {
		return nil, tokenError(req.Msg.GetId(), err)
	}
	return connect.NewResponse(&accessv1.RevokeTokenResponse{Token: h.tokenProto(tok)}), nil
}

// SetTokenBudget sets or removes a token's daily token budget.
func (h *Handler) SetTokenBudget(ctx context.Context, req *connect.Request[accessv1.SetTokenBudgetRequest]) (*connect.Response[accessv1.SetTokenBudgetResponse], error) {
	p, err := Caller(ctx)
	if err != nil {
		return nil, err
	}
	budget := "none"
	if b := req.Msg.DailyTokenBudget; b != nil {
		budget = strconv.FormatInt(*b, 10)
	}
	audit.SetTarget(ctx, "token:"+req.Msg.GetId()+" daily_token_budget:"+budget)
	tok, err := h.opts.Tokens.SetBudget(ctx, p, req.Msg.GetId(), req.Msg.DailyTokenBudget)
	if err != nil {
		return nil, tokenError(req.Msg.GetId(), err)
	}
	return connect.NewResponse(&accessv1.SetTokenBudgetResponse{Token: h.tokenProto(tok)}), nil
}

// tokenError gives the token errors that name the token their messages; the others
// (ExceedsError, a malformed page token, ...) keep their own.
func tokenError(id string, err error) error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return errdefs.Wrap(err, errdefs.NotFound, "token %s does not exist", id)
	case errors.Is(err, ErrNotActive):
		return errdefs.Wrap(err, errdefs.FailedPrecondition, "token %s is not active (revoked or expired)", id)
	}
	return err
}

func (h *Handler) tokenProto(t *Token) *accessv1.Token {
	out := &accessv1.Token{
		Id: t.ID, Label: t.Label, User: t.User, Role: t.Role.Proto(),
		Permissions: t.Permissions().Names(), RateLimitPerMinute: uint32(t.RateLimit),
		CreateTime: timestamppb.New(t.CreatedAt), CreatedBy: t.CreatedBy,
		ExpireTime: timestampOrNil(t.ExpiresAt), RevokeTime: timestampOrNil(t.RevokedAt),
		RevokeReason: t.RevokedReason, LastUseTime: timestampOrNil(t.LastUsedAt),
		RotatedFrom: t.RotatedFrom, RotatedTo: t.RotatedTo, DailyTokenBudget: t.DailyTokenBudget,
		Scopes: make([]string, len(t.Scopes)),
	}
	for i, s := range t.Scopes {
		out.Scopes[i] = string(s)
	}
	switch t.State(h.opts.Now()) {
	case Active:
		out.State = accessv1.TokenState_TOKEN_STATE_ACTIVE
	case Expired:
		out.State = accessv1.TokenState_TOKEN_STATE_EXPIRED
	case Revoked:
		out.State = accessv1.TokenState_TOKEN_STATE_REVOKED
	}
	return out
}

func timestampOrNil(t *time.Time) *timestamppb.Timestamp {
	if t == nil {
		return nil
	}
	return timestamppb.New(*t)
}
