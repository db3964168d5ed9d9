package capability

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// testAPIKey is the key the fake model server wants.
const testAPIKey = "sk-test-0123456789abcdef"

// fakeModelServer is an OpenAI-compatible server on loopback: handle answers each
// request after the server checked its key and recorded its body.
type fakeModelServer struct {
	*httptest.Server
	mu     sync.Mutex
	bodies []map[string]any
	paths  []string
}

func newFakeModelServer(t *testing.T, handle func(w http.ResponseWriter, r *http.Request, body map[string]any)) *fakeModelServer {
	t.Helper()
	f := &fakeModelServer{}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+testAPIKey {
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprintf(w, `{"error":{"message":"Incorrect API key provided: %s","type":"invalid_request_error","code":"invalid_api_key"}}`,
				strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
			return
		}
		var body map[string]any
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		f.mu.Lock()
		f.bodies = append(f.bodies, body)
		f.paths = append(f.paths, r.URL.Path)
		f.mu.Unlock()
		handle(w, r, body)
	}))
	t.Cleanup(f.Close)
	return f
}

// requests returns the paths and bodies received.
func (f *fakeModelServer) requests() ([]string, []map[string]any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.paths), slices.Clone(f.bodies)
}

// llmCaps returns llm.chat and llm.embed fronting srv with the key, loaded as node.toml
// would be.
func llmCaps(t *testing.T, srv *fakeModelServer, extra string) (chat, embed Capability) {
	t.Helper()
	dir := t.TempDir()
	key := filepath.Join(dir, "llm.key")
	if err := os.WriteFile(key, []byte(testAPIKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(writeConfig(t, `[llm]
base_url = "`+srv.URL+`/v1/"
api_key_file = "`+key+`"
models = ["llama3.1:8b", "fast=qwen2.5:0.5b-instruct"]
embedding_models = ["embed=nomic-embed-text:v1.5"]
`+extra))
	if err != nil {
		t.Fatal(err)
	}
	caps := newLLMCapabilities(cfg.LLM, testLogger(t))
	return caps[0], caps[1]
}

// lineOutput records what a capability writes, as lines, and each flush.
type lineOutput struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	flushes int
	lines   chan string // each complete line, as it is flushed
}

func newLineOutput() *lineOutput { return &lineOutput{lines: make(chan string, 100)} }

func (o *lineOutput) Write(stream Stream, p []byte) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if stream != Stdout {
		panic("llm output on " + stream.String())
	}
	o.buf.Write(p)
}

func (o *lineOutput) Flush() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.flushes++
	for {
		line, err := o.buf.ReadString('\n')
		if err != nil {
			o.buf.WriteString(line) // an incomplete line waits for the rest
			return
		}
		o.lines <- strings.TrimSuffix(line, "\n")
	}
}

// next returns the next line flushed, failing the test if none comes in a minute.
func (o *lineOutput) next(t *testing.T) string {
	t.Helper()
	select {
	case l := <-o.lines:
		return l
	case <-time.After(time.Minute):
		t.Fatal("no output line within a minute")
		return ""
	}
}

// waitClosed waits for ch to be closed, failing the test after a minute.
func waitClosed(t *testing.T, what string, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(time.Minute):
		t.Fatalf("%s: not within a minute", what)
	}
}

// ran is how a Run ended.
type ran struct {
	res Result
	err error
}

// runAsync runs c on input in a goroutine; the channel gets how it ended.
func runAsync(ctx context.Context, c Capability, input string, out Output) <-chan ran {
	done := make(chan ran, 1)
	go func() {
		res, err := c.Run(ctx, json.RawMessage(input), out)
		done <- ran{res, err}
	}()
	return done
}

// writeEvent writes one server-sent event and flushes it.
func writeEvent(w http.ResponseWriter, data string) {
	fmt.Fprintf(w, "data: %s\n\n", data)
	w.(http.Flusher).Flush()
}

func chunkJSON(model, content string, finish any) string {
	b, _ := json.Marshal(map[string]any{
		"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": model,
		"choices": []any{map[string]any{"index": 0, "delta": map[string]any{"content": content}, "finish_reason": finish}},
	})
	return string(b)
}

