package access

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/palyra/palyra/gen/dbsqlc"
	"github.com/palyra/palyra/server/internal/audit"
	"github.com/palyra/palyra/server/internal/notify"
	"github.com/palyra/palyra/server/internal/pagetoken"
	"github.com/palyra/palyra/server/internal/store"
)

// Rate limits of tokens, in calls a minute.
const (
	// DefaultRateLimit is a token's unless it is created with another (or its creator's
	// own is lower).
	DefaultRateLimit = 120
	// MaxRateLimit is the highest; the bootstrap token has it, so that the owner can
	// create any token.
	MaxRateLimit = 100000
)

// State is the state of a token at a given time.
type State string

// The token states.
const (
	Active  State = "active"
	Expired State = "expired"
	Revoked State = "revoked"
)

// Token is an API token, without its secret.
type Token struct {
	ID, Label     string
	UserID, User  string
	Role          Role
	Scopes        []Permission
	RateLimit     int
	CreatedAt     time.Time
	CreatedBy     string
	ExpiresAt     *time.Time
	RevokedAt     *time.Time
	RevokedReason string
	LastUsedAt    *time.Time
	RotatedFrom   string
	RotatedTo     string
	// DailyTokenBudget is the prompt plus completion tokens the token may use per UTC
	// day through the OpenAI-compatible API; nil when it has no budget.
	DailyTokenBudget *int64
	secretHash       []byte
	permissionsSet   PermissionSet
}

// State returns the token's state at now: revoked wins over expired.
func (t *Token) State(now time.Time) State {
	switch {
	case t.RevokedAt != nil:
		return Revoked
	case t.ExpiresAt != nil && !now.Before(*t.ExpiresAt):
		return Expired
	}
	return Active
}

// Permissions returns the token's effective permissions.
func (t *Token) Permissions() PermissionSet { return t.permissionsSet }

// principal returns the token as an authenticated caller.
func (t *Token) principal(m Method) *Principal {
	return &Principal{
		TokenID: t.ID, UserID: t.UserID, User: t.User, Role: t.Role,
		Permissions: t.permissionsSet, TokenExpiresAt: t.ExpiresAt, RateLimit: t.RateLimit, Method: m,
		DailyTokenBudget: t.DailyTokenBudget,
	}
}

// TokensChannel is the notification channel of token changes: a trigger sends the id of
// every token that is revoked, or whose expiry, secret, role, scopes, user or daily
// token budget change.
const TokensChannel = "palyra_tokens"

// TokensOptions are the dependencies of Tokens.
type TokensOptions struct {
	// Store is the database.
	Store *store.Store
	// Notify delivers TokensChannel, which it must listen on. Tokens are cached for
	// authentication only while Run runs.
	Notify *notify.Listener
	// DefaultRateLimit returns the rate limit of tokens created without one, read at
	// each creation (it may change while the daemon runs); nil means DefaultRateLimit.
	DefaultRateLimit func() int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger; nil discards.
	Logger *slog.Logger
}

// Tokens manages API tokens, authenticates them (with the verified-token cache of
// tokencache.go) and applies their rate limits (with the leases of tokenlease.go).
type Tokens struct {
	db    *store.Store
	sub   *notify.Subscription
	ready <-chan struct{}
	// listening reports whether invalidations can reach this replica now.
	listening func() bool
	now       func() time.Time
	log       *slog.Logger
	cache     *verifiedCache
	leases    *leases
	// defaultRateLimit returns the rate limit of tokens created without one.
	defaultRateLimit func() int
}

