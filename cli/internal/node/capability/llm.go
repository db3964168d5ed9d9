package capability

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/palyra/palyra/internal/sse"
)

// The names of the model capabilities.
const (
	// LLMChatName is the name of the llm.chat capability.
	LLMChatName = "llm.chat"
	// LLMEmbedName is the name of the llm.embed capability.
	LLMEmbedName = "llm.embed"
)

// llmChatSchema is llm.chat's input: an OpenAI chat completion request. Fields besides
// those named pass through to the model server.
const llmChatSchema = `{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "llm.chat input: an OpenAI chat completion request",
  "type": "object",
  "properties": {
    "model": {"description": "One of the models the node announces.", "type": "string", "minLength": 1},
    "messages": {"description": "The conversation, as OpenAI's chat completions API takes it.", "type": "array", "minItems": 1},
    "stream": {"description": "Stream the answer: one output line of JSON per chunk.", "type": "boolean"}
  },
  "required": ["model", "messages"],
  "additionalProperties": true
}`

// llmEmbedSchema is llm.embed's input: an OpenAI embeddings request.
const llmEmbedSchema = `{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "llm.embed input: an OpenAI embeddings request",
  "type": "object",
  "properties": {
    "model": {"description": "One of the models the node announces.", "type": "string", "minLength": 1},
    "input": {"description": "The text (a string, or an array of strings or tokens) to embed."}
  },
  "required": ["model", "input"],
  "additionalProperties": true
}`

const (
	// maxLLMResultBytes is the most JSON a result holds (DispatchResult.result_json).
	maxLLMResultBytes = 1 << 20
	// maxSSEEventBytes bounds one event of a streamed answer.
	maxSSEEventBytes = 1 << 20
	// maxLLMErrorBodyBytes is what is read of an error answer.
	maxLLMErrorBodyBytes = 64 << 10
	// maxAPIKeyBytes bounds llm.api_key_file.
	maxAPIKeyBytes = 4096
	// maxLocalModelIDLen bounds a server's own model id.
	maxLocalModelIDLen = 256
)

// LLMStreamResult is llm.chat's result when the request streams. The chunks themselves
// are the dispatch's output: each chunk of the model server's answer (an OpenAI
// chat.completion.chunk object, its "model" set to the name the request asked for) is
// written to stdout as one line of compact JSON ending in "\n", and flushed at once, in
// the order the server sent them. A line may span DispatchOutput chunks (beyond their
// 64 KiB); a reader splits the output at "\n". The request always asks the server for
// usage (stream_options.include_usage), so the last chunk normally has empty choices
// and the usage, which this result repeats.
type LLMStreamResult struct {
	// ID is the completion's id, as the server gave it.
	ID string `json:"id,omitempty"`
	// Model is the model the request asked for.
	Model string `json:"model"`
	// Chunks counts the chunks written to the output.
	Chunks int `json:"chunks"`
	// FinishReason is the finish reason of choice 0 ("stop", "length", "tool_calls",
	// ...), when the server gave one.
	FinishReason string `json:"finish_reason,omitempty"`
	// Usage is the server's usage object (prompt_tokens, completion_tokens,
	// total_tokens), when it gave one.
	Usage json.RawMessage `json:"usage,omitempty"`
}

// LLMErrorResult is the result of an llm.chat or llm.embed dispatch that failed at the
// model server: it answered with an error status, sent an error event mid-stream, or
// its answer ended or broke off. The dispatch's error says the same in words.
type LLMErrorResult struct {
	// Status is the HTTP status the server answered with; 0 when the failure came later
	// (mid-stream) or the server could not be reached.
	Status int `json:"status,omitempty"`
	// Error is the server's OpenAI error object ({"message", "type", "param",
	// "code"}), or one with the message alone when the server gave none.
	Error json.RawMessage `json:"error"`
	// Chunks counts the chunks written to the output before the failure (streaming).
	Chunks int `json:"chunks,omitempty"`
	// TimedOut is true when the request reached llm.timeout.
	TimedOut bool `json:"timed_out,omitempty"`
}

// llmModel is a model a node serves: the name it announces, and the server's id.
type llmModel struct{ name, local string }

