package daemon_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/packages/ssestream"

	accessv1 "github.com/palyra/palyra/gen/go/palyra/access/v1"
	compatv1 "github.com/palyra/palyra/gen/go/palyra/compat/v1"
	"github.com/palyra/palyra/gen/go/palyra/compat/v1/compatv1connect"
	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	"github.com/palyra/palyra/server/internal/store/storetest"
)

// fakeUpstream is an OpenAI-compatible provider on loopback. It answers with the last
// user message, reversed word by word, unless that message asks for something else:
// "fail-once ..." fails with 500 on the first call, "fail-always" always does,
// "refuse" answers 400, "hang" streams one chunk and waits for the request to end.
type fakeUpstream struct {
	*httptest.Server
	mu       sync.Mutex
	calls    map[string]int
	requests []map[string]any
	auth     []string
	// hung is closed when a "hang" request ended (the client went away).
	hung chan struct{}
}

const upstreamKey = "sk-fake-7d1c0f3b9a"

func newFakeUpstream(t *testing.T) *fakeUpstream {
	f := &fakeUpstream{calls: map[string]int{}, hung: make(chan struct{})}
	f.Server = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeUpstream) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/v1/embeddings" && r.Method == http.MethodPost {
		f.embeddings(w, r)
		return
	}
	if r.URL.Path != "/v1/chat/completions" || r.Method != http.MethodPost {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	var req map[string]any
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, "bad json", http.StatusBadRequest)
		return
	}
	msgs, _ := req["messages"].([]any)
	last, _ := msgs[len(msgs)-1].(map[string]any)["content"].(string)
	f.mu.Lock()
	f.requests = append(f.requests, req)
	f.auth = append(f.auth, r.Header.Get("Authorization"))
	f.calls[last]++
	n := f.calls[last]
	f.mu.Unlock()
	fail := func(status int, msg string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		fmt.Fprintf(w, `{"error":{"message":%q,"type":"server_error","param":null,"code":null}}`, msg)
	}
	switch {
	case strings.HasPrefix(last, "fail-once") && n == 1, last == "fail-always":
		fail(http.StatusInternalServerError, "upstream broke; your key "+upstreamKey+" is fine")
		return
	case last == "throttle":
		w.Header().Set("Retry-After", "30")
		fail(http.StatusTooManyRequests, "slow down")
		return
	case last == "refuse":
		fail(http.StatusBadRequest, "temperature must be at most 2")
		return
	}
	words := strings.Fields(last)
	slices.Reverse(words)
	answer := strings.Join(words, " ")
	model := req["model"]
	usage := map[string]any{"prompt_tokens": 7, "completion_tokens": len(words), "total_tokens": 7 + len(words)}
	if req["stream"] != true {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"id": "chatcmpl-fake", "object": "chat.completion", "created": 1700000000, "model": model,
			"choices": []any{map[string]any{"index": 0, "message": map[string]any{"role": "assistant", "content": answer, "refusal": nil},
				"logprobs": nil, "finish_reason": "stop", "x_provider_field": true}},
			"usage": usage,
		})
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	rc := http.NewResponseController(w)
	send := func(choices []any, usage any) {
		b, _ := json.Marshal(map[string]any{"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1700000000,
			"model": model, "choices": choices, "usage": usage})
		fmt.Fprintf(w, "data: %s\n\n", b)
		_ = rc.Flush()
	}
	delta := func(d map[string]any, finish any) []any {
		return []any{map[string]any{"index": 0, "delta": d, "finish_reason": finish}}
	}
	send(delta(map[string]any{"role": "assistant", "content": ""}, nil), nil)
	if last == "hang" {
		<-r.Context().Done()
		close(f.hung)
		return
	}
	if last == "break" {
		return // the stream ends without [DONE]
	}
	for i, w := range words {
		if i > 0 {
			w = " " + w
		}
		send(delta(map[string]any{"content": w}, nil), nil)
	}
	send(delta(map[string]any{}, "stop"), nil)
	if so, _ := req["stream_options"].(map[string]any); so["include_usage"] == true {
		send([]any{}, usage)
	}
	fmt.Fprint(w, "data: [DONE]\n\n")
}

// lastRequest is the last request the fake received, and its Authorization header.
func (f *fakeUpstream) lastRequest() (map[string]any, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.requests[len(f.requests)-1], f.auth[len(f.auth)-1]
}