// NewTokens returns the token manager. The daemon starts Run to turn the
// verified-token cache on.
func NewTokens(opts TokensOptions) (*Tokens, error) {
	if opts.Store == nil || opts.Notify == nil {
		return nil, errors.New("access: tokens need a store and a notification listener")
	}
	sub, err := opts.Notify.Subscribe(TokensChannel)
	if err != nil {
		return nil, fmt.Errorf("access: tokens: %w", err)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	rate := opts.DefaultRateLimit
	if rate == nil {
		rate = func() int { return DefaultRateLimit }
	}
	return &Tokens{
		db: opts.Store, sub: sub, ready: opts.Notify.Ready(), listening: opts.Notify.Listening, now: opts.Now, log: opts.Logger,
		cache: newVerifiedCache(), leases: newLeases(), defaultRateLimit: rate,
	}, nil
}

// CreateParams describes a token to create.
type CreateParams struct {
	Label string
	Role  Role
	// Scopes narrow the role; each must be one of its permissions.
	Scopes    []Permission
	ExpiresAt *time.Time
	// RateLimit is calls a minute; 0 means DefaultRateLimit (through the API: or the
	// creator's own limit when it is lower).
	RateLimit int
	// DailyTokenBudget bounds the tokens the token may use per UTC day through the
	// OpenAI-compatible API; nil means no budget.
	DailyTokenBudget *int64
}

// Create creates a token for the creator, whose effective permissions must include the
// new token's, and whose own token must expire no earlier and allow as many calls a
// minute (a *BoundError otherwise). It returns the token and its secret, which is never
// stored.
func (ts *Tokens) Create(ctx context.Context, creator *Principal, p CreateParams) (*Token, string, error) {
	if missing := effective(p.Role, p.Scopes).Missing(creator.Permissions); len(missing) > 0 {
		return nil, "", &ExceedsError{Missing: missing}
	}
	if p.RateLimit == 0 {
		p.RateLimit = min(ts.defaultRateLimit(), creator.RateLimit)
	}
	if err := checkBounds(creator, p.ExpiresAt, p.RateLimit, "", ""); err != nil {
		return nil, "", err
	}
	var tok *Token
	id, secret := newSecret()
	audit.SetTarget(ctx, "token:"+id)
	err := ts.db.InTx(ctx, func(tx *store.Tx) (err error) {
		q := tx.Q()
		tok, err = insertToken(ctx, q, id, secret, creator.UserID, creator.ID(), p, nil)
		return err
	})
	if err != nil {
		return nil, "", err
	}
	return tok, formatToken(id, secret), nil
}

// checkBounds refuses a new token that would outlive the caller's own token or allow
// more calls a minute, with a *BoundError: a token cannot mint a longer-lived or faster
// credential than itself. expiryFrom and rateFrom say, for the message, where values
// the caller did not ask for come from ("" when asked for).
func checkBounds(caller *Principal, expiresAt *time.Time, rate int, expiryFrom, rateFrom string) error {
	if at := caller.TokenExpiresAt; at != nil {
		bound := at.UTC().Format(time.RFC3339)
		switch {
		case expiresAt == nil:
			return &BoundError{Reason: fmt.Sprintf("the new token would never expire%s, but your token expires at %s: "+
				"give it an expiry no later than that", expiryFrom, bound)}
		case expiresAt.After(*at):
			return &BoundError{Reason: fmt.Sprintf("the new token would expire at %s%s, but your token expires at %s: "+
				"give it an expiry no later than that", expiresAt.UTC().Format(time.RFC3339), expiryFrom, bound)}
		}
	}
	if rate > caller.RateLimit {
		msg := fmt.Sprintf("the new token would allow %d calls a minute%s, more than your token's %d", rate, rateFrom, caller.RateLimit)
		if rateFrom != "" {
			msg += ": use a token allowed at least as many"
		}
		return &BoundError{Reason: msg}
	}
	return nil
}

// insertToken inserts the row of token id with secret (newSecret) and returns the
// token. Its scopes must be permissions of its role (a *ScopeError otherwise).
func insertToken(ctx context.Context, q *dbsqlc.Queries, id, secret, userID, createdBy string, p CreateParams, rotatedFrom *string) (*Token, error) {
	if err := checkScopes(p.Role, p.Scopes); err != nil {
		return nil, err
	}
	rate := p.RateLimit
	if rate == 0 {
		rate = DefaultRateLimit
	}
	scopes := make([]string, len(p.Scopes))
	for i, s := range p.Scopes {
		scopes[i] = string(s)
	}
	slices.Sort(scopes)
	_, err := q.InsertToken(ctx, dbsqlc.InsertTokenParams{
		ID:                 id,
		Label:              p.Label,
		UserID:             userID,
		Role:               string(p.Role),
		Scopes:             scopes,
		SecretHash:         hashSecret(kindToken, id, secret),
		RateLimitPerMinute: int32(rate),
		CreatedBy:          createdBy,
		ExpiresAt:          p.ExpiresAt,
		RotatedFrom:        rotatedFrom,
		DailyTokenBudget:   budgetParam(p.DailyTokenBudget),
	})
	if err != nil {
		return nil, fmt.Errorf("access: create token: %w", err)
	}
	row, err := q.GetToken(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("access: create token: %w", err)
	}
	return tokenFromRow(row.ApiToken, row.UserName, row.RotatedTo), nil
}

// Get returns a token, read from the database (never from the verified-token cache).
func (ts *Tokens) Get(ctx context.Context, id string) (*Token, error) {
	row, err := ts.db.Q().GetToken(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("access: token %s: %w", id, err)
	}
	return tokenFromRow(row.ApiToken, row.UserName, row.RotatedTo), nil
}

// ListParams filter and page a token list.
type ListParams struct {
	// State keeps only tokens in this state; "" keeps all.
	State State
	// PageToken continues a previous list.
	PageToken string
	// Limit is the page size, 1..500.
	Limit int
}

// List returns a page of tokens, newest first, and the token of the next page ("" on
// the last one).
func (ts *Tokens) List(ctx context.Context, p ListParams) ([]*Token, string, error) {
	params := dbsqlc.ListTokensParams{State: string(p.State), Now: ts.now(), PageLimit: int32(p.Limit) + 1}
	if p.PageToken != "" {
		at, id, err := pagetoken.Decode(p.PageToken)
		if err != nil {
			return nil, "", fmt.Errorf("access: list tokens: %w", err)
		}
		params.AfterCreatedAt, params.AfterID = &at, id
	}
	rows, err := ts.db.Q().ListTokens(ctx, params)
	if err != nil {
		return nil, "", fmt.Errorf("access: list tokens: %w", err)
	}
	rows, next := pagetoken.Page(rows, p.Limit, func(r dbsqlc.ListTokensRow) (time.Time, string) {
		return r.ApiToken.CreatedAt, r.ApiToken.ID
	})
	out := make([]*Token, len(rows))
	for i, r := range rows {
		out[i] = tokenFromRow(r.ApiToken, r.UserName, r.RotatedTo)
	}
	return out, next, nil
}

// Rotate replaces an active token by a new one with the same label, role, scopes, rate
// limit and daily token budget (and expiry, unless expiresAt is given), revokes the old one and ends its
// sessions, all in one transaction. The caller must hold the token's permissions, and
// the new token is bounded by the caller's own as Create's is.
func (ts *Tokens) Rotate(ctx context.Context, caller *Principal, id string, expiresAt *time.Time) (*Token, string, error) {
	old, err := ts.Get(ctx, id)
	if err != nil {
		return nil, "", err
	}
	if missing := old.Permissions().Missing(caller.Permissions); len(missing) > 0 {
		return nil, "", &ExceedsError{Missing: missing}
	}
	if s := old.State(ts.now()); s != Active {
		return nil, "", fmt.Errorf("access: rotate token %s (it is %s): %w", id, s, ErrNotActive)
	}
	expiryFrom := ""
	if expiresAt == nil {
		expiresAt, expiryFrom = old.ExpiresAt, fmt.Sprintf(" (kept from token %s, since no expiry was given)", id)
	}
	if err := checkBounds(caller, expiresAt, old.RateLimit, expiryFrom, fmt.Sprintf(" (kept from token %s)", id)); err != nil {
		return nil, "", err
	}
	var tok *Token
	newID, secret := newSecret()
	audit.SetTarget(ctx, fmt.Sprintf("token:%s -> token:%s", id, newID))
	err = ts.db.InTx(ctx, func(tx *store.Tx) (err error) {
		q := tx.Q()
		now := ts.now()
		if _, err := q.RevokeToken(ctx, dbsqlc.RevokeTokenParams{ID: id, Now: &now, Reason: "rotated"}); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return fmt.Errorf("access: rotate token %s (revoked meanwhile): %w", id, ErrNotActive)
			}
			return fmt.Errorf("access: rotate token %s: %w", id, err)
		}
		if _, err := q.EndTokenSessions(ctx, dbsqlc.EndTokenSessionsParams{TokenID: id, Now: &now}); err != nil {
			return fmt.Errorf("access: rotate token %s: %w", id, err)
		}
		tok, err = insertToken(ctx, q, newID, secret, old.UserID, caller.ID(), CreateParams{
			Label: old.Label, Role: old.Role, Scopes: old.Scopes, ExpiresAt: expiresAt, RateLimit: old.RateLimit,
			DailyTokenBudget: old.DailyTokenBudget,
		}, &old.ID)
		return err
	})
	ts.cache.forget(id)
	if err != nil {
		return nil, "", err
	}
	return tok, formatToken(newID, secret), nil
}

