package compat

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/palyra/palyra/internal/retry"
	"github.com/palyra/palyra/internal/sse"
	"github.com/palyra/palyra/server/internal/config"
	"github.com/palyra/palyra/server/internal/errdefs"
	"github.com/palyra/palyra/server/internal/secretref"
)

// Calls to upstreams are tried up to upstreamAttempts times, again only when no byte of
// an answer was passed on: after a failed connection, a 429 or a 5xx.
const (
	upstreamAttempts = 3
	// maxRetryWait is the longest Retry-After of a 429 that palyrad waits out itself.
	maxRetryWait = 2 * time.Second
	// maxErrorBody bounds what is read of an upstream's error answer.
	maxErrorBody = 64 << 10
	// maxChunk bounds one event of an upstream's stream.
	maxChunk = 4 << 20
	// maxCompletion bounds an upstream's completion.
	maxCompletion = 16 << 20
)

// upstream is an OpenAI-compatible provider (compat.providers.<name>), as configured at
// the call.
type upstream struct {
	name    string
	cfg     config.Provider
	secrets Secrets
	client  *http.Client
	log     *slog.Logger
}

// Chat implements Provider.
func (u *upstream) Chat(ctx context.Context, req *ChatRequest, model string) (*Completion, error) {
	ctx, cancel := context.WithTimeout(ctx, u.cfg.Timeout)
	defer cancel()
	res, err := u.do(ctx, req, model)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, maxCompletion+1))
	if err != nil {
		return nil, u.transportError(ctx, err)
	}
	if len(body) > maxCompletion {
		return nil, providerError(u.name, "answered with a completion over %d bytes", maxCompletion)
	}
	var c struct {
		Usage *Usage `json:"usage"`
	}
	if err := json.Unmarshal(body, &c); err != nil {
		return nil, providerError(u.name, "answered with something that is not a chat completion")
	}
	return &Completion{Body: body, Usage: c.Usage}, nil
}

// StreamChat implements Provider: the upstream's chunks are passed on as they arrive.
func (u *upstream) StreamChat(ctx context.Context, req *ChatRequest, model string) (ChunkStream, error) {
	ctx, cancel := context.WithTimeout(ctx, u.cfg.Timeout)
	res, err := u.do(ctx, req, model)
	if err != nil {
		cancel()
		return nil, err
	}
	return &upstreamStream{u: u, ctx: ctx, cancel: cancel, body: res.Body, events: sse.NewReader(res.Body, maxChunk)}, nil
}

// do sends the request, trying again (retry.Backoff) while no answer was accepted, and
// returns a 2xx response.
func (u *upstream) do(ctx context.Context, req *ChatRequest, model string) (*http.Response, error) {
	body, err := req.upstreamBody(model)
	if err != nil {
		return nil, err
	}
	return u.post(ctx, "/chat/completions", body, req.Stream)
}

// post sends body to the endpoint path of the upstream, trying again (retry.Backoff)
// while no answer was accepted, and returns a 2xx response; stream asks for events.
func (u *upstream) post(ctx context.Context, path string, body []byte, stream bool) (*http.Response, error) {
	key, err := u.key(ctx)
	if err != nil {
		return nil, err
	}
	defer clear(key)
	backoff := retry.Backoff{Initial: 100 * time.Millisecond, Max: time.Second}
	for attempt := 1; ; attempt++ {
		hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, u.cfg.BaseURL+path, bytes.NewReader(body))
		if err != nil {
			return nil, providerError(u.name, "has a base URL that does not make a request")
		}
		hreq.Header.Set("Content-Type", "application/json")
		if stream {
			hreq.Header.Set("Accept", "text/event-stream")
		} else {
			hreq.Header.Set("Accept", "application/json")
		}
		if len(key) > 0 {
			hreq.Header.Set("Authorization", "Bearer "+string(key))
		}
		res, err := u.client.Do(hreq)
		var wait time.Duration
		switch {
		case err != nil:
			if ctx.Err() != nil || attempt == upstreamAttempts {
				return nil, u.transportError(ctx, err)
			}
			u.log.Warn("upstream call failed; trying again", "provider", u.name, "attempt", attempt, "err", err)
		case res.StatusCode/100 == 2:
			return res, nil
		default:
			msg, _ := io.ReadAll(io.LimitReader(res.Body, maxErrorBody))
			res.Body.Close()
			retryAfter := parseRetryAfter(res.Header.Get("Retry-After"))
			retriable := res.StatusCode == http.StatusTooManyRequests || res.StatusCode >= 500
			if !retriable || attempt == upstreamAttempts || retryAfter > maxRetryWait {
				return nil, u.statusError(res.StatusCode, retryAfter, msg, key)
			}
			wait = retryAfter
			u.log.Warn("upstream answered an error; trying again", "provider", u.name, "attempt", attempt, "status", res.StatusCode)
		}
		if err := retry.Sleep(ctx, max(wait, backoff.Next())); err != nil {
			return nil, u.transportError(ctx, err)
		}
	}
}