// compatBed is a daemon serving palyra-echo and the fake upstream as provider "fake".
type compatBed struct {
	*testDaemon
	fake *fakeUpstream
}

func startCompat(t *testing.T) *compatBed {
	t.Helper()
	return startCompatOn(t, storetest.URL(t))
}

// startCompatOn is startCompat on the database at dbURL.
func startCompatOn(t *testing.T, dbURL string) *compatBed {
	t.Helper()
	td := startDaemon(t, "--database-url", dbURL, "--data-dir", t.TempDir(), "--compat-model", "palyra-echo")
	fake := newFakeUpstream(t)
	td.putSecret(t, td.owner, "fake", upstreamKey)
	_, err := td.configClient(td.owner).UpdateConfig(t.Context(), connect.NewRequest(&controlplanev1.UpdateConfigRequest{
		Change: &controlplanev1.ConfigChangeSpec{Set: []*controlplanev1.ConfigSet{
			{Key: "compat.providers.fake.base_url", Value: textValue(fake.URL + "/v1")},
			{Key: "compat.providers.fake.api_key", Value: textValue("secret:fake")},
			{Key: "compat.providers.fake.models", Value: textValue("fake-model,alias=upstream-model")},
		}},
		ExpectedRevision: new(int64), Reason: "test",
	}))
	if err != nil {
		t.Fatal(err)
	}
	return &compatBed{testDaemon: td, fake: fake}
}

func (b *compatBed) setFlag(t *testing.T, key string, on bool) {
	t.Helper()
	if _, err := b.flagsClient(b.owner).SetFlag(t.Context(), connect.NewRequest(&accessv1.SetFlagRequest{Key: key, Enabled: on})); err != nil {
		t.Fatalf("set %s %v: %v", key, on, err)
	}
}

// sdk is the official Go client pointed at the daemon with token, without retries.
func (b *compatBed) sdk(token string) openai.Client {
	return openai.NewClient(option.WithBaseURL(b.baseURL+"/v1/"), option.WithAPIKey(token),
		option.WithHTTPClient(b.client("")), option.WithMaxRetries(0))
}

// apiError is err as the SDK's error, with its status, code and param.
func apiError(t *testing.T, what string, err error, status int, code, param string) *openai.Error {
	t.Helper()
	var e *openai.Error
	if !errors.As(err, &e) {
		t.Fatalf("%s: %v (%T), want an *openai.Error", what, err, err)
	}
	if e.StatusCode != status || e.Code != code || e.Param != param {
		t.Errorf("%s: status %d code %q param %q (%s), want %d %q %q", what, e.StatusCode, e.Code, e.Param, e.Message, status, code, param)
	}
	return e
}

// collect reads a stream, returning the joined deltas and the usage chunk's usage.
func collect(t *testing.T, what string, next func() bool, cur func() openai.ChatCompletionChunk, errf func() error) (string, *openai.CompletionUsage) {
	t.Helper()
	var text strings.Builder
	var usage *openai.CompletionUsage
	for next() {
		c := cur()
		for _, ch := range c.Choices {
			text.WriteString(ch.Delta.Content)
		}
		if c.JSON.Usage.Valid() && c.Usage.TotalTokens > 0 {
			if len(c.Choices) != 0 {
				t.Errorf("%s: the usage chunk has choices", what)
			}
			u := c.Usage
			usage = &u
		}
	}
	if err := errf(); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return text.String(), usage
}

