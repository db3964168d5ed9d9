package client

import (
	"errors"
	"strings"
	"testing"

	"connectrpc.com/connect"

	"github.com/palyra/palyra/internal/retry"
)

// TestAuthExplain checks the advice given for refused tokens and rate limits, and that
// no explanation repeats the token.
func TestAuthExplain(t *testing.T) {
	t.Parallel()
	unauth := connect.NewError(connect.CodeUnauthenticated, errors.New("missing or invalid credentials"))
	limited := connect.NewError(connect.CodeResourceExhausted, errors.New("token:01J is over its rate limit: retry in 2.5s"))
	limited.Meta().Set("Retry-After", "3")
	tests := map[string]struct {
		err  error
		hint tokenHint
		want []string
	}{
		"no token": {
			err: unauth, hint: tokenHint{},
			want: []string{"not authenticated: no API token was given", "palyra auth login", "PALYRA_TOKEN"},
		},
		"token from the environment": {
			err: unauth, hint: tokenHint{present: true, source: "PALYRA_TOKEN", advice: "check PALYRA_TOKEN"},
			want: []string{"not authenticated: the server refused the API token from PALYRA_TOKEN", "unknown, revoked or expired", "check PALYRA_TOKEN"},
		},
		"token without advice": {
			err: unauth, hint: tokenHint{present: true},
			want: []string{"not authenticated", "palyra auth login"},
		},
		"rate limited": {
			err: limited, hint: tokenHint{present: true},
			want: []string{"rate limited: token:01J is over its rate limit", "Retry after 3 s"},
		},
		"permission denied": {
			err:  connect.NewError(connect.CodePermissionDenied, errors.New("this call needs the permission tokens.manage")),
			want: []string{"permission denied: this call needs the permission tokens.manage"},
		},
	}
	for name, tt := range tests {
		got := explain(tt.err, "https://127.0.0.1:7443", tt.hint)
		var e *Error
		if !errors.As(got, &e) || e.Code != connect.CodeOf(tt.err) {
			t.Errorf("%s: %v is not an *Error with code %v", name, got, connect.CodeOf(tt.err))
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(got.Error(), w) {
				t.Errorf("%s: %q lacks %q", name, got, w)
			}
		}
		if !errors.Is(got, tt.err) {
			t.Errorf("%s: the original error is not in the chain", name)
		}
	}
}

// TestAuthTokenChecked checks that New refuses a token that cannot be a header value,
// without showing it.
func TestAuthTokenChecked(t *testing.T) {
	t.Parallel()
	_, err := New(Options{URL: "https://127.0.0.1:7443", Token: "plr_x_se cret\n", TokenSource: "PALYRA_TOKEN"})
	if err == nil || !strings.Contains(err.Error(), "the API token from PALYRA_TOKEN contains spaces") || strings.Contains(err.Error(), "se cret") {
		t.Errorf("New = %v", err)
	}
	if _, err := New(Options{URL: "https://127.0.0.1:7443", Token: "plr_x_secret"}); err != nil {
		t.Errorf("New with a good token: %v", err)
	}
}

// TestExplainedTransient: Explain keeps the error it explains in the chain, so that
// retry.Transient still tells a failure of the connection from palyrad's answer. (The
// classification itself moved to internal/retry, TestTransient, when the node agent's
// and the CLI's lists became one.)
func TestExplainedTransient(t *testing.T) {
	t.Parallel()
	answer := connect.NewWireError(connect.CodeInternal, errors.New("palyrad says no"))
	reset := connect.NewError(connect.CodeInternal, errors.New("connection reset"))
	if retry.Transient(explain(answer, "https://x", tokenHint{})) {
		t.Error("an explained Internal answer is transient")
	}
	if !retry.Transient(explain(reset, "https://x", tokenHint{})) {
		t.Error("an explained stream reset is not transient")
	}
}