func TestLLMDescribeAnnouncesModels(t *testing.T) {
	t.Parallel()
	srv := newFakeModelServer(t, func(http.ResponseWriter, *http.Request, map[string]any) {})
	chat, embed := llmCaps(t, srv, "")
	if d := chat.Describe(); d.Name != LLMChatName || !d.Available || !slices.Equal(d.Models, []string{"llama3.1:8b", "fast"}) {
		t.Errorf("llm.chat announces %+v", d)
	}
	if d := embed.Describe(); d.Name != LLMEmbedName || !d.Available || !slices.Equal(d.Models, []string{"embed"}) {
		t.Errorf("llm.embed announces %+v", d)
	}
	if _, err := NewRegistry(chat, embed); err != nil {
		t.Errorf("NewRegistry: %v", err)
	}
	for _, c := range newLLMCapabilities(DefaultConfig().LLM, testLogger(t)) {
		d := c.Describe()
		if d.Available || d.Models != nil {
			t.Errorf("unconfigured %s announces %+v", d.Name, d)
		}
		_, err := c.Run(t.Context(), json.RawMessage(`{"model":"m","messages":[{"role":"user","content":"hi"}],"input":"x"}`), nil)
		var refused *RefusedError
		if !errors.As(err, &refused) || !strings.Contains(err.Error(), "is not configured on this node") {
			t.Errorf("unconfigured %s: Run = %v", d.Name, err)
		}
	}
}

// TestLLMChat is a chat completion without streaming, for an alias: the server gets its
// own model id and every other field as sent, and the result is its completion, with
// the model the client asked for.
func TestLLMChat(t *testing.T) {
	t.Parallel()
	srv := newFakeModelServer(t, func(w http.ResponseWriter, _ *http.Request, body map[string]any) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"chatcmpl-9","object":"chat.completion","created":1,"model":%q,
			"choices":[{"index":0,"message":{"role":"assistant","content":"Hello there"},"finish_reason":"stop"}],
			"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}`, body["model"])
	})
	chat, _ := llmCaps(t, srv, "")
	res, err := chat.Run(t.Context(), json.RawMessage(`{"model":"fast","messages":[{"role":"user","content":"Hi"}],
		"temperature":0.2,"tools":[{"type":"function","function":{"name":"f"}}],"response_format":{"type":"json_object"}}`), newLineOutput())
	if err != nil || res.Failed {
		t.Fatalf("Run = %+v, %v", res, err)
	}
	paths, bodies := srv.requests()
	if len(paths) != 1 || paths[0] != "/v1/chat/completions" {
		t.Fatalf("the server got %v", paths)
	}
	b := bodies[0]
	if b["model"] != "qwen2.5:0.5b-instruct" || b["temperature"] != 0.2 || b["tools"] == nil || b["response_format"] == nil ||
		b["stream_options"] != nil {
		t.Errorf("the server got %v", b)
	}
	var completion struct {
		Object  string `json:"object"`
		Model   string `json:"model"`
		Choices []struct {
			Message struct{ Content string } `json:"message"`
		} `json:"choices"`
		Usage struct {
			TotalTokens int `json:"total_tokens"`
		} `json:"usage"`
	}
	if err := json.Unmarshal(res.JSON, &completion); err != nil || completion.Object != "chat.completion" || completion.Model != "fast" ||
		len(completion.Choices) != 1 || completion.Choices[0].Message.Content != "Hello there" || completion.Usage.TotalTokens != 7 {
		t.Errorf("result %s (%v)", res.JSON, err)
	}

	// A model served under its own name keeps the server's answer as it is (compacted).
	if res, err := chat.Run(t.Context(), json.RawMessage(`{"model":"llama3.1:8b","messages":[{"role":"user","content":"Hi"}]}`), nil); err != nil ||
		!bytes.Contains(res.JSON, []byte(`"model":"llama3.1:8b"`)) || bytes.ContainsAny(res.JSON, "\n\t") {
		t.Errorf("Run = %s, %v", res.JSON, err)
	}
}