// parseLLMModels reads llm.models or llm.embedding_models ("name" or
// "name=local-id"), refusing invalid and duplicate names; key names the setting.
func parseLLMModels(key string, entries []string) ([]llmModel, error) {
	var models []llmModel
	var errs []error
	for _, e := range entries {
		name, local, aliased := strings.Cut(e, "=")
		name, local = strings.TrimSpace(name), strings.TrimSpace(local)
		if !aliased {
			local = name
		}
		if err := checkModelName(name); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", key, err))
			continue
		}
		if local == "" || len(local) > maxLocalModelIDLen || strings.ContainsFunc(local, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) {
			errs = append(errs, fmt.Errorf("%s: %q: the server's model id must be 1 to %d characters without spaces or control characters",
				key, e, maxLocalModelIDLen))
			continue
		}
		if slices.ContainsFunc(models, func(m llmModel) bool { return m.name == name }) {
			errs = append(errs, fmt.Errorf("%s: model %q is listed twice", key, name))
			continue
		}
		models = append(models, llmModel{name: name, local: local})
	}
	return models, errors.Join(errs...)
}

// normalize validates the [llm] table as LoadConfig does, reads the API key file, and
// returns the table with base_url cleaned.
func (c LLMConfig) normalize() (LLMConfig, error) {
	var errs []error
	if _, err := parseLLMModels("llm.models", c.Models); err != nil {
		errs = append(errs, err)
	}
	if _, err := parseLLMModels("llm.embedding_models", c.EmbeddingModels); err != nil {
		errs = append(errs, err)
	}
	if c.BaseURL == "" {
		if len(c.Models) > 0 || len(c.EmbeddingModels) > 0 || c.APIKeyFile != "" {
			errs = append(errs, errors.New("llm.base_url: not set, but models, embedding_models or api_key_file are: "+
				"name the model server they are for"))
		}
	} else {
		u, err := checkLLMBaseURL(c.BaseURL)
		if err != nil {
			errs = append(errs, fmt.Errorf("llm.base_url: %w", err))
		} else {
			c.BaseURL = u
		}
		if len(c.Models) == 0 && len(c.EmbeddingModels) == 0 {
			errs = append(errs, errors.New("llm.models: no model is listed (nor in llm.embedding_models): "+
				"name those the server serves"))
		}
	}
	c.apiKey = nil
	if c.APIKeyFile != "" {
		key, err := readAPIKey(c.APIKeyFile)
		if err != nil {
			errs = append(errs, fmt.Errorf("llm.api_key_file: %w", err))
		}
		c.apiKey = &apiKey{key}
	}
	if c.Timeout <= 0 {
		errs = append(errs, fmt.Errorf("llm.timeout: %v is not positive", c.Timeout))
	}
	if c.MaxConcurrent <= 0 || c.MaxConcurrent > MaxLLMConcurrent {
		errs = append(errs, fmt.Errorf("llm.max_concurrent: %d is not between 1 and %d", c.MaxConcurrent, MaxLLMConcurrent))
	}
	if err := errors.Join(errs...); err != nil {
		return LLMConfig{}, err
	}
	return c, nil
}

// checkLLMBaseURL checks a model server's base URL and returns it without a trailing
// slash. An error never quotes credentials the URL holds.
func checkLLMBaseURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", errors.New("not a URL: want an http or https URL such as \"http://127.0.0.1:8080/v1\"")
	}
	switch {
	case u.User != nil:
		return "", fmt.Errorf("%s holds credentials: put the API key in llm.api_key_file", u.Redacted())
	case u.Scheme != "http" && u.Scheme != "https":
		return "", fmt.Errorf("%q: want an http or https URL such as \"http://127.0.0.1:8080/v1\"", raw)
	case u.Host == "" || u.Hostname() == "":
		return "", fmt.Errorf("%q has no host", raw)
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return "", fmt.Errorf("%q: a query or fragment is not allowed", raw)
	}
	return strings.TrimRight(u.String(), "/"), nil
}

