package apiserver

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/palyra/palyra/server/internal/errdefs"
)

func TestOpenAIErrorStatuses(t *testing.T) {
	for _, c := range []struct {
		err        error
		status     int
		typ, code  string
		param      string
		retryAfter time.Duration
		message    string
	}{
		{errdefs.New(errdefs.Unauthenticated, "who?"), http.StatusUnauthorized, "invalid_request_error", "invalid_api_key", "", 0, "who?"},
		{errdefs.New(errdefs.PermissionDenied, "no"), http.StatusForbidden, "invalid_request_error", "insufficient_permissions", "", 0, "no"},
		{&errdefs.Error{Kind: errdefs.FailedPrecondition, Reason: ReasonFeatureDisabled, Message: "off"}, http.StatusForbidden, "invalid_request_error", "feature_disabled", "", 0, "off"},
		{&errdefs.Error{Kind: errdefs.NotFound, Field: "model", Reason: "model_not_found", Message: "nope"}, http.StatusNotFound, "invalid_request_error", "model_not_found", "model", 0, "model: nope"},
		{errdefs.InvalidField("messages[0].role", "bad"), http.StatusBadRequest, "invalid_request_error", "", "messages[0].role", 0, "messages[0].role: bad"},
		{errdefs.Exhausted(1500*time.Millisecond, "slow"), http.StatusTooManyRequests, "requests", "rate_limit_exceeded", "", 1500 * time.Millisecond, "slow"},
		{&errdefs.Error{Kind: errdefs.Unavailable, Reason: ReasonProviderError, Message: "broke"}, http.StatusBadGateway, "server_error", "provider_error", "", 0, "broke"},
		{&errdefs.Error{Kind: errdefs.Invalid, Reason: ReasonTooLarge, Message: "big"}, http.StatusRequestEntityTooLarge, "invalid_request_error", "request_too_large", "", 0, "big"},
		{errdefs.New(errdefs.Unavailable, "later"), http.StatusServiceUnavailable, "server_error", "service_unavailable", "", 0, "later"},
		{errdefs.New(errdefs.DeadlineExceeded, "slow"), http.StatusGatewayTimeout, "server_error", "timeout", "", 0, "slow"},
		{context.Canceled, 499, "invalid_request_error", "canceled", "", 0, "the call was canceled"},
		{errors.New("secret detail"), http.StatusInternalServerError, "server_error", "internal_error", "", 0, "internal error; the daemon's log has the details"},
	} {
		status, wait, env := OpenAIError(c.err)
		e := env.Error
		param, code := "", ""
		if e.Param != nil {
			param = *e.Param
		}
		if e.Code != nil {
			code = *e.Code
		}
		if status != c.status || e.Type != c.typ || code != c.code || param != c.param || wait != c.retryAfter || e.Message != c.message {
			t.Errorf("%v: %d %v %q %q %q %q, want %d %v %q %q %q %q", c.err, status, wait, e.Type, code, param, e.Message,
				c.status, c.retryAfter, c.typ, c.code, c.param, c.message)
		}
	}
}
