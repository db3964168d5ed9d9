package apiserver

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"connectrpc.com/connect"

	"github.com/palyra/palyra/server/internal/errdefs"
	"github.com/palyra/palyra/server/internal/ratelimit"
)

// Reasons (errdefs.Error.Reason) that choose an OpenAI status other than their kind's.
const (
	// ReasonFeatureDisabled marks a refusal for a feature flag that is off: 403.
	ReasonFeatureDisabled = "feature_disabled"
	// ReasonProviderError marks an upstream provider's failure: 502.
	ReasonProviderError = "provider_error"
	// ReasonTooLarge marks a request body over the cap: 413.
	ReasonTooLarge = "request_too_large"
	// ReasonInsufficientQuota marks a call refused because its token spent its daily
	// token budget (ResourceExhausted): 429 with type insufficient_quota, as OpenAI
	// answers an exhausted quota, and x-should-retry: false (the SDKs do not retry).
	ReasonInsufficientQuota = "insufficient_quota"
)

// OpenAIEnvelope is OpenAI's error body: {"error":{"message","type","param","code"}}.
type OpenAIEnvelope struct {
	Error OpenAIErrorObject `json:"error"`
}

// OpenAIErrorObject is the error inside the envelope.
type OpenAIErrorObject struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

// openAIStatus is how one Connect code reads in OpenAI's wire format.
type openAIStatus struct {
	status    int
	typ, code string
}

// openAIStatuses maps the codes connectError gives to OpenAI's statuses, types and
// default codes.
var openAIStatuses = map[connect.Code]openAIStatus{
	connect.CodeInvalidArgument:    {http.StatusBadRequest, "invalid_request_error", ""},
	connect.CodeFailedPrecondition: {http.StatusBadRequest, "invalid_request_error", ""},
	connect.CodeOutOfRange:         {http.StatusBadRequest, "invalid_request_error", ""},
	connect.CodeNotFound:           {http.StatusNotFound, "invalid_request_error", "not_found"},
	connect.CodeAlreadyExists:      {http.StatusConflict, "invalid_request_error", "conflict"},
	connect.CodeAborted:            {http.StatusConflict, "invalid_request_error", "conflict"},
	connect.CodePermissionDenied:   {http.StatusForbidden, "invalid_request_error", "insufficient_permissions"},
	connect.CodeUnauthenticated:    {http.StatusUnauthorized, "invalid_request_error", "invalid_api_key"},
	connect.CodeResourceExhausted:  {http.StatusTooManyRequests, "requests", "rate_limit_exceeded"},
	connect.CodeDeadlineExceeded:   {http.StatusGatewayTimeout, "server_error", "timeout"},
	connect.CodeUnavailable:        {http.StatusServiceUnavailable, "server_error", "service_unavailable"},
	connect.CodeCanceled:           {499, "invalid_request_error", "canceled"},
	connect.CodeUnimplemented:      {http.StatusNotImplemented, "invalid_request_error", "not_implemented"},
	connect.CodeInternal:           {http.StatusInternalServerError, "server_error", "internal_error"},
	connect.CodeDataLoss:           {http.StatusInternalServerError, "server_error", "internal_error"},
	connect.CodeUnknown:            {http.StatusInternalServerError, "server_error", "internal_error"},
}

// reasonStatuses are the statuses that a reason chooses over its kind's.
var reasonStatuses = map[string]int{
	ReasonFeatureDisabled: http.StatusForbidden,
	ReasonProviderError:   http.StatusBadGateway,
	ReasonTooLarge:        http.StatusRequestEntityTooLarge,
}

// OpenAIError is the one translation of the daemon's errors into OpenAI's envelope, for
// the OpenAI REST endpoints: the same translation as connectError (whose code chooses
// the status), the first field violation as param, the reason (or the status's usual
// code) as code, and the retry delay of a rate limit. Internal errors read as
// connectError answers them; the caller logs them (the access call's end does).
func OpenAIError(err error) (status int, retryAfter time.Duration, env OpenAIEnvelope) {
	var ce *connect.Error
	errors.As(connectError(slog.New(slog.DiscardHandler), "", err), &ce)
	s, ok := openAIStatuses[ce.Code()]
	if !ok {
		s = openAIStatuses[connect.CodeInternal]
	}
	status = s.status
	env.Error = OpenAIErrorObject{Message: ce.Message(), Type: s.typ}
	code := s.code
	var e *errdefs.Error
	if errors.As(err, &e) && e.Kind != errdefs.Internal {
		if vs := e.FieldViolations(); len(vs) > 0 {
			env.Error.Param = &vs[0].Field
		}
		if e.Reason != "" {
			code = e.Reason
			if rs, ok := reasonStatuses[e.Reason]; ok {
				status = rs
			}
			if e.Reason == ReasonInsufficientQuota {
				env.Error.Type = ReasonInsufficientQuota
			}
		}
		retryAfter = e.RetryAfter
	}
	if code != "" {
		env.Error.Code = &code
	}
	return status, retryAfter, env
}

// WriteOpenAIError answers err in OpenAI's envelope (OpenAIError), with Retry-After
// when the error asks to wait.
func WriteOpenAIError(w http.ResponseWriter, err error) {
	status, wait, env := OpenAIError(err)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	if wait > 0 {
		h.Set("Retry-After", ratelimit.RetryAfter(wait))
	}
	if env.Error.Type == ReasonInsufficientQuota {
		h.Set("X-Should-Retry", "false")
	}
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(env)
}
