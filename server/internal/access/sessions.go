package access

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/palyra/palyra/gen/dbsqlc"
	"github.com/palyra/palyra/server/internal/audit"
	"github.com/palyra/palyra/server/internal/store"
)

// Console sessions. A session is opened with an API token and carried by a cookie
// (HttpOnly, Secure, SameSite=Strict); it acts as that token, stops when the token is
// revoked or expires, and ends 30 minutes after its last use. Calls that change state
// must also send the session's CSRF token in CSRFHeader. Only hashes of the cookie
// secret and the CSRF token are stored.

const (
	// CookieName is the session cookie.
	CookieName = "palyra_session"
	// CSRFHeader carries the session's CSRF token.
	CSRFHeader = "X-Palyra-CSRF"
	// sessionIdle is the sliding expiry.
	sessionIdle = 30 * time.Minute
	// touchEvery bounds how often a session's expiry is written back.
	touchEvery = 15 * time.Second
	// HandoffTTL is how long a hand-off code may be claimed.
	HandoffTTL = time.Minute
)

// Session is a console session.
type Session struct {
	ID        string
	TokenID   string
	CreatedAt time.Time
	ExpiresAt time.Time
}

// Sessions manages console sessions.
type Sessions struct {
	db     *store.Store
	tokens *Tokens
	now    func() time.Time
}