// key resolves the provider's API key; nil when it has none.
func (u *upstream) key(ctx context.Context) ([]byte, error) {
	if u.cfg.APIKey == "" {
		return nil, nil
	}
	ref, err := secretref.Parse(u.cfg.APIKey)
	if err == nil {
		var key []byte
		if key, err = u.secrets.Resolve(ctx, ref); err == nil {
			return key, nil
		}
	}
	u.log.Warn("the API key of an upstream provider cannot be resolved", "provider", u.name, "ref", u.cfg.APIKey, "err", err)
	e := providerError(u.name, "cannot be called: its api_key (%s) cannot be resolved", u.cfg.APIKey)
	e.Cause = err
	return nil, e
}

// transportError is a failure to reach the upstream or to read its answer. Its text
// names neither the URL nor the cause (both stay in palyrad's log).
func (u *upstream) transportError(ctx context.Context, err error) error {
	switch {
	case errors.Is(context.Cause(ctx), context.Canceled):
		return context.Canceled // the caller went away
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return errdefs.New(errdefs.DeadlineExceeded, "provider %s did not answer within its timeout (%s)", u.name, u.cfg.Timeout)
	}
	u.log.Warn("upstream call failed", "provider", u.name, "err", err)
	return providerError(u.name, "could not be reached (the connection failed)")
}

// statusError maps an upstream's error answer: 429 stays a rate limit, 503 and 504 stay
// what they are, the upstream's refusals of palyrad's key and its other 5xx are 502, and
// its other 4xx are the client's request refused (400). The upstream's message is kept,
// without the key.
func (u *upstream) statusError(status int, retryAfter time.Duration, body, key []byte) error {
	msg := upstreamMessage(body)
	if len(key) > 0 {
		msg = strings.ReplaceAll(msg, string(key), "[redacted]")
	}
	detail := fmt.Sprintf("(HTTP %d)", status)
	if msg != "" {
		detail += ": " + msg
	}
	switch {
	case status == http.StatusTooManyRequests:
		return errdefs.Exhausted(retryAfter, "provider %s is rate limiting palyrad %s", u.name, detail)
	case status == http.StatusServiceUnavailable:
		return errdefs.New(errdefs.Unavailable, "provider %s is unavailable %s", u.name, detail)
	case status == http.StatusGatewayTimeout:
		return errdefs.New(errdefs.DeadlineExceeded, "provider %s timed out %s", u.name, detail)
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return providerError(u.name, "refused palyrad's credentials %s: check compat.providers.%s.api_key", detail, u.name)
	case status >= 400 && status < 500:
		return errdefs.New(errdefs.Invalid, "provider %s refused the request %s", u.name, detail)
	}
	return providerError(u.name, "failed %s", detail)
}

// upstreamMessage is the message of an OpenAI error envelope, at most 512 bytes.
func upstreamMessage(body []byte) string {
	var env struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	msg := ""
	if json.Unmarshal(body, &env) == nil {
		msg = env.Error.Message
	}
	if len(msg) > 512 {
		msg = msg[:512] + "..."
	}
	return msg
}

// parseRetryAfter reads a Retry-After header in seconds; 0 when absent or a date.
func parseRetryAfter(v string) time.Duration {
	s, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || s < 0 {
		return 0
	}
	return time.Duration(s) * time.Second
}

// upstreamStream reads an upstream's server-sent events: each event's data is a chunk,
// `[DONE]` the end; an `error` event, or data holding an error envelope, is the
// upstream's failure.
type upstreamStream struct {
	u      *upstream
	ctx    context.Context
	cancel context.CancelFunc
	body   io.ReadCloser
	events *sse.Reader
}

// Next implements ChunkStream.
func (s *upstreamStream) Next() ([]byte, error) {
	ev, err := s.events.Next()
	switch {
	case errors.Is(err, sse.ErrTooLong):
		return nil, providerError(s.u.name, "sent a chunk of more than %d bytes", maxChunk)
	case errors.Is(err, io.EOF) && s.ctx.Err() == nil:
		return nil, providerError(s.u.name, "ended the stream without [DONE]")
	case err != nil:
		if s.ctx.Err() != nil {
			err = s.ctx.Err()
		}
		return nil, s.u.transportError(s.ctx, err)
	}
	data := bytes.TrimSpace(ev.Data)
	if string(data) == "[DONE]" {
		return nil, io.EOF
	}
	if ev.Type == "error" || bytes.HasPrefix(data, []byte(`{"error"`)) {
		return nil, providerError(s.u.name, "failed during the stream: %s", upstreamMessage(data))
	}
	return data, nil
}

// Close implements ChunkStream: it ends the upstream request.
func (s *upstreamStream) Close() error {
	s.cancel()
	return s.body.Close()
}
