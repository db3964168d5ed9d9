package client

import (
	"errors"
	"strings"
	"testing"

	"connectrpc.com/connect"
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

// TestRetryable: a failure of the connection, or palyrad's Unavailable, is retried;
// every other answer of palyrad is final, InvalidArgument and Internal included, and
// so is an error that is not a call's.
func TestRetryable(t *testing.T) {
	t.Parallel()
	answer := func(c connect.Code) error { return connect.NewWireError(c, errors.New("palyrad says no")) }
	local := func(c connect.Code) error { return connect.NewError(c, errors.New("connection reset")) }
	for name, tc := range map[string]struct {
		err  error
		want bool
	}{
		"answered unavailable":         {answer(connect.CodeUnavailable), true},
		"answered aborted":             {answer(connect.CodeAborted), true},
		"answered invalid argument":    {answer(connect.CodeInvalidArgument), false},
		"answered internal":            {answer(connect.CodeInternal), false},
		"answered unknown":             {answer(connect.CodeUnknown), false},
		"answered failed precondition": {answer(connect.CodeFailedPrecondition), false},
		"answered rate limited":        {answer(connect.CodeResourceExhausted), false},
		"connection unavailable":       {local(connect.CodeUnavailable), true},
		"stream reset (internal)":      {local(connect.CodeInternal), true},
		"connection unknown":           {local(connect.CodeUnknown), true},
		"local invalid argument":       {local(connect.CodeInvalidArgument), false},
		"deadline":                     {local(connect.CodeDeadlineExceeded), false},
		"explained internal answer":    {explain(answer(connect.CodeInternal), "https://x", tokenHint{}), false},
		"explained reset":              {explain(local(connect.CodeInternal), "https://x", tokenHint{}), true},
		"not a call's":                 {errors.New("write the output: broken pipe"), false},
	} {
		if got := Retryable(tc.err); got != tc.want {
			t.Errorf("%s: Retryable(%v) = %v, want %v", name, tc.err, got, tc.want)
		}
	}
}