// readAPIKey reads an API key file: absolute, regular, readable by its owner only,
// holding one non-empty line. Errors never quote the content.
func readAPIKey(path string) (string, error) {
	if !filepath.IsAbs(path) {
		return "", fmt.Errorf("%q is not an absolute path", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("%q: %w", path, unwrapPathError(err))
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("%q: %w", path, err)
	}
	if !info.Mode().IsRegular() {
		return "", fmt.Errorf("%q is not a regular file", path)
	}
	if runtime.GOOS != "windows" && info.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("%q holds a secret but its group or others may access it (mode %v): run chmod 600 %s "+
			"(and consider whether the key leaked)", path, info.Mode().Perm(), path)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxAPIKeyBytes+1))
	if err != nil {
		return "", fmt.Errorf("%q: %w", path, err)
	}
	if len(b) > maxAPIKeyBytes {
		return "", fmt.Errorf("%q: larger than %d bytes", path, maxAPIKeyBytes)
	}
	key := strings.TrimSpace(string(b))
	switch {
	case key == "":
		return "", fmt.Errorf("%q is empty", path)
	case strings.ContainsFunc(key, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }):
		return "", fmt.Errorf("%q: the key must be one line without spaces", path)
	}
	return key, nil
}

// apiKey holds an API key; behind a pointer, so that printing an LLMConfig shows an
// address, never the key.
type apiKey struct{ value string }

// llmServer is the model server llm.chat and llm.embed front, shared by both: its URL,
// key, client and the slots of max_concurrent.
type llmServer struct {
	baseURL string
	apiKey  string
	timeout time.Duration
	client  *http.Client
	slots   chan struct{}
	log     *slog.Logger
}