// SessionsOptions are the session manager's dependencies.
type SessionsOptions struct {
	Store *store.Store
	// Tokens authenticates the token behind each session.
	Tokens *Tokens
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// NewSessions returns the session manager.
func NewSessions(opts SessionsOptions) *Sessions {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Sessions{db: opts.Store, tokens: opts.Tokens, now: opts.Now}
}

// Create opens a session for a principal authenticated with a bearer token. It returns
// the session, the cookie to set and the CSRF token.
func (s *Sessions) Create(ctx context.Context, p *Principal) (*Session, *http.Cookie, string, error) {
	if p.Method != Bearer {
		return nil, nil, "", fmt.Errorf("access: open session: %w: open a session with an API token (Authorization: Bearer), not another session", ErrNotSession)
	}
	id, secret := newSecret()
	audit.SetTarget(ctx, "session:"+id)
	csrf := newCSRF()
	row, err := s.db.Q().InsertSession(ctx, dbsqlc.InsertSessionParams{
		ID:         id,
		TokenID:    p.TokenID,
		SecretHash: hashSecret(kindSession, id, secret),
		CsrfHash:   hashSecret(kindCSRF, id, csrf),
		ExpiresAt:  s.expiry(s.now(), p.TokenExpiresAt),
	})
	if err != nil {
		return nil, nil, "", fmt.Errorf("access: open session: %w", err)
	}
	return sessionFromRow(row), sessionCookie(id, secret), csrf, nil
}

// sessionCookie is the cookie that carries a session.
func sessionCookie(id, secret string) *http.Cookie {
	return &http.Cookie{
		Name: CookieName, Value: id + "." + secret, Path: "/",
		HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode,
	}
}

// newCSRF returns a random CSRF token.
func newCSRF() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// Hand-offs. `palyra console` opens the browser signed in without handing it the API
// token: an authenticated call mints a hand-off, a session row that is not yet a
// session. Its code `<id>.<secret>` is hashed under its own kind, so it never passes as
// a session cookie, and its CSRF hash is random, matching no token. Claiming it replaces
// both hashes in one conditional update, turning it into an ordinary session: a code
// works once, and only within HandoffTTL.

// CreateHandoff mints a hand-off for a principal authenticated with a bearer token. It
// returns the code and when it expires.
func (s *Sessions) CreateHandoff(ctx context.Context, p *Principal) (code string, expires time.Time, err error) {
	if p.Method != Bearer {
		return "", time.Time{}, fmt.Errorf("access: hand-off: %w: mint a hand-off with an API token (Authorization: Bearer), not a session", ErrNotSession)
	}
	id, secret := newSecret()
	audit.SetTarget(ctx, "session:"+id)
	unusable := make([]byte, 32)
	_, _ = rand.Read(unusable)
	expires = s.now().Add(HandoffTTL)
	if p.TokenExpiresAt != nil && p.TokenExpiresAt.Before(expires) {
		expires = *p.TokenExpiresAt
	}
	if _, err := s.db.Q().InsertSession(ctx, dbsqlc.InsertSessionParams{
		ID:         id,
		TokenID:    p.TokenID,
		SecretHash: hashSecret(kindHandoff, id, secret),
		CsrfHash:   unusable,
		ExpiresAt:  expires,
	}); err != nil {
		return "", time.Time{}, fmt.Errorf("access: hand-off: %w", err)
	}
	return id + "." + secret, expires, nil
}

// ClaimHandoff turns a hand-off into a session. It returns the session, its principal,
// the cookie to set and the CSRF token; an unknown, claimed or expired code, or one whose
// token is no longer active, is ErrUnauthenticated.
func (s *Sessions) ClaimHandoff(ctx context.Context, code string) (*Session, *Principal, *http.Cookie, string, error) {
	id, secret, ok := strings.Cut(code, ".")
	if !ok || len(id) != 26 || secret == "" || len(secret) > 128 {
		return nil, nil, nil, "", ErrUnauthenticated
	}
	audit.SetTarget(ctx, "session:"+id)
	row, err := s.db.Q().GetSession(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil, nil, "", ErrUnauthenticated
	}
	if err != nil {
		return nil, nil, nil, "", fmt.Errorf("access: claim hand-off: %w", err)
	}
	handoff := hashSecret(kindHandoff, id, secret)
	if subtle.ConstantTimeCompare(row.SecretHash, handoff) != 1 {
		return nil, nil, nil, "", ErrUnauthenticated
	}
	tok, err := s.tokens.verified(ctx, row.TokenID)
	if err != nil {
		return nil, nil, nil, "", err
	}
	now := s.now()
	if tok.State(now) != Active {
		return nil, nil, nil, "", ErrUnauthenticated
	}
	_, newSecret := newSecret()
	csrf := newCSRF()
	row, err = s.db.Q().ClaimHandoff(ctx, dbsqlc.ClaimHandoffParams{
		ID:          id,
		HandoffHash: handoff,
		SecretHash:  hashSecret(kindSession, id, newSecret),
		CsrfHash:    hashSecret(kindCSRF, id, csrf),
		ExpiresAt:   s.expiry(now, tok.ExpiresAt),
		Now:         now,
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil, nil, "", ErrUnauthenticated // claimed meanwhile, or expired
	}
	if err != nil {
		return nil, nil, nil, "", fmt.Errorf("access: claim hand-off: %w", err)
	}
	p := tok.principal(SessionCookie)
	p.SessionID = id
	return sessionFromRow(row), p, sessionCookie(id, newSecret), csrf, nil
}

// expiry is the sliding expiry from now, never after the token's own.
func (s *Sessions) expiry(now time.Time, tokenExpires *time.Time) time.Time {
	at := now.Add(sessionIdle)
	if tokenExpires != nil && tokenExpires.Before(at) {
		at = *tokenExpires
	}
	return at
}

// Authenticate checks a session cookie value and the token behind it, slides the
// session's expiry, and returns the principal. Every failure is ErrUnauthenticated;
// reason says which, for the daemon's own log.
func (s *Sessions) Authenticate(ctx context.Context, cookie string) (p *Principal, reason string, err error) {
	id, secret, ok := strings.Cut(cookie, ".")
	if !ok || len(id) != 26 || secret == "" || len(secret) > 128 {
		return nil, "malformed session cookie", ErrUnauthenticated
	}
	row, err := s.db.Q().GetSession(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, "unknown session", ErrUnauthenticated
	}
	if err != nil {
		return nil, "", fmt.Errorf("access: session: %w", err)
	}
	if subtle.ConstantTimeCompare(row.SecretHash, hashSecret(kindSession, id, secret)) != 1 {
		return nil, "wrong session secret", ErrUnauthenticated
	}
	now := s.now()
	switch {
	case row.EndedAt != nil:
		return nil, "session ended", ErrUnauthenticated
	case !now.Before(row.ExpiresAt):
		return nil, "session expired", ErrUnauthenticated
	}
	// The token may come from the verified-token cache: revoking or rotating it ends
	// the session itself, which is read from the database above.
	tok, err := s.tokens.verified(ctx, row.TokenID)
	if err != nil {
		return nil, "", err
	}
	if st := tok.State(now); st != Active {
		return nil, "session token " + string(st), ErrUnauthenticated
	}
	if now.Sub(row.LastSeenAt) >= touchEvery {
		_, err := s.db.Q().TouchSession(ctx, dbsqlc.TouchSessionParams{ID: id, Now: now, ExpiresAt: s.expiry(now, tok.ExpiresAt)})
		if errors.Is(err, store.ErrNotFound) {
			return nil, "session ended meanwhile", ErrUnauthenticated
		}
		if err != nil {
			return nil, "", fmt.Errorf("access: session: %w", err)
		}
	}
	p = tok.principal(SessionCookie)
	p.SessionID, p.csrfHash = id, row.CsrfHash
	return p, "", nil
}

// CheckCSRF compares the CSRF header of a cookie-authenticated call with the session's
// token, in constant time.
func (s *Sessions) CheckCSRF(p *Principal, header string) bool {
	return header != "" && subtle.ConstantTimeCompare(p.csrfHash, hashSecret(kindCSRF, p.SessionID, header)) == 1
}

// Get returns a session.
func (s *Sessions) Get(ctx context.Context, id string) (*Session, error) {
	row, err := s.db.Q().GetSession(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("access: session %s: %w", id, err)
	}
	return sessionFromRow(row), nil
}

// End ends a session.
func (s *Sessions) End(ctx context.Context, id string) error {
	now := s.now()
	if _, err := s.db.Q().EndSession(ctx, dbsqlc.EndSessionParams{ID: id, Now: &now}); err != nil {
		return fmt.Errorf("access: end session %s: %w", id, err)
	}
	return nil
}

func sessionFromRow(r dbsqlc.Session) *Session {
	return &Session{ID: r.ID, TokenID: r.TokenID, CreatedAt: r.CreatedAt, ExpiresAt: r.ExpiresAt}
}