// TestLLMChatStreams checks that each chunk is on the output, flushed, before the
// server produces the next; that usage is asked for; and the result.
func TestLLMChatStreams(t *testing.T) {
	t.Parallel()
	words := []string{"Once", " upon", " a", " time"}
	next := make(chan struct{})
	srv := newFakeModelServer(t, func(w http.ResponseWriter, r *http.Request, body map[string]any) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, ": a comment\n\n")
		for i, word := range words {
			var finish any
			if i == len(words)-1 {
				finish = "stop"
			}
			writeEvent(w, chunkJSON(body["model"].(string), word, finish))
			select { // the next chunk only once the test saw this one
			case <-next:
			case <-r.Context().Done():
				return
			}
		}
		// A chunk spread over two data lines, then the usage.
		fmt.Fprintf(w, "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"model\":%q,\ndata: \"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4,\"total_tokens\":7}}\n\n", body["model"])
		writeEvent(w, "[DONE]")
	})
	chat, _ := llmCaps(t, srv, "")
	out := newLineOutput()
	done := runAsync(t.Context(), chat, `{"model":"fast","stream":true,"stream_options":{"x":1},"messages":[{"role":"user","content":"Tell me"}]}`, out)
	var joined string
	for i, word := range words {
		line := out.next(t)
		var chunk struct {
			Model   string `json:"model"`
			Choices []struct {
				Delta struct{ Content string } `json:"delta"`
			} `json:"choices"`
		}
		if err := json.Unmarshal([]byte(line), &chunk); err != nil || chunk.Model != "fast" || len(chunk.Choices) != 1 || chunk.Choices[0].Delta.Content != word {
			t.Fatalf("chunk %d: %s (%v)", i, line, err)
		}
		joined += chunk.Choices[0].Delta.Content
		next <- struct{}{}
	}
	if usage := out.next(t); !strings.Contains(usage, `"choices":[]`) || !strings.Contains(usage, `"total_tokens":7`) || !strings.Contains(usage, `"model":"fast"`) {
		t.Errorf("usage chunk %s", usage)
	}
	r := <-done
	if r.err != nil || r.res.Failed {
		t.Fatalf("Run = %+v, %v", r.res, r.err)
	}
	if joined != "Once upon a time" {
		t.Errorf("joined %q", joined)
	}
	var sum LLMStreamResult
	if err := json.Unmarshal(r.res.JSON, &sum); err != nil || sum.Chunks != 5 || sum.FinishReason != "stop" || sum.Model != "fast" ||
		sum.ID != "chatcmpl-1" || !strings.Contains(string(sum.Usage), `"completion_tokens":4`) {
		t.Errorf("result %s (%v)", r.res.JSON, err)
	}
	if out.flushes != 5 {
		t.Errorf("%d flushes, want one per chunk (5)", out.flushes)
	}
	_, bodies := srv.requests()
	if opts, _ := bodies[0]["stream_options"].(map[string]any); opts["include_usage"] != true || opts["x"] != 1.0 || bodies[0]["stream"] != true {
		t.Errorf("the server got %v", bodies[0])
	}
}