// newLLMServer returns the server cfg configures, or nil when cfg names none (or one
// LoadConfig would refuse, logged on log).
func newLLMServer(cfg LLMConfig, log *slog.Logger) *llmServer {
	if cfg.BaseURL == "" {
		return nil
	}
	base, err := checkLLMBaseURL(cfg.BaseURL)
	if err != nil {
		log.Warn("llm: ignoring an invalid base_url", "err", err)
		return nil
	}
	timeout, slots := time.Duration(cfg.Timeout), cfg.MaxConcurrent
	if timeout <= 0 {
		timeout = DefaultLLMTimeout
	}
	if slots <= 0 || slots > MaxLLMConcurrent {
		slots = DefaultLLMMaxConcurrent
	}
	tr := &http.Transport{
		// The server is local or on a private network: no proxy from the environment.
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout: 10 * time.Second,
		MaxIdleConnsPerHost: slots,
		IdleConnTimeout:     90 * time.Second,
	}
	key := ""
	if cfg.apiKey != nil {
		key = cfg.apiKey.value
	}
	return &llmServer{
		baseURL: base,
		apiKey:  key,
		timeout: timeout,
		client: &http.Client{
			Transport: tr,
			// A redirect is an error: the request (and its key) goes to base_url only.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		slots: make(chan struct{}, slots),
		log:   log,
	}
}

// llmCapability is llm.chat or llm.embed: it forwards OpenAI requests for the models
// it serves to the model server, at path (/chat/completions or /embeddings).
type llmCapability struct {
	name, description, schema string
	path                      string
	chat                      bool
	server                    *llmServer // nil: not configured
	models                    []llmModel
	setting                   string // the node.toml setting that lists the models
}

var _ Capability = (*llmCapability)(nil)

// newLLMCapabilities returns llm.chat and llm.embed configured by cfg. Each is
// unavailable until cfg names a server and models for it; models LoadConfig would
// refuse are ignored with a warning.
func newLLMCapabilities(cfg LLMConfig, log *slog.Logger) []Capability {
	srv := newLLMServer(cfg, log)
	models := func(key string, entries []string) []llmModel {
		ms, err := parseLLMModels(key, entries)
		if err != nil {
			log.Warn("llm: ignoring invalid models", "err", err)
		}
		return ms
	}
	return []Capability{
		&llmCapability{
			name:        LLMChatName,
			description: "Answers OpenAI chat completion requests (streaming too) with the node's model server.",
			schema:      llmChatSchema, path: "/chat/completions", chat: true, server: srv,
			models: models("llm.models", cfg.Models), setting: "llm.models",
		},
		&llmCapability{
			name:        LLMEmbedName,
			description: "Answers OpenAI embeddings requests with the node's model server.",
			schema:      llmEmbedSchema, path: "/embeddings", server: srv,
			models: models("llm.embedding_models", cfg.EmbeddingModels), setting: "llm.embedding_models",
		},
	}
}

// Describe implements Capability: the models are those of node.toml, by the names
// requests use.
func (c *llmCapability) Describe() Descriptor {
	d := Descriptor{Name: c.name, Description: c.description, InputSchema: json.RawMessage(c.schema)}
	if c.server != nil && len(c.models) > 0 {
		d.Available = true
		for _, m := range c.models {
			d.Models = append(d.Models, m.name)
		}
	}
	return d
}

// Run implements Capability. The input is an OpenAI request: its model must be one the
// node serves (an alias is replaced by the server's id), and every other field passes
// through. llm.chat with "stream": true writes the chunks to the output as
// LLMStreamResult describes and returns an LLMStreamResult; otherwise the result is the
// server's answer (the chat.completion or the embeddings list, with "model" set to the
// name asked for). A failure at the server is a Failed result with an LLMErrorResult.
func (c *llmCapability) Run(ctx context.Context, input json.RawMessage, out Output) (Result, error) {
	if c.server == nil || len(c.models) == 0 {
		return Result{}, refusef("%s is not configured on this node: no model server or model is set (llm.base_url and %s in %s)",
			c.name, c.setting, ConfigFile)
	}
	req, model, stream, err := c.request(input)
	if err != nil {
		return Result{}, err
	}
	if out == nil {
		out = discardOutput{}
	}
	s := c.server
	select {
	case s.slots <- struct{}{}:
		defer func() { <-s.slots }()
	case <-ctx.Done():
		return Result{}, fmt.Errorf("%s: waiting for a free slot (llm.max_concurrent): %w", c.name, ctx.Err())
	}
	runCtx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	res, err := c.forward(runCtx, req, model, stream, out)
	if ctx.Err() != nil {
		return Result{}, fmt.Errorf("%s: stopped: %w", c.name, ctx.Err())
	}
	if err != nil && runCtx.Err() != nil {
		return c.failure(0, nil, fmt.Sprintf("timed out after %v (llm.timeout)", s.timeout), res.Chunks, true), nil
	}
	return res.result, err
}

// request checks input and returns the body to send, with the server's model id and,
// when streaming, usage asked for; model is the name asked for.
func (c *llmCapability) request(input json.RawMessage) (body []byte, model llmModel, stream bool, err error) {
	input = bytes.TrimSpace(input)
	var fields map[string]json.RawMessage
	if len(input) == 0 || input[0] != '{' || json.Unmarshal(input, &fields) != nil {
		return nil, llmModel{}, false, refusef("%s: the input must be a JSON object: an OpenAI request", c.name)
	}
	var name string
	if err := json.Unmarshal(fields["model"], &name); err != nil || name == "" {
		return nil, llmModel{}, false, refusef("%s: model: want the name of a model this node serves (%s)", c.name, c.modelNames())
	}
	i := slices.IndexFunc(c.models, func(m llmModel) bool { return m.name == name })
	if i < 0 {
		return nil, llmModel{}, false, refusef("%s: model %q is not served by this node; it serves %s", c.name, name, c.modelNames())
	}
	model = c.models[i]
	if raw, ok := fields["stream"]; ok && !bytes.Equal(raw, []byte("null")) {
		if err := json.Unmarshal(raw, &stream); err != nil {
			return nil, llmModel{}, false, refusef("%s: stream: want true or false", c.name)
		}
	}
	if c.chat {
		var messages []json.RawMessage
		if err := json.Unmarshal(fields["messages"], &messages); err != nil || len(messages) == 0 {
			return nil, llmModel{}, false, refusef("%s: messages: want a non-empty array of messages", c.name)
		}
	} else if raw, ok := fields["input"]; !ok || bytes.Equal(raw, []byte("null")) {
		return nil, llmModel{}, false, refusef("%s: input: want the text to embed", c.name)
	}
	if stream && !c.chat {
		return nil, llmModel{}, false, refusef("%s: embeddings do not stream", c.name)
	}
	fields["model"], _ = json.Marshal(model.local)
	if stream {
		opts := map[string]json.RawMessage{}
		if raw, ok := fields["stream_options"]; ok && !bytes.Equal(raw, []byte("null")) {
			if err := json.Unmarshal(raw, &opts); err != nil {
				return nil, llmModel{}, false, refusef("%s: stream_options: want an object", c.name)
			}
		}
		opts["include_usage"] = json.RawMessage("true")
		fields["stream_options"], _ = json.Marshal(opts)
	}
	body, err = json.Marshal(fields)
	if err != nil {
		return nil, llmModel{}, false, fmt.Errorf("%s: encode the request: %w", c.name, err)
	}
	return body, model, stream, nil
}

// modelNames lists the names of the models served, for a refusal.
func (c *llmCapability) modelNames() string {
	names := make([]string, len(c.models))
	for i, m := range c.models {
		names[i] = fmt.Sprintf("%q", m.name)
	}
	return strings.Join(names, ", ")
}

// forwarded is how a forwarded request ended: the result, and the chunks written.
type forwarded struct {
	result Result
	Chunks int
}

// forward sends body to the server and turns its answer into the result.
func (c *llmCapability) forward(ctx context.Context, body []byte, model llmModel, stream bool, out Output) (forwarded, error) {
	s := c.server
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.baseURL+c.path, bytes.NewReader(body))
	if err != nil {
		return forwarded{}, fmt.Errorf("%s: %w", c.name, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	if stream {
		req.Header.Set("Accept", "text/event-stream")
	}
	if s.apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+s.apiKey)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return forwarded{}, ctx.Err()
		}
		res := c.failure(0, nil, "the model server cannot be reached: "+s.redact(unwrapURLError(err).Error()), 0, false)
		return forwarded{result: res}, nil
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxLLMErrorBodyBytes))
		res := c.failure(resp.StatusCode, b, "", 0, false)
		return forwarded{result: res}, nil
	}
	if stream {
		return c.relay(ctx, resp.Body, model, out)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxLLMResultBytes+1))
	if err != nil {
		if ctx.Err() != nil {
			return forwarded{}, ctx.Err()
		}
		res := c.failure(0, nil, "the model server's answer broke off: "+s.redact(err.Error()), 0, false)
		return forwarded{result: res}, nil
	}
	if len(b) > maxLLMResultBytes {
		res := c.failure(0, nil, fmt.Sprintf("the model server's answer is more than the %d bytes a dispatch result holds", maxLLMResultBytes), 0, false)
		return forwarded{result: res}, nil
	}
	answer, err := renameModel(b, model)
	if err != nil {
		res := c.failure(0, nil, "the model server's answer is not a JSON object", 0, false)
		return forwarded{result: res}, nil
	}
	return forwarded{result: Result{JSON: answer}}, nil
}

