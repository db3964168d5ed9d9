package daemon_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/types/known/timestamppb"

	accessv1 "github.com/palyra/palyra/gen/go/palyra/access/v1"
	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	"github.com/palyra/palyra/gen/go/palyra/controlplane/v1/controlplanev1connect"
	"github.com/palyra/palyra/server/internal/access"
)

// wantRefusal fails t unless err has code and a message holding every part.
func wantRefusal(t *testing.T, what string, err error, code connect.Code, parts ...string) {
	t.Helper()
	if connect.CodeOf(err) != code {
		t.Errorf("%s: got %v, want %s", what, err, code)
		return
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("%s: %q does not say %q", what, err, p)
		}
	}
}

// TestTokensAreBoundedByTheirCreator is issue 10's token escalation through a real
// palyrad: a 1-hour admin token created a never-expiring 100,000/min token and rotated
// itself to expire in 2099. A new or rotated token now expires no later than the
// caller's own token and allows no more calls a minute; the refusals name the bound.
// A console session is bounded by its token.
func TestTokensAreBoundedByTheirCreator(t *testing.T) {
	t.Parallel()
	b := startAccess(t)
	ctx := t.Context()
	hour := time.Now().Add(time.Hour).Truncate(time.Second)
	adminTok, admin := b.createToken(t, &accessv1.CreateTokenRequest{
		Label: "admin-1h", Role: accessv1.Role_ROLE_ADMIN, ExpireTime: timestamppb.New(hour), RateLimitPerMinute: new(uint32(60)),
	})
	longTok, _ := b.createToken(t, &accessv1.CreateTokenRequest{Label: "ci", Role: accessv1.Role_ROLE_OPERATOR, RateLimitPerMinute: new(uint32(60))})
	fastTok, _ := b.createToken(t, &accessv1.CreateTokenRequest{
		Label: "fast", Role: accessv1.Role_ROLE_OPERATOR, ExpireTime: timestamppb.New(hour.Add(-time.Minute)), RateLimitPerMinute: new(uint32(600)),
	})
	c := b.accessClient(admin)
	bound := hour.UTC().Format(time.RFC3339)
	create := func(expire *timestamppb.Timestamp, rate *uint32) (*accessv1.Token, error) {
		res, err := c.CreateToken(ctx, connect.NewRequest(&accessv1.CreateTokenRequest{
			Label: "x", Role: accessv1.Role_ROLE_OPERATOR, ExpireTime: expire, RateLimitPerMinute: rate,
		}))
		if err != nil {
			return nil, err
		}
		return res.Msg.GetToken(), nil
	}

	// The issue's: never expiring, 100,000 calls a minute.
	_, err := create(nil, new(uint32(100000)))
	wantRefusal(t, "a never-expiring 100000/min token", err, connect.CodePermissionDenied, "never expire", "expires at "+bound)
	_, err = create(nil, nil)
	wantRefusal(t, "a never-expiring token", err, connect.CodePermissionDenied, "never expire", "expires at "+bound)
	_, err = create(timestamppb.New(hour.Add(time.Minute)), nil)
	wantRefusal(t, "a token that outlives the caller's", err, connect.CodePermissionDenied, "expires at "+bound)
	_, err = create(timestamppb.New(hour.Add(-time.Minute)), new(uint32(100000)))
	wantRefusal(t, "a faster token", err, connect.CodePermissionDenied, "100000 calls a minute", "your token's 60")
	tok, err := create(timestamppb.New(hour), new(uint32(60)))
	if err != nil || !tok.GetExpireTime().AsTime().Equal(hour) || tok.GetRateLimitPerMinute() != 60 {
		t.Errorf("a token at the bounds: %v, %v", tok, err)
	}
	tok, err = create(timestamppb.New(hour.Add(-time.Minute)), nil)
	if err != nil || tok.GetRateLimitPerMinute() != 60 {
		t.Errorf("the default rate limit of a token created by a 60/min token: %v, %v; want 60", tok, err)
	}

	// Rotation: itself to 2099, a never-expiring token, a faster token.
	_, err = c.RotateToken(ctx, connect.NewRequest(&accessv1.RotateTokenRequest{
		Id: adminTok.GetId(), ExpireTime: timestamppb.New(time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC)),
	}))
	wantRefusal(t, "rotating itself to 2099", err, connect.CodePermissionDenied, "2099-01-01T00:00:00Z", "expires at "+bound)
	_, err = c.RotateToken(ctx, connect.NewRequest(&accessv1.RotateTokenRequest{Id: longTok.GetId()}))
	wantRefusal(t, "rotating a never-expiring token", err, connect.CodePermissionDenied, "never expire", "expires at "+bound)
	_, err = c.RotateToken(ctx, connect.NewRequest(&accessv1.RotateTokenRequest{Id: fastTok.GetId()}))
	wantRefusal(t, "rotating a faster token", err, connect.CodePermissionDenied, "600 calls a minute", "your token's 60")
	rot, err := c.RotateToken(ctx, connect.NewRequest(&accessv1.RotateTokenRequest{Id: longTok.GetId(), ExpireTime: timestamppb.New(hour)}))
	if err != nil || !rot.Msg.GetToken().GetExpireTime().AsTime().Equal(hour) {
		t.Errorf("rotating a never-expiring token to the caller's expiry: %v, %v", rot, err)
	}
	rot, err = c.RotateToken(ctx, connect.NewRequest(&accessv1.RotateTokenRequest{Id: adminTok.GetId()}))
	if err != nil || !rot.Msg.GetToken().GetExpireTime().AsTime().Equal(hour) {
		t.Fatalf("rotating itself, keeping its expiry: %v, %v", rot, err)
	}
	admin = rot.Msg.GetSecret()

	// A console session acts as its token, with its bounds.
	sess, err := controlplanev1connect.NewSessionServiceClient(b.client(admin), b.baseURL).CreateSession(ctx, connect.NewRequest(&controlplanev1.CreateSessionRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{"Cookie": {strings.SplitN(sess.Header().Get("Set-Cookie"), ";", 2)[0]}}
	h.Set(access.CSRFHeader, sess.Msg.GetCsrfToken())
	for name, req := range map[string]*accessv1.CreateTokenRequest{
		"never expiring": {Label: "x", Role: accessv1.Role_ROLE_OPERATOR},
		"faster":         {Label: "x", Role: accessv1.Role_ROLE_OPERATOR, ExpireTime: timestamppb.New(hour), RateLimitPerMinute: new(uint32(61))},
	} {
		r := connect.NewRequest(req)
		maps(r.Header(), h)
		_, err := b.accessClient("").CreateToken(ctx, r)
		wantRefusal(t, "a session creates a "+name+" token", err, connect.CodePermissionDenied, "your token")
	}
}

// TestTokenScopesWithinTheRole checks that a scope outside the new token's role, which
// made a token without permissions, is refused with InvalidArgument naming it.
func TestTokenScopesWithinTheRole(t *testing.T) {
	t.Parallel()
	b := startAccess(t)
	c := b.accessClient(b.owner)
	for name, scopes := range map[string][]string{
		"the only scope":   {"tokens.manage"},
		"one of two":       {"nodes.read", "tokens.manage"},
		"owner-only scope": {"secrets.read"},
	} {
		_, err := c.CreateToken(t.Context(), connect.NewRequest(&accessv1.CreateTokenRequest{Label: "x", Role: accessv1.Role_ROLE_OPERATOR, Scopes: scopes}))
		bad := scopes[len(scopes)-1]
		wantRefusal(t, name, err, connect.CodeInvalidArgument, bad, "role operator")
		var ce *connect.Error
		if !errors.As(err, &ce) {
			continue
		}
		found := false
		for _, d := range ce.Details() {
			if v, derr := d.Value(); derr == nil {
				if br, ok := v.(*errdetails.BadRequest); ok && len(br.GetFieldViolations()) == 1 &&
					br.GetFieldViolations()[0].GetField() == "scopes["+string(rune('0'+len(scopes)-1))+"]" {
					found = true
				}
			}
		}
		if !found {
			t.Errorf("%s: no BadRequest detail naming the field: %v", name, ce.Details())
		}
	}
	res, err := c.CreateToken(t.Context(), connect.NewRequest(&accessv1.CreateTokenRequest{Label: "x", Role: accessv1.Role_ROLE_OPERATOR, Scopes: []string{"nodes.read"}}))
	if err != nil || strings.Join(res.Msg.GetToken().GetPermissions(), ",") != "nodes.read" {
		t.Errorf("a scope within the role: %v, %v", res, err)
	}
}