func TestLLMRefusals(t *testing.T) {
	t.Parallel()
	srv := newFakeModelServer(t, func(w http.ResponseWriter, _ *http.Request, _ map[string]any) {
		fmt.Fprint(w, `{}`)
	})
	chat, embed := llmCaps(t, srv, "")
	for _, tc := range []struct {
		cap          Capability
		input, want  string
		wantAlsoText string
	}{
		{chat, `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`, `llm.chat: model "gpt-4o" is not served by this node; it serves "llama3.1:8b", "fast"`, ""},
		{chat, `{"model":"qwen2.5:0.5b-instruct","messages":[{"role":"user","content":"hi"}]}`, "is not served by this node", "the server's own id is not a name"},
		{embed, `{"model":"fast","input":"x"}`, `llm.embed: model "fast" is not served by this node; it serves "embed"`, ""},
		{chat, `{"messages":[{"role":"user","content":"hi"}]}`, "llm.chat: model: want the name of a model", ""},
		{chat, `{"model":7,"messages":[]}`, "llm.chat: model: want the name", ""},
		{chat, `{"model":"fast","messages":[]}`, "llm.chat: messages: want a non-empty array", ""},
		{chat, `{"model":"fast"}`, "llm.chat: messages: want a non-empty array", ""},
		{chat, `{"model":"fast","stream":"yes","messages":[{"role":"user","content":"hi"}]}`, "llm.chat: stream: want true or false", ""},
		{chat, `{"model":"fast","stream":true,"stream_options":1,"messages":[{"role":"user","content":"hi"}]}`, "stream_options: want an object", ""},
		{chat, `["fast"]`, "llm.chat: the input must be a JSON object", ""},
		{chat, `{"model":"fast",`, "llm.chat: the input must be a JSON object", ""},
		{embed, `{"model":"embed"}`, "llm.embed: input: want the text", ""},
		{embed, `{"model":"embed","input":"x","stream":true}`, "llm.embed: embeddings do not stream", ""},
	} {
		_, err := tc.cap.Run(t.Context(), json.RawMessage(tc.input), nil)
		var refused *RefusedError
		if !errors.As(err, &refused) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s %s: Run = %v, want a refusal with %q %s", tc.cap.Describe().Name, tc.input, err, tc.want, tc.wantAlsoText)
		}
	}
	if paths, _ := srv.requests(); len(paths) != 0 {
		t.Errorf("refused requests reached the server: %v", paths)
	}
}

func TestLLMEmbed(t *testing.T) {
	t.Parallel()
	srv := newFakeModelServer(t, func(w http.ResponseWriter, _ *http.Request, body map[string]any) {
		fmt.Fprintf(w, `{"object":"list","model":%q,"data":[{"object":"embedding","index":0,"embedding":[0.1,-0.2]},
			{"object":"embedding","index":1,"embedding":[0.3,0.4]}],"usage":{"prompt_tokens":4,"total_tokens":4}}`, body["model"])
	})
	_, embed := llmCaps(t, srv, "")
	res, err := embed.Run(t.Context(), json.RawMessage(`{"model":"embed","input":["a","b"],"encoding_format":"float","dimensions":2}`), nil)
	if err != nil || res.Failed {
		t.Fatalf("Run = %+v, %v", res, err)
	}
	paths, bodies := srv.requests()
	if len(paths) != 1 || paths[0] != "/v1/embeddings" || bodies[0]["model"] != "nomic-embed-text:v1.5" ||
		bodies[0]["encoding_format"] != "float" || bodies[0]["dimensions"] != 2.0 {
		t.Errorf("the server got %v %v", paths, bodies)
	}
	var list struct {
		Model string `json:"model"`
		Data  []struct {
			Embedding []float64 `json:"embedding"`
		} `json:"data"`
	}
	if err := json.Unmarshal(res.JSON, &list); err != nil || list.Model != "embed" || len(list.Data) != 2 || list.Data[1].Embedding[1] != 0.4 {
		t.Errorf("result %s (%v)", res.JSON, err)
	}
}

// TestLLMChatCancelMidStream cancels a dispatch while the server streams: the server
// sees its request cancelled, and Run returns the context's error.
func TestLLMChatCancelMidStream(t *testing.T) {
	t.Parallel()
	cancelled := make(chan struct{})
	srv := newFakeModelServer(t, func(w http.ResponseWriter, r *http.Request, body map[string]any) {
		writeEvent(w, chunkJSON(body["model"].(string), "Hello", nil))
		<-r.Context().Done()
		close(cancelled)
	})
	chat, _ := llmCaps(t, srv, "")
	ctx, cancel := context.WithCancel(t.Context())
	out := newLineOutput()
	errc := make(chan error, 1)
	go func() {
		_, err := chat.Run(ctx, json.RawMessage(`{"model":"llama3.1:8b","stream":true,"messages":[{"role":"user","content":"hi"}]}`), out)
		errc <- err
	}()
	out.next(t)
	cancel()
	waitClosed(t, "the server's request cancelled", cancelled)
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("Run = %v, want context.Canceled", err)
	}
}