// relay forwards a streamed answer (server-sent events) to out, one line of JSON per
// chunk, until "data: [DONE]". A stream that ends without it (the server died), or an
// error event, fails the dispatch.
func (c *llmCapability) relay(ctx context.Context, body io.Reader, model llmModel, out Output) (forwarded, error) {
	flush := func() {}
	if f, ok := out.(Flusher); ok {
		flush = f.Flush
	}
	sum := LLMStreamResult{Model: model.name}
	fail := func(msg string, errObj json.RawMessage) (forwarded, error) {
		res := c.failure(0, errObj, msg, sum.Chunks, false)
		return forwarded{result: res, Chunks: sum.Chunks}, nil
	}
	events := sse.NewReader(body, maxSSEEventBytes)
	for {
		ev, err := events.Next()
		if err != nil {
			if ctx.Err() != nil {
				return forwarded{Chunks: sum.Chunks}, ctx.Err()
			}
			if errors.Is(err, sse.ErrTooLong) {
				return fail(fmt.Sprintf("the model server sent an event of more than %d bytes", maxSSEEventBytes), nil)
			}
			why := "it ended"
			if !errors.Is(err, io.EOF) {
				why = c.server.redact(err.Error())
			}
			return fail(fmt.Sprintf("the model server's stream broke off after %d chunks, before [DONE]: %s", sum.Chunks, why), nil)
		}
		event := ev.Data
		if bytes.Equal(bytes.TrimSpace(event), []byte("[DONE]")) {
			b, err := json.Marshal(sum)
			if err != nil {
				return forwarded{}, fmt.Errorf("%s: encode the result: %w", c.name, err)
			}
			return forwarded{result: Result{JSON: b}, Chunks: sum.Chunks}, nil
		}
		var chunk struct {
			ID      string `json:"id"`
			Choices []struct {
				Index        int     `json:"index"`
				FinishReason *string `json:"finish_reason"`
			} `json:"choices"`
			Usage json.RawMessage `json:"usage"`
			Error json.RawMessage `json:"error"`
		}
		if ev.Type == "error" {
			return fail("", event)
		}
		if err := json.Unmarshal(event, &chunk); err != nil {
			return fail("the model server sent a chunk that is not JSON", nil)
		}
		if len(chunk.Error) > 0 && !bytes.Equal(chunk.Error, []byte("null")) {
			return fail("", event)
		}
		line, err := renameModel(event, model)
		if err != nil {
			return fail("the model server sent a chunk that is not a JSON object", nil)
		}
		out.Write(Stdout, append(line, '\n'))
		flush()
		sum.Chunks++
		if sum.ID == "" {
			sum.ID = chunk.ID
		}
		for _, ch := range chunk.Choices {
			if ch.Index == 0 && ch.FinishReason != nil && *ch.FinishReason != "" {
				sum.FinishReason = *ch.FinishReason
			}
		}
		if len(chunk.Usage) > 0 && !bytes.Equal(chunk.Usage, []byte("null")) {
			sum.Usage = chunk.Usage
		}
	}
}

