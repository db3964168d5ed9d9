package access

import (
	"context"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	accessv1 "github.com/palyra/palyra/gen/go/palyra/access/v1"
)

// Method is how a principal authenticated.
type Method int

// The authentication methods.
const (
	// Bearer: an API token in the Authorization header.
	Bearer Method = iota + 1
	// SessionCookie: a console session cookie.
	SessionCookie
)

// Principal is an authenticated caller: an API token, used directly or through a console
// session.
type Principal struct {
	// TokenID is the token's id.
	TokenID string
	// UserID and User are the token's user.
	UserID, User string
	// Role is the token's role.
	Role Role
	// Permissions are the effective permissions: the role's, narrowed to the scopes.
	Permissions PermissionSet
	// TokenExpiresAt is when the token expires; nil when it does not.
	TokenExpiresAt *time.Time
	// RateLimit is the token's calls a minute. With TokenExpiresAt it bounds the tokens
	// the caller creates or rotates.
	RateLimit int
	// DailyTokenBudget is the token's budget of tokens per UTC day through the
	// OpenAI-compatible API; nil when it has none.
	DailyTokenBudget *int64
	// Method is how the caller authenticated.
	Method Method
	// SessionID is the console session, for SessionCookie.
	SessionID string

	csrfHash []byte // the session's CSRF token hash, for SessionCookie
}

// ID names the principal in the audit log.
func (p *Principal) ID() string { return "token:" + p.TokenID }

// Proto returns the principal as WhoAmI describes it.
func (p *Principal) Proto() *accessv1.Principal {
	out := &accessv1.Principal{
		Id:          p.ID(),
		User:        p.User,
		Role:        p.Role.Proto(),
		Permissions: p.Permissions.Names(),
		TokenId:     p.TokenID,
		Method:      accessv1.AuthMethod_AUTH_METHOD_BEARER_TOKEN,
	}
	if p.TokenExpiresAt != nil {
		out.TokenExpireTime = timestamppb.New(*p.TokenExpiresAt)
	}
	if p.Method == SessionCookie {
		out.Method = accessv1.AuthMethod_AUTH_METHOD_SESSION_COOKIE
		out.SessionId = p.SessionID
	}
	return out
}

type principalKey struct{}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p *Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// PrincipalFrom returns the authenticated caller of the RPC ctx belongs to; ok is false
// for public RPCs.
func PrincipalFrom(ctx context.Context) (p *Principal, ok bool) {
	p, ok = ctx.Value(principalKey{}).(*Principal)
	return p, ok
}

// Caller returns the authenticated caller of a handler's RPC, or ErrUnauthenticated;
// the interceptor guarantees a principal for every RPC that is neither
// public nor a device's, so the error means a misdeclared RPC.
func Caller(ctx context.Context) (*Principal, error) {
	p, ok := PrincipalFrom(ctx)
	if !ok || p == nil {
		return nil, ErrUnauthenticated
	}
	return p, nil
}