// TestOpenAIGoSDK is the acceptance of the OpenAI REST endpoints with the official Go
// client: models, chat completions against palyra-echo and an upstream provider,
// streamed and not, and the errors as the SDK's own.
func TestOpenAIGoSDK(t *testing.T) {
	t.Parallel()
	b := startCompat(t)
	ctx := t.Context()
	_, operator := b.createToken(t, &accessv1.CreateTokenRequest{Label: "sdk", Role: accessv1.Role_ROLE_OPERATOR})
	c := b.sdk(operator)

	_, err := c.Models.List(ctx)
	e := apiError(t, "models with compat_api off", err, http.StatusForbidden, "feature_disabled", "")
	if !strings.Contains(e.Message, "compat_api") {
		t.Errorf("flag off: %q does not name the flag", e.Message)
	}
	b.setFlag(t, "compat_api", true)

	page, err := c.Models.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range page.Data {
		got = append(got, m.ID+"/"+m.OwnedBy)
	}
	if want := []string{"palyra-echo/palyra", "fake-model/fake", "alias/fake"}; !slices.Equal(got, want) {
		t.Errorf("models: %v, want %v", got, want)
	}
	m, err := c.Models.Get(ctx, "alias")
	if err != nil || m.ID != "alias" || m.OwnedBy != "fake" || m.Object != "model" {
		t.Errorf("get alias: %+v, %v", m, err)
	}
	_, err = c.Models.Get(ctx, "gpt-5")
	apiError(t, "unknown model", err, http.StatusNotFound, "model_not_found", "model")

	const prompt = "hello  there,\nworld "
	params := openai.ChatCompletionNewParams{
		Model:    "palyra-echo",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.SystemMessage("be brief"), openai.UserMessage(prompt)},
	}
	res, err := c.Chat.Completions.New(ctx, params)
	if err != nil {
		t.Fatal(err)
	}
	if res.Choices[0].Message.Content != prompt || res.Choices[0].FinishReason != "stop" || res.Model != "palyra-echo" ||
		res.Usage.PromptTokens != 5 || res.Usage.CompletionTokens != 3 || res.Usage.TotalTokens != 8 {
		t.Errorf("echo: %q %q %q usage %+v", res.Choices[0].Message.Content, res.Choices[0].FinishReason, res.Model, res.Usage)
	}

	s := c.Chat.Completions.NewStreaming(ctx, params)
	for s.Next() {
		t.Error("a stream with compat_streaming off sent a chunk")
	}
	apiError(t, "stream with compat_streaming off", s.Err(), http.StatusForbidden, "feature_disabled", "")
	b.setFlag(t, "compat_streaming", true)

	params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	s = c.Chat.Completions.NewStreaming(ctx, params)
	text, usage := collect(t, "echo stream", s.Next, s.Current, s.Err)
	if text != prompt || usage == nil || usage.CompletionTokens != 3 || usage.PromptTokens != 5 {
		t.Errorf("echo stream: %q, usage %+v", text, usage)
	}

	// The upstream: alias rewritten, unknown fields passed on, the key resolved.
	up := openai.ChatCompletionNewParams{
		Model:       "alias",
		Messages:    []openai.ChatCompletionMessageParamUnion{openai.UserMessage("one two three")},
		Temperature: openai.Float(0.5),
	}
	res, err = c.Chat.Completions.New(ctx, up, option.WithJSONSet("x_custom", map[string]any{"k": 1}))
	if err != nil {
		t.Fatal(err)
	}
	if res.Choices[0].Message.Content != "three two one" || res.Model != "upstream-model" || res.Usage.CompletionTokens != 3 {
		t.Errorf("upstream: %q model %q usage %+v", res.Choices[0].Message.Content, res.Model, res.Usage)
	}
	req, auth := b.fake.lastRequest()
	if req["model"] != "upstream-model" || req["temperature"] != 0.5 || req["x_custom"] == nil || auth != "Bearer "+upstreamKey {
		t.Errorf("the upstream got %v with %q", req, auth)
	}

	up.Messages = []openai.ChatCompletionMessageParamUnion{openai.UserMessage("a b c d")}
	s = c.Chat.Completions.NewStreaming(ctx, up)
	text, usage = collect(t, "upstream stream", s.Next, s.Current, s.Err)
	if text != "d c b a" || usage != nil {
		t.Errorf("upstream stream: %q, usage %+v (not asked for)", text, usage)
	}
	req, _ = b.fake.lastRequest()
	if so, _ := req["stream_options"].(map[string]any); so["include_usage"] != true {
		t.Errorf("palyrad did not ask the upstream for usage: %v", req)
	}
	up.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	up.Messages = []openai.ChatCompletionMessageParamUnion{openai.UserMessage("fail-once x y")}
	s = c.Chat.Completions.NewStreaming(ctx, up)
	text, usage = collect(t, "upstream stream after a 500", s.Next, s.Current, s.Err)
	if text != "y x fail-once" || usage == nil || usage.CompletionTokens != 3 {
		t.Errorf("upstream stream retried: %q, usage %+v", text, usage)
	}

	// A failure after the first chunk: an error event, then the end.
	up.Messages = []openai.ChatCompletionMessageParamUnion{openai.UserMessage("break")}
	s = c.Chat.Completions.NewStreaming(ctx, up)
	chunks := 0
	for s.Next() {
		chunks++
	}
	var se *ssestream.StreamError
	if !errors.As(s.Err(), &se) || chunks != 1 || !strings.Contains(se.Message, "provider_error") || !strings.Contains(se.Message, "without [DONE]") {
		t.Errorf("a stream that broke after %d chunks: %v", chunks, s.Err())
	}

	up.StreamOptions = openai.ChatCompletionStreamOptionsParam{}
	up.Messages = []openai.ChatCompletionMessageParamUnion{openai.UserMessage("fail-always")}
	_, err = c.Chat.Completions.New(ctx, up)
	e = apiError(t, "upstream 500", err, http.StatusBadGateway, "provider_error", "")
	if strings.Contains(e.Message, upstreamKey) || strings.Contains(e.Message, b.fake.URL) || !strings.Contains(e.Message, "[redacted]") {
		t.Errorf("upstream 500: %q leaks the key or the URL", e.Message)
	}
	up.Messages = []openai.ChatCompletionMessageParamUnion{openai.UserMessage("refuse")}
	_, err = c.Chat.Completions.New(ctx, up)
	apiError(t, "upstream 400", err, http.StatusBadRequest, "", "")

	up.Messages = []openai.ChatCompletionMessageParamUnion{openai.UserMessage("throttle")}
	_, err = c.Chat.Completions.New(ctx, up)
	e = apiError(t, "upstream 429", err, http.StatusTooManyRequests, "rate_limit_exceeded", "")
	if e.Response.Header.Get("Retry-After") != "30" {
		t.Errorf("upstream 429: Retry-After %q, want the upstream's 30", e.Response.Header.Get("Retry-After"))
	}
	b.fake.mu.Lock()
	throttled := b.fake.calls["throttle"]
	b.fake.mu.Unlock()
	if throttled != 1 {
		t.Errorf("palyrad called a provider that asked to wait 30 s %d times", throttled)
	}

	// Bad requests.
	bad := func(what string, p openai.ChatCompletionNewParams, param string, opts ...option.RequestOption) {
		t.Helper()
		_, err := c.Chat.Completions.New(ctx, p, opts...)
		var e *openai.Error
		if !errors.As(err, &e) || e.StatusCode != http.StatusBadRequest || e.Param != param || e.Type != "invalid_request_error" {
			t.Errorf("%s: %v (%s), want 400 naming %s", what, err, e.RawJSON(), param)
		}
	}
	bad("no messages", openai.ChatCompletionNewParams{Model: "palyra-echo"}, "messages", option.WithJSONSet("messages", []any{}))
	params.StreamOptions = openai.ChatCompletionStreamOptionsParam{}
	bad("unknown role", params, "messages[1].role", option.WithJSONSet("messages.1.role", "wizard"))
	bad("n = 2", openai.ChatCompletionNewParams{Model: "palyra-echo", Messages: params.Messages, N: openai.Int(2)}, "n")
	_, err = c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "../../v1/models", Messages: params.Messages})
	apiError(t, "a model with path characters", err, http.StatusNotFound, "model_not_found", "model")

	// Access: a bad key, a missing permission, a rate limit.
	stranger := b.sdk("plr_01JD5ZJ8Q0W1X2Y3Z4A5B6C7D8_abcdefghijkl")
	_, err = stranger.Models.List(ctx)
	apiError(t, "bad key", err, http.StatusUnauthorized, "invalid_api_key", "")
	_, reader := b.createToken(t, &accessv1.CreateTokenRequest{Label: "models only", Role: accessv1.Role_ROLE_OPERATOR, Scopes: []string{"compat.models.read"}})
	readerSDK := b.sdk(reader)
	_, err = readerSDK.Chat.Completions.New(ctx, params)
	e = apiError(t, "no compat.chat.create", err, http.StatusForbidden, "insufficient_permissions", "")
	if !strings.Contains(e.Message, "compat.chat.create") {
		t.Errorf("missing permission: %q does not name it", e.Message)
	}
	one := uint32(1)
	_, limited := b.createToken(t, &accessv1.CreateTokenRequest{Label: "limited", Role: accessv1.Role_ROLE_OPERATOR, RateLimitPerMinute: &one})
	limitedSDK := b.sdk(limited)
	if _, err := limitedSDK.Models.List(ctx); err != nil {
		t.Fatal(err)
	}
	_, err = limitedSDK.Models.List(ctx)
	e = apiError(t, "over the rate limit", err, http.StatusTooManyRequests, "rate_limit_exceeded", "")
	if e.Response == nil || e.Response.Header.Get("Retry-After") == "" {
		t.Error("the 429 has no Retry-After")
	}

	// Each chat completion is audited with its model, provider and tokens.
	events, err := b.auditClient(b.owner).ListAuditEvents(ctx, connect.NewRequest(&accessv1.ListAuditEventsRequest{PageSize: 500}))
	if err != nil {
		t.Fatal(err)
	}
	var targets []string
	for _, ev := range events.Msg.GetEvents() {
		if strings.HasPrefix(ev.GetProcedure(), "/palyra.compat.v1.CompatService/") && ev.GetOutcome() == accessv1.AuditOutcome_AUDIT_OUTCOME_SUCCESS {
			targets = append(targets, ev.GetProcedure()[len("/palyra.compat.v1.CompatService/"):]+" "+ev.GetTarget())
		}
	}
	for _, want := range []string{
		"CreateChatCompletion model:palyra-echo provider:palyra prompt_tokens:5 completion_tokens:3",
		"StreamChatCompletion model:palyra-echo provider:palyra prompt_tokens:5 completion_tokens:3",
		"CreateChatCompletion model:alias provider:fake prompt_tokens:7 completion_tokens:3",
		"StreamChatCompletion model:alias provider:fake prompt_tokens:7 completion_tokens:4",
	} {
		if !slices.Contains(targets, want) {
			t.Errorf("no audit event %q in %q", want, targets)
		}
	}
}