// Revoke revokes an active token and ends its sessions. The caller must hold the
// token's permissions.
func (ts *Tokens) Revoke(ctx context.Context, caller *Principal, id, reason string) (*Token, error) {
	tok, err := ts.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if missing := tok.Permissions().Missing(caller.Permissions); len(missing) > 0 {
		return nil, &ExceedsError{Missing: missing}
	}
	err = ts.db.InTx(ctx, func(tx *store.Tx) error {
		q := tx.Q()
		now := ts.now()
		if _, err := q.RevokeToken(ctx, dbsqlc.RevokeTokenParams{ID: id, Now: &now, Reason: reason}); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return fmt.Errorf("access: revoke token %s (it is already revoked): %w", id, ErrNotActive)
			}
			return fmt.Errorf("access: revoke token %s: %w", id, err)
		}
		_, err := q.EndTokenSessions(ctx, dbsqlc.EndTokenSessionsParams{TokenID: id, Now: &now})
		return err
	})
	ts.cache.forget(id)
	if err != nil {
		return nil, err
	}
	return ts.Get(ctx, id)
}

// SetBudget sets the daily token budget of a token that is not revoked (nil removes
// it). The caller must hold the token's permissions. Every replica forgets the cached
// token (the trigger of api_tokens announces the change), so that the budget applies
// from the token's next call.
func (ts *Tokens) SetBudget(ctx context.Context, caller *Principal, id string, budget *int64) (*Token, error) {
	tok, err := ts.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if missing := tok.Permissions().Missing(caller.Permissions); len(missing) > 0 {
		return nil, &ExceedsError{Missing: missing}
	}
	if _, err := ts.db.Q().SetTokenBudget(ctx, dbsqlc.SetTokenBudgetParams{ID: id, DailyTokenBudget: budgetParam(budget)}); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, fmt.Errorf("access: set the budget of token %s (it is revoked): %w", id, ErrNotActive)
		}
		return nil, fmt.Errorf("access: set the budget of token %s: %w", id, err)
	}
	ts.cache.forget(id)
	return ts.Get(ctx, id)
}