// TestLLMChatServerDiesMidStream closes the server's connections mid-stream: the
// dispatch fails, saying so, with the chunks it forwarded counted.
func TestLLMChatServerDiesMidStream(t *testing.T) {
	t.Parallel()
	srv := newFakeModelServer(t, func(w http.ResponseWriter, r *http.Request, body map[string]any) {
		writeEvent(w, chunkJSON(body["model"].(string), "Hello", nil))
		<-r.Context().Done()
	})
	chat, _ := llmCaps(t, srv, "")
	out := newLineOutput()
	done := runAsync(t.Context(), chat, `{"model":"llama3.1:8b","stream":true,"messages":[{"role":"user","content":"hi"}]}`, out)
	out.next(t)
	srv.CloseClientConnections()
	r := <-done
	if r.err != nil || !r.res.Failed || !strings.Contains(r.res.Error, "llm.chat: the model server failed: the model server's stream broke off after 1 chunks, before [DONE]") {
		t.Fatalf("Run = %+v, %v", r.res, r.err)
	}
	var e LLMErrorResult
	if err := json.Unmarshal(r.res.JSON, &e); err != nil || e.Chunks != 1 || e.Status != 0 || !strings.Contains(string(e.Error), "broke off") {
		t.Errorf("result %s (%v)", r.res.JSON, err)
	}
}

