package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	"github.com/palyra/palyra/gen/go/palyra/controlplane/v1/controlplanev1connect"
	"github.com/palyra/palyra/internal/eventually"
	"github.com/palyra/palyra/server/internal/store/storetest"
)

// TestCLINodeServesModels is a node as a model host, end to end: a real `palyra node
// run` whose node.toml fronts a fake OpenAI-compatible server on loopback, paired with
// a real palyrad. The node announces its models, which `palyra nodes show` lists; a
// chat completion runs through `palyra nodes invoke`, and a streamed one through the
// DispatchService, each chunk stored by palyrad before the server produces the next;
// a model the node does not serve is refused; a cancelled dispatch cancels the local
// request; a server that dies mid-stream fails the dispatch.
func TestCLINodeServesModels(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	d := startDaemon(t, nil, "--listen", "127.0.0.1:0", "--data-dir", dir, "--database-url", storetest.URL(t))
	admin := newCLIUser(t).with("PALYRA_TOKEN", bootstrapToken(t, dir), "PALYRA_URL", "https://"+d.addr,
		"PALYRA_CA_FILE", filepath.Join(dir, "ca.pem"))
	api := newDispatchClient(t, d.addr, dir)

	const key = "sk-e2e-local-key"
	llm := newFakeLLM(t, key)
	stateDir := t.TempDir()
	keyFile := filepath.Join(t.TempDir(), "llm.key")
	if err := os.WriteFile(keyFile, []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	writeRawNodeConfig(t, stateDir, `[llm]
base_url = "`+llm.URL+`/v1"
api_key_file = "`+keyFile+`"
models = ["llama3.1:8b", "fast=qwen2.5:0.5b-instruct"]
embedding_models = ["nomic-embed-text"]
`)
	node := startNodeAgent(t, admin, "https://"+d.addr, caFingerprint(t, dir), stateDir)
	id := node.deviceID

	// The models are announced with the capabilities.
	var shown struct {
		Node struct {
			Capabilities []struct {
				Name      string   `json:"name"`
				Available bool     `json:"available"`
				Models    []string `json:"models"`
			} `json:"capabilities"`
		} `json:"node"`
	}
	decode(t, admin.ok(t, "nodes", "show", id, "-o", "json"), &shown)
	models := map[string][]string{}
	for _, c := range shown.Node.Capabilities {
		if c.Available {
			models[c.Name] = c.Models
		}
	}
	if !slices.Equal(models["llm.chat"], []string{"llama3.1:8b", "fast"}) || !slices.Equal(models["llm.embed"], []string{"nomic-embed-text"}) ||
		len(models["system.info"]) != 0 {
		t.Errorf("nodes show -o json: available capabilities and models %v", models)
	}
	table := admin.ok(t, "nodes", "show", id)
	for _, want := range []string{"CAPABILITY  MODELS", "llm.chat    llama3.1:8b,fast", "llm.embed   nomic-embed-text"} {
		if !strings.Contains(table, want) {
			t.Errorf("nodes show lacks %q:\n%s", want, table)
		}
	}

	// A chat completion for an alias, through the CLI.
	var invoked struct {
		Dispatch struct {
			State      string `json:"state"`
			ResultJSON string `json:"resultJson"`
		} `json:"dispatch"`
	}
	decode(t, admin.ok(t, "nodes", "invoke", id, "llm.chat", "-o", "json", "--input",
		`{"model":"fast","messages":[{"role":"user","content":"Say hello"}],"temperature":0}`), &invoked)
	var completion struct {
		Model   string `json:"model"`
		Choices []struct {
			Message struct{ Content string } `json:"message"`
		} `json:"choices"`
	}
	decode(t, invoked.Dispatch.ResultJSON, &completion)
	if invoked.Dispatch.State != "DISPATCH_STATE_SUCCEEDED" || completion.Model != "fast" || len(completion.Choices) != 1 ||
		completion.Choices[0].Message.Content != "Hello from qwen2.5:0.5b-instruct" {
		t.Errorf("llm.chat: %+v", invoked.Dispatch)
	}
	decode(t, admin.ok(t, "nodes", "invoke", id, "llm.embed", "-o", "json", "--input", `{"model":"nomic-embed-text","input":"hi"}`), &invoked)
	var embeddings struct {
		Data []struct {
			Embedding []float64 `json:"embedding"`
		} `json:"data"`
	}
	decode(t, invoked.Dispatch.ResultJSON, &embeddings)
	if invoked.Dispatch.State != "DISPATCH_STATE_SUCCEEDED" || len(embeddings.Data) != 1 || !slices.Equal(embeddings.Data[0].Embedding, []float64{0.5, 0.25}) {
		t.Errorf("llm.embed: %+v", invoked.Dispatch)
	}
	stderr := admin.fails(t, 1, "nodes", "invoke", id, "llm.chat", "--input", `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`)
	if !strings.Contains(stderr, "failed: llm.chat: model") || !strings.Contains(stderr, "gpt-4o") || !strings.Contains(stderr, "is not served by this node") {
		t.Errorf("an unknown model: %s", stderr)
	}

	// Streaming: each chunk reaches palyrad before the server produces the next.
	words := []string{"Tokens", " as", " they", " come"}
	disp := createLLMDispatch(t, api, id, `{"model":"fast","stream":true,"messages":[{"role":"user","content":"stream"}]}`)
	var joined string
	for i, word := range words {
		select {
		case llm.next <- word:
		case <-time.After(time.Minute):
			t.Fatalf("the model server did not ask for chunk %d within a minute; the node says:\n%s", i, node.stderr)
		}
		var line string
		eventually.NoError(t, fmt.Sprintf("chunk %d stored", i), func() error {
			lines := outputLines(t, api, disp)
			if len(lines) <= i {
				return fmt.Errorf("%d lines of output: %q", len(lines), lines)
			}
			line = lines[i]
			return nil
		})
		var chunk struct {
			Model   string `json:"model"`
			Choices []struct {
				Delta struct{ Content string } `json:"delta"`
			} `json:"choices"`
		}
		if err := json.Unmarshal([]byte(line), &chunk); err != nil || chunk.Model != "fast" || len(chunk.Choices) != 1 {
			t.Fatalf("chunk %d: %s (%v)", i, line, err)
		}
		joined += chunk.Choices[0].Delta.Content
	}
	close(llm.next)
	final := waitDispatchEnd(t, api, disp)
	var sum struct {
		Chunks       int    `json:"chunks"`
		FinishReason string `json:"finish_reason"`
		Usage        struct {
			TotalTokens int `json:"total_tokens"`
		} `json:"usage"`
	}
	decode(t, final.GetResultJson(), &sum)
	if joined != "Tokens as they come" || final.GetState() != controlplanev1.DispatchState_DISPATCH_STATE_SUCCEEDED ||
		sum.Chunks != 6 || sum.FinishReason != "stop" || sum.Usage.TotalTokens != 9 {
		t.Errorf("the streamed dispatch: joined %q, %v %s %s", joined, final.GetState(), final.GetResultJson(), final.GetError())
	}

	// Cancelled mid-stream: the local request is cancelled too.
	llm.reset()
	disp = createLLMDispatch(t, api, id, `{"model":"llama3.1:8b","stream":true,"messages":[{"role":"user","content":"hang"}]}`)
	eventually.NoError(t, "the first chunk stored", func() error {
		if lines := outputLines(t, api, disp); len(lines) == 0 {
			return fmt.Errorf("no output yet")
		}
		return nil
	})
	if _, err := api.CancelDispatch(t.Context(), connect.NewRequest(&controlplanev1.CancelDispatchRequest{Id: disp, Reason: "client went away"})); err != nil {
		t.Fatal(err)
	}
	select {
	case <-llm.cancelled:
	case <-time.After(time.Minute):
		t.Fatal("the local request was not cancelled within a minute")
	}
	if final := waitDispatchEnd(t, api, disp); final.GetState() != controlplanev1.DispatchState_DISPATCH_STATE_CANCELLED {
		t.Errorf("the cancelled dispatch: %v %s", final.GetState(), final.GetError())
	}

	// The server dies mid-stream: the dispatch fails, saying so.
	llm.reset()
	disp = createLLMDispatch(t, api, id, `{"model":"llama3.1:8b","stream":true,"messages":[{"role":"user","content":"hang"}]}`)
	eventually.NoError(t, "the first chunk stored", func() error {
		if lines := outputLines(t, api, disp); len(lines) == 0 {
			return fmt.Errorf("no output yet")
		}
		return nil
	})
	llm.CloseClientConnections()
	final = waitDispatchEnd(t, api, disp)
	if final.GetState() != controlplanev1.DispatchState_DISPATCH_STATE_FAILED ||
		!strings.Contains(final.GetError(), "llm.chat: the model server failed: the model server's stream broke off after 1 chunks") {
		t.Errorf("the dispatch whose server died: %v %s", final.GetState(), final.GetError())
	}
	if strings.Contains(node.stderr.String(), key) {
		t.Error("the node logged the API key")
	}
	node.stop(t)
}

// fakeLLM is an OpenAI-compatible server on loopback. A non-streamed chat answers at
// once; a streamed "stream" chat sends one chunk per word received on next, then the
// usage and [DONE] once next is closed; a streamed "hang" chat sends one chunk and
// waits for its request to end, which it reports on cancelled; hangs counts those.
type fakeLLM struct {
	*httptest.Server
	next      chan string
	hangs     atomic.Int32
	mu        sync.Mutex
	cancelled chan struct{}
}

func newFakeLLM(t *testing.T, key string) *fakeLLM {
	t.Helper()
	f := &fakeLLM{next: make(chan string)}
	f.reset()
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+key {
			http.Error(w, `{"error":{"message":"bad key"}}`, http.StatusUnauthorized)
			return
		}
		var req struct {
			Model    string `json:"model"`
			Stream   bool   `json:"stream"`
			Messages []struct {
				Content string `json:"content"`
			} `json:"messages"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		chunk := func(content string, finish any) {
			b, _ := json.Marshal(map[string]any{"id": "chatcmpl-e2e", "object": "chat.completion.chunk", "model": req.Model,
				"choices": []any{map[string]any{"index": 0, "delta": map[string]any{"content": content}, "finish_reason": finish}}})
			fmt.Fprintf(w, "data: %s\n\n", b)
			w.(http.Flusher).Flush()
		}
		switch {
		case r.URL.Path == "/v1/embeddings":
			fmt.Fprintf(w, `{"object":"list","model":%q,"data":[{"object":"embedding","index":0,"embedding":[0.5,0.25]}],"usage":{"prompt_tokens":1,"total_tokens":1}}`, req.Model)
		case !req.Stream:
			fmt.Fprintf(w, `{"id":"chatcmpl-e2e","object":"chat.completion","model":%q,"choices":[{"index":0,"message":{"role":"assistant","content":"Hello from %s"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":3,"total_tokens":6}}`, req.Model, req.Model)
		case req.Messages[0].Content == "stream":
			for word := range f.next {
				chunk(word, nil)
			}
			chunk("", "stop")
			fmt.Fprintf(w, "data: {\"id\":\"chatcmpl-e2e\",\"model\":%q,\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":4,\"total_tokens\":9}}\n\ndata: [DONE]\n\n", req.Model)
		default:
			f.hangs.Add(1)
			chunk("Hel", nil)
			<-r.Context().Done()
			f.mu.Lock()
			close(f.cancelled)
			f.mu.Unlock()
		}
	}))
	t.Cleanup(f.Close)
	return f
}

// reset makes a new cancelled channel for the next hanging request.
func (f *fakeLLM) reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cancelled = make(chan struct{})
}

// createLLMDispatch creates a dispatch of llm.chat on node with input, and returns its id.
func createLLMDispatch(t *testing.T, api controlplanev1connect.DispatchServiceClient, node, input string) string {
	t.Helper()
	res, err := api.CreateDispatch(t.Context(), connect.NewRequest(&controlplanev1.CreateDispatchRequest{
		NodeId: node, Capability: "llm.chat", InputJson: input, Timeout: durationpb.New(5 * time.Minute),
	}))
	if err != nil {
		t.Fatal(err)
	}
	return res.Msg.GetDispatch().GetId()
}

// outputLines returns the complete lines of a dispatch's output stored so far.
func outputLines(t *testing.T, api controlplanev1connect.DispatchServiceClient, id string) []string {
	t.Helper()
	res, err := api.GetDispatch(t.Context(), connect.NewRequest(&controlplanev1.GetDispatchRequest{Id: id, IncludeOutput: true}))
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	for _, c := range res.Msg.GetOutput() {
		out.Write(c.GetData())
	}
	lines := strings.SplitAfter(out.String(), "\n")
	var complete []string
	for _, l := range lines {
		if strings.HasSuffix(l, "\n") {
			complete = append(complete, strings.TrimSuffix(l, "\n"))
		}
	}
	return complete
}

// waitDispatchEnd waits until a dispatch has ended, and returns it.
func waitDispatchEnd(t *testing.T, api controlplanev1connect.DispatchServiceClient, id string) *controlplanev1.Dispatch {
	t.Helper()
	var d *controlplanev1.Dispatch
	eventually.NoError(t, "the dispatch ended", func() error {
		res, err := api.GetDispatch(t.Context(), connect.NewRequest(&controlplanev1.GetDispatchRequest{Id: id}))
		if err != nil {
			return err
		}
		d = res.Msg.GetDispatch()
		switch d.GetState() {
		case controlplanev1.DispatchState_DISPATCH_STATE_SUCCEEDED, controlplanev1.DispatchState_DISPATCH_STATE_FAILED,
			controlplanev1.DispatchState_DISPATCH_STATE_CANCELLED, controlplanev1.DispatchState_DISPATCH_STATE_TIMED_OUT:
			return nil
		}
		return fmt.Errorf("the dispatch is %v", d.GetState())
	})
	return d
}