// post sends body to path with token over HTTP/1.1 (as the SDKs do) and returns the
// status and the envelope's error.
func (b *compatBed) post(t *testing.T, token, path string, body io.Reader) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, b.baseURL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	return b.send(t, token, req)
}

func (b *compatBed) send(t *testing.T, token string, req *http.Request) (int, map[string]any) {
	t.Helper()
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	res, err := b.client("").Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var env struct {
		Error map[string]any `json:"error"`
	}
	_ = json.NewDecoder(res.Body).Decode(&env)
	return res.StatusCode, env.Error
}

// TestCompatBadInputAndCancel covers what the SDKs cannot send: a body over the cap,
// invalid JSON, model ids with path characters in the URL; a stream the client
// cancels, which cancels the upstream request; and the same operations as Connect RPCs.
func TestCompatBadInputAndCancel(t *testing.T) {
	t.Parallel()
	b := startCompat(t)
	ctx := t.Context()
	b.setFlag(t, "compat_api", true)
	b.setFlag(t, "compat_streaming", true)
	_, operator := b.createToken(t, &accessv1.CreateTokenRequest{Label: "raw", Role: accessv1.Role_ROLE_OPERATOR})

	huge := `{"model":"palyra-echo","messages":[{"role":"user","content":"` + strings.Repeat("x", 10<<20) + `"}]}`
	if status, e := b.post(t, operator, "/v1/chat/completions", strings.NewReader(huge)); status != http.StatusRequestEntityTooLarge || e["code"] != "request_too_large" {
		t.Errorf("a 10 MiB body: %d %v", status, e)
	}
	if status, e := b.post(t, operator, "/v1/chat/completions", strings.NewReader(`{"model": "palyra-echo", "messages": [`)); status != http.StatusBadRequest || e["type"] != "invalid_request_error" {
		t.Errorf("invalid JSON: %d %v", status, e)
	}
	if status, e := b.post(t, operator, "/v1/chat/completions", strings.NewReader(`[1, 2]`)); status != http.StatusBadRequest || e["type"] != "invalid_request_error" {
		t.Errorf("not an object: %d %v", status, e)
	}
	if status, e := b.post(t, "", "/v1/chat/completions", strings.NewReader(`{}`)); status != http.StatusUnauthorized || e["code"] != "invalid_api_key" {
		t.Errorf("no token: %d %v", status, e)
	}
	for _, path := range []string{"/v1/models/..%2F..%2Fetc%2Fpasswd", "/v1/models/palyra-echo%2F..", "/v1/models/a/b/c"} {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, b.baseURL+path, nil)
		if status, e := b.send(t, operator, req); status != http.StatusNotFound || e["code"] != "model_not_found" {
			t.Errorf("GET %s: %d %v", path, status, e)
		}
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, b.baseURL+"/v1/nothing", nil)
	if status, e := b.send(t, operator, req); status != http.StatusNotFound || e["message"] == nil {
		t.Errorf("an unknown endpoint: %d %v", status, e)
	}

	// A stream the client cancels after its first chunk ends the upstream request.
	c := b.sdk(operator)
	sctx, cancel := context.WithCancel(ctx)
	s := c.Chat.Completions.NewStreaming(sctx, openai.ChatCompletionNewParams{
		Model: "fake-model", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hang")},
	})
	if !s.Next() {
		t.Fatalf("no first chunk: %v", s.Err())
	}
	cancel()
	_ = s.Close()
	select {
	case <-b.fake.hung:
	case <-time.After(30 * time.Second):
		t.Fatal("the upstream request is still running 30 s after the client went away")
	}

	// Connect: the same operations.
	rpc := compatv1connect.NewCompatServiceClient(b.client(operator), b.baseURL)
	m, err := rpc.GetModel(ctx, connect.NewRequest(&compatv1.GetModelRequest{Id: "fake-model"}))
	if err != nil || m.Msg.GetModel().GetOwnedBy() != "fake" {
		t.Errorf("GetModel: %v %v", m, err)
	}
	_, err = rpc.GetModel(ctx, connect.NewRequest(&compatv1.GetModelRequest{Id: "nope"}))
	wantCode(t, "GetModel nope", err, connect.CodeNotFound)
	msgs := []*compatv1.ChatMessage{{Role: "user", Content: "to be or not"}}
	res, err := rpc.CreateChatCompletion(ctx, connect.NewRequest(&compatv1.CreateChatCompletionRequest{Model: "palyra-echo", Messages: msgs}))
	if err != nil || res.Msg.GetCompletion().GetChoices()[0].GetMessage().GetContent() != "to be or not" || res.Msg.GetCompletion().GetUsage().GetCompletionTokens() != 4 {
		t.Errorf("CreateChatCompletion: %v %v", res, err)
	}
	_, err = rpc.CreateChatCompletion(ctx, connect.NewRequest(&compatv1.CreateChatCompletionRequest{Model: "palyra-echo",
		Messages: []*compatv1.ChatMessage{{Role: "oracle", Content: "x"}}}))
	wantCode(t, "CreateChatCompletion with an unknown role", err, connect.CodeInvalidArgument)
	st, err := rpc.StreamChatCompletion(ctx, connect.NewRequest(&compatv1.StreamChatCompletionRequest{Model: "alias", Messages: msgs, IncludeUsage: true}))
	if err != nil {
		t.Fatal(err)
	}
	var text bytes.Buffer
	var usage *compatv1.Usage
	for st.Receive() {
		for _, ch := range st.Msg().GetChunk().GetChoices() {
			text.WriteString(ch.GetDelta().GetContent())
		}
		if u := st.Msg().GetChunk().GetUsage(); u != nil {
			usage = u
		}
	}
	if err := st.Err(); err != nil || text.String() != "not or be to" || usage.GetCompletionTokens() != 4 {
		t.Errorf("StreamChatCompletion: %q, usage %v, %v", text.String(), usage, err)
	}

	// /metrics counts the REST calls by route pattern and status, whatever path they named.
	b.wantMetrics(t,
		`palyra_openai_requests_total{route="POST /v1/chat/completions",status="413"} 1`,
		`palyra_openai_requests_total{route="POST /v1/chat/completions",status="400"} 2`,
		`palyra_openai_requests_total{route="POST /v1/chat/completions",status="401"} 1`,
		`palyra_openai_requests_total{route="GET /v1/models/{id...}",status="404"} 3`,
		`palyra_openai_requests_total{route="/v1/",status="404"} 1`,
		`palyra_openai_request_seconds_count{route="POST /v1/chat/completions"}`,
	)
}