// failure is a Failed result for a failure at the server: status (0 when there was
// none), the error answer body (an OpenAI error envelope, a bare error object, or
// anything else), or msg. The API key never appears in it.
func (c *llmCapability) failure(status int, body []byte, msg string, chunks int, timedOut bool) Result {
	s := c.server
	errObj, text := errorObject(body)
	if msg == "" {
		msg = text
	}
	msg = s.redact(msg)
	if errObj == nil || (s.apiKey != "" && bytes.Contains(errObj, []byte(s.apiKey))) {
		errObj, _ = json.Marshal(map[string]string{"message": msg})
	}
	words := "the model server failed: " + msg
	if status != 0 {
		words = fmt.Sprintf("the model server answered %d %s", status, http.StatusText(status))
		if msg != "" {
			words += ": " + msg
		}
	}
	r := Result{Failed: true, Error: c.name + ": " + truncate(words, 2048)}
	// errObj is valid JSON (decoded, checked or encoded above), so this cannot fail.
	r.JSON, _ = json.Marshal(LLMErrorResult{Status: status, Error: errObj, Chunks: chunks, TimedOut: timedOut})
	return r
}

// errorObject reads an error answer: an OpenAI envelope ({"error": {...}}), one whose
// error is a string ({"error": "..."}, as Ollama sends), a bare error object, or text.
// It returns the error object (nil when there is none) and its message.
func errorObject(body []byte) (obj json.RawMessage, message string) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return nil, ""
	}
	var env struct {
		Error json.RawMessage `json:"error"`
	}
	if body[0] != '{' || json.Unmarshal(body, &env) != nil {
		return nil, strings.TrimSpace(string(body[:min(len(body), 1024)]))
	}
	obj = body
	switch {
	case len(env.Error) > 0 && env.Error[0] == '{':
		obj = env.Error
	case len(env.Error) > 0 && env.Error[0] == '"':
		_ = json.Unmarshal(env.Error, &message)
		return nil, message
	}
	var detail struct {
		Message string `json:"message"`
	}
	_ = json.Unmarshal(obj, &detail)
	return obj, detail.Message
}

// redact removes the API key from text from the server or the client.
func (s *llmServer) redact(text string) string {
	if s.apiKey == "" {
		return text
	}
	return strings.ReplaceAll(text, s.apiKey, "[redacted]")
}

// renameModel returns the JSON object b, compacted, with its "model" set to the name
// asked for when that is an alias.
func renameModel(b []byte, model llmModel) ([]byte, error) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] != '{' {
		return nil, errors.New("not a JSON object")
	}
	if model.name == model.local {
		var buf bytes.Buffer
		if err := json.Compact(&buf, b); err != nil {
			return nil, err
		}
		return buf.Bytes(), nil
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(b, &fields); err != nil {
		return nil, err
	}
	if _, ok := fields["model"]; ok {
		fields["model"], _ = json.Marshal(model.name)
	}
	return json.Marshal(fields)
}

// unwrapURLError drops the method and URL of a *url.Error.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// truncate cuts s to at most n bytes, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