// TestLLMServerErrors checks how the server's errors become failed results: with its
// status and message, never the API key.
func TestLLMServerErrors(t *testing.T) {
	t.Parallel()
	srv := newFakeModelServer(t, func(w http.ResponseWriter, _ *http.Request, body map[string]any) {
		switch body["messages"].([]any)[0].(map[string]any)["content"] {
		case "404":
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"error":{"message":"model 'qwen' not found","type":"invalid_request_error","param":"model","code":"model_not_found"}}`)
		case "ollama":
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprint(w, `{"error":"invalid message role"}`)
		case "500":
			http.Error(w, "CUDA out of memory", http.StatusInternalServerError)
		case "echo key":
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprintf(w, `{"error":{"message":"key %s may not use this model"}}`, testAPIKey)
		case "error event":
			writeEvent(w, chunkJSON(body["model"].(string), "Hel", nil))
			writeEvent(w, `{"error":{"message":"the context is full","type":"server_error","code":500}}`)
		case "error event type":
			writeEvent(w, chunkJSON(body["model"].(string), "Hel", nil))
			fmt.Fprint(w, "event: error\ndata: {\"message\":\"slot unavailable\"}\n\n")
		case "redirect":
			http.Redirect(w, &http.Request{Method: http.MethodPost}, "http://198.51.100.1/steal", http.StatusTemporaryRedirect)
		}
	})
	chat, _ := llmCaps(t, srv, "")
	for _, tc := range []struct {
		content string
		stream  bool
		status  int
		want    string
		errJSON string
	}{
		{"404", false, 404, "llm.chat: the model server answered 404 Not Found: model 'qwen' not found", `"code":"model_not_found"`},
		{"ollama", false, 400, "llm.chat: the model server answered 400 Bad Request: invalid message role", `{"message":"invalid message role"}`},
		{"500", false, 500, "llm.chat: the model server answered 500 Internal Server Error: CUDA out of memory", `{"message":"CUDA out of memory"}`},
		{"echo key", true, 403, "llm.chat: the model server answered 403 Forbidden: key [redacted] may not use this model", `[redacted]`},
		{"error event", true, 0, "llm.chat: the model server failed: the context is full", `"type":"server_error"`},
		{"error event type", true, 0, "llm.chat: the model server failed: slot unavailable", `{"message":"slot unavailable"}`},
		{"redirect", false, 307, "llm.chat: the model server answered 307 Temporary Redirect", `"message"`},
	} {
		in, _ := json.Marshal(map[string]any{"model": "fast", "stream": tc.stream, "messages": []any{map[string]any{"role": "user", "content": tc.content}}})
		res, err := chat.Run(t.Context(), in, newLineOutput())
		if err != nil || !res.Failed || !strings.HasPrefix(res.Error, tc.want) {
			t.Errorf("%s: Run = %+v, %v; want the error %q", tc.content, res, err, tc.want)
			continue
		}
		var e LLMErrorResult
		if err := json.Unmarshal(res.JSON, &e); err != nil || e.Status != tc.status || !strings.Contains(string(e.Error), tc.errJSON) {
			t.Errorf("%s: result %s (%v), want status %d and %s", tc.content, res.JSON, err, tc.status, tc.errJSON)
		}
		if strings.Contains(res.Error+string(res.JSON), testAPIKey) {
			t.Errorf("%s: the API key is in the result: %s %s", tc.content, res.Error, res.JSON)
		}
	}

	// A wrong key: the server's 401 echoes what it got, which is redacted.
	dir := t.TempDir()
	wrong := filepath.Join(dir, "wrong.key")
	if err := os.WriteFile(wrong, []byte("sk-wrong-key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(writeConfig(t, "[llm]\nbase_url = \""+srv.URL+"/v1\"\napi_key_file = \""+wrong+"\"\nmodels = [\"m\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := newLLMCapabilities(cfg.LLM, testLogger(t))[0].Run(t.Context(), json.RawMessage(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`), nil)
	if err != nil || !res.Failed || !strings.Contains(res.Error, "answered 401 Unauthorized: Incorrect API key provided: [redacted]") ||
		strings.Contains(res.Error+string(res.JSON), "sk-wrong-key") {
		t.Errorf("wrong key: Run = %+v, %v", res, err)
	}

	// A server that is not there.
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	cfg, err = LoadConfig(writeConfig(t, "[llm]\nbase_url = \""+down.URL+"/v1\"\nmodels = [\"m\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	res, err = newLLMCapabilities(cfg.LLM, testLogger(t))[0].Run(t.Context(), json.RawMessage(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`), nil)
	if err != nil || !res.Failed || !strings.Contains(res.Error, "llm.chat: the model server failed: the model server cannot be reached: ") {
		t.Errorf("no server: Run = %+v, %v", res, err)
	}
}

// TestLLMLimits checks llm.timeout and llm.max_concurrent.
func TestLLMLimits(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	started := make(chan struct{}, 10)
	srv := newFakeModelServer(t, func(w http.ResponseWriter, r *http.Request, _ map[string]any) {
		started <- struct{}{}
		select {
		case <-release:
			fmt.Fprint(w, `{"object":"chat.completion","choices":[]}`)
		case <-r.Context().Done():
		}
	})
	chat, _ := llmCaps(t, srv, "timeout = \"200ms\"\nmax_concurrent = 1\n")
	in := json.RawMessage(`{"model":"fast","messages":[{"role":"user","content":"hi"}]}`)

	// At llm.timeout the request is stopped and the dispatch fails, timed out.
	res, err := chat.Run(t.Context(), in, nil)
	var e LLMErrorResult
	if err != nil || !res.Failed || !strings.Contains(res.Error, "timed out after 200ms (llm.timeout)") ||
		json.Unmarshal(res.JSON, &e) != nil || !e.TimedOut {
		t.Errorf("Run = %+v, %v", res, err)
	}
	<-started

	// One request at a time: while one runs, another waits for the slot, until its
	// dispatch ends.
	chat, _ = llmCaps(t, srv, "max_concurrent = 1\n")
	done := make(chan error, 1)
	go func() {
		_, err := chat.Run(t.Context(), in, nil)
		done <- err
	}()
	<-started
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := chat.Run(ctx, in, nil); !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "waiting for a free slot (llm.max_concurrent)") {
		t.Errorf("a second request while the slot is taken: %v", err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Errorf("the first request: %v", err)
	}
	if _, err := chat.Run(t.Context(), in, nil); err != nil {
		t.Errorf("a request once the slot is free: %v", err)
	}
}