// budgetParam is a budget as its column takes it: null for none.
func budgetParam(b *int64) pgtype.Int8 {
	if b == nil {
		return pgtype.Int8{}
	}
	return pgtype.Int8{Int64: *b, Valid: true}
}

// Authenticate checks a token string: well-formed, known, matching secret (compared in
// constant time), not revoked, not expired. The token is read from the verified-token
// cache when it is there (tokencache.go); the secret and the expiry are checked on every
// call all the same. Every failure is ErrUnauthenticated; reason says which, for the
// daemon's own log.
func (ts *Tokens) Authenticate(ctx context.Context, raw string) (p *Principal, reason string, err error) {
	id, secret, ok := parseToken(raw)
	if !ok {
		return nil, "malformed token", ErrUnauthenticated
	}
	tok, err := ts.verified(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, "unknown token", ErrUnauthenticated
	}
	if err != nil {
		return nil, "", err
	}
	if subtle.ConstantTimeCompare(tok.secretHash, hashSecret(kindToken, id, secret)) != 1 {
		return nil, "wrong secret", ErrUnauthenticated
	}
	if s := tok.State(ts.now()); s != Active {
		return nil, "token " + string(s), ErrUnauthenticated
	}
	return tok.principal(Bearer), "", nil
}

// tokenFromRow maps a database row.
func tokenFromRow(r dbsqlc.ApiToken, user, rotatedTo string) *Token {
	t := &Token{
		ID: r.ID, Label: r.Label, UserID: r.UserID, User: user, Role: Role(r.Role),
		RateLimit: int(r.RateLimitPerMinute), CreatedAt: r.CreatedAt, CreatedBy: r.CreatedBy,
		ExpiresAt: r.ExpiresAt, RevokedAt: r.RevokedAt, RevokedReason: r.RevokedReason,
		LastUsedAt: r.LastUsedAt, RotatedTo: rotatedTo, secretHash: r.SecretHash,
	}
	if r.RotatedFrom != nil {
		t.RotatedFrom = *r.RotatedFrom
	}
	if r.DailyTokenBudget.Valid {
		t.DailyTokenBudget = &r.DailyTokenBudget.Int64
	}
	for _, s := range r.Scopes {
		t.Scopes = append(t.Scopes, Permission(s))
	}
	t.permissionsSet = effective(t.Role, t.Scopes)
	return t
}
