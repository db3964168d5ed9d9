package access

import (
	"context"
	"net/http"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	"github.com/palyra/palyra/gen/go/palyra/controlplane/v1/controlplanev1connect"
	"github.com/palyra/palyra/server/internal/audit"
	"github.com/palyra/palyra/server/internal/errdefs"
)

// SessionHandler serves SessionService.
type SessionHandler struct {
	sessions *Sessions
}

var _ controlplanev1connect.SessionServiceHandler = (*SessionHandler)(nil)

// NewSessionHandler returns the SessionService handler.
func NewSessionHandler(s *Sessions) *SessionHandler { return &SessionHandler{sessions: s} }

// CreateSession opens a session for the bearer token of the call and sets its cookie.
func (h *SessionHandler) CreateSession(ctx context.Context, _ *connect.Request[controlplanev1.CreateSessionRequest]) (*connect.Response[controlplanev1.CreateSessionResponse], error) {
	p, err := Caller(ctx)
	if err != nil {
		return nil, err
	}
	if p.Method != Bearer {
		return nil, errdefs.Wrap(ErrNotSession, errdefs.FailedPrecondition, "wrong kind of credentials for this call: open a session with an API token (Authorization: Bearer), not with another session")
	}
	s, cookie, csrf, err := h.sessions.Create(ctx, p) // names the target
	if err != nil {
		return nil, err
	}
	res := connect.NewResponse(&controlplanev1.CreateSessionResponse{
		Session:   sessionProto(s, p),
		CsrfToken: csrf,
	})
	res.Header().Add("Set-Cookie", cookie.String())
	return res, nil
}

// CreateHandoff mints a single-use hand-off code for the bearer token of the call.
func (h *SessionHandler) CreateHandoff(ctx context.Context, _ *connect.Request[controlplanev1.CreateHandoffRequest]) (*connect.Response[controlplanev1.CreateHandoffResponse], error) {
	p, err := Caller(ctx)
	if err != nil {
		return nil, err
	}
	if p.Method != Bearer {
		return nil, errdefs.Wrap(ErrNotSession, errdefs.FailedPrecondition, "wrong kind of credentials for this call: mint a hand-off with an API token (Authorization: Bearer), not with a session")
	}
	code, expires, err := h.sessions.CreateHandoff(ctx, p) // names the target
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&controlplanev1.CreateHandoffResponse{Code: code, ExpireTime: timestamppb.New(expires)}), nil
}

// ClaimHandoff exchanges a hand-off code for a session and sets its cookie.
func (h *SessionHandler) ClaimHandoff(ctx context.Context, req *connect.Request[controlplanev1.ClaimHandoffRequest]) (*connect.Response[controlplanev1.ClaimHandoffResponse], error) {
	s, p, cookie, csrf, err := h.sessions.ClaimHandoff(ctx, req.Msg.GetCode()) // names the target
	if err != nil {
		return nil, err
	}
	res := connect.NewResponse(&controlplanev1.ClaimHandoffResponse{Session: sessionProto(s, p), CsrfToken: csrf})
	res.Header().Add("Set-Cookie", cookie.String())
	return res, nil
}

// GetSession describes the session of the call.
func (h *SessionHandler) GetSession(ctx context.Context, _ *connect.Request[controlplanev1.GetSessionRequest]) (*connect.Response[controlplanev1.GetSessionResponse], error) {
	p, err := sessionCaller(ctx)
	if err != nil {
		return nil, err
	}
	s, err := h.sessions.Get(ctx, p.SessionID)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&controlplanev1.GetSessionResponse{Session: sessionProto(s, p)}), nil
}

// DeleteSession ends the session of the call and clears its cookie.
func (h *SessionHandler) DeleteSession(ctx context.Context, _ *connect.Request[controlplanev1.DeleteSessionRequest]) (*connect.Response[controlplanev1.DeleteSessionResponse], error) {
	p, err := sessionCaller(ctx)
	if err != nil {
		return nil, err
	}
	audit.SetTarget(ctx, "session:"+p.SessionID)
	if err := h.sessions.End(ctx, p.SessionID); err != nil {
		return nil, err
	}
	res := connect.NewResponse(&controlplanev1.DeleteSessionResponse{})
	clear := &http.Cookie{Name: CookieName, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode}
	res.Header().Add("Set-Cookie", clear.String())
	return res, nil
}

// sessionCaller returns the principal of a call authenticated by a session cookie.
func sessionCaller(ctx context.Context) (*Principal, error) {
	p, err := Caller(ctx)
	if err != nil {
		return nil, err
	}
	if p.Method != SessionCookie {
		return nil, errdefs.Wrap(ErrNotSession, errdefs.FailedPrecondition, "wrong kind of credentials for this call: this call is about the console session the call is made with; send the session cookie")
	}
	return p, nil
}

func sessionProto(s *Session, p *Principal) *controlplanev1.Session {
	pp := p.Proto()
	pp.Method = 0 // the session's principal, not the calling method
	pp.SessionId = s.ID
	return &controlplanev1.Session{
		Id:         s.ID,
		Principal:  pp,
		CreateTime: timestamppb.New(s.CreatedAt),
		ExpireTime: timestamppb.New(s.ExpiresAt),
	}
}
