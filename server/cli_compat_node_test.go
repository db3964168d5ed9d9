package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/packages/ssestream"

	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	"github.com/palyra/palyra/gen/go/palyra/controlplane/v1/controlplanev1connect"
	"github.com/palyra/palyra/internal/eventually"
	"github.com/palyra/palyra/server/internal/store/storetest"
)

// TestOpenAISDKNodeProvider is a node as a model host behind the OpenAI-compatible API,
// end to end: the official Go client against a real palyrad, whose model is served by a
// real `palyra node run` fronting a fake OpenAI-compatible server on loopback. The
// node's models are listed; a chat completion is answered by the node, streamed chunk
// by chunk as the server produces them; a client that goes away cancels the dispatch
// and the server's request; a node killed mid-stream ends the stream with an error
// event; with no node online the model is a 503 that says so.
func TestOpenAISDKNodeProvider(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	d := startDaemon(t, nil, "--listen", "127.0.0.1:0", "--data-dir", dir, "--database-url", storetest.URL(t))
	token := bootstrapToken(t, dir)
	admin := newCLIUser(t).with("PALYRA_TOKEN", token, "PALYRA_URL", "https://"+d.addr,
		"PALYRA_CA_FILE", filepath.Join(dir, "ca.pem"))
	admin.ok(t, "flags", "set", "compat_api", "on")
	admin.ok(t, "flags", "set", "compat_streaming", "on")
	api := newDispatchClient(t, d.addr, dir)
	hc, _ := ownerClient(t, dir)
	c := openai.NewClient(option.WithBaseURL("https://"+d.addr+"/v1/"), option.WithAPIKey(token),
		option.WithHTTPClient(hc), option.WithMaxRetries(0))
	ctx := t.Context()

	const key = "sk-e2e-compat-key"
	llm := newFakeLLM(t, key)
	stateDir := t.TempDir()
	keyFile := filepath.Join(t.TempDir(), "llm.key")
	if err := os.WriteFile(keyFile, []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	writeRawNodeConfig(t, stateDir, `[llm]
base_url = "`+llm.URL+`/v1"
api_key_file = "`+keyFile+`"
models = ["fast=qwen2.5:0.5b-instruct"]
`)
	node := startNodeAgent(t, admin, "https://"+d.addr, caFingerprint(t, dir), stateDir)

	// The node's model is listed, owned by "node".
	page, err := c.Models.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var listed []string
	for _, m := range page.Data {
		listed = append(listed, m.ID+"/"+m.OwnedBy)
	}
	if strings.Join(listed, ",") != "fast/node" {
		t.Errorf("models: %v", listed)
	}
	if m, err := c.Models.Get(ctx, "fast"); err != nil || m.OwnedBy != "node" {
		t.Errorf("get the node's model: %+v %v", m, err)
	}

	// One completion, answered by the node.
	params := openai.ChatCompletionNewParams{Model: "fast", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Say hello")}}
	got, err := c.Chat.Completions.New(ctx, params)
	if err != nil {
		t.Fatal(err)
	}
	if got.Model != "fast" || len(got.Choices) != 1 || got.Choices[0].Message.Content != "Hello from qwen2.5:0.5b-instruct" || got.Usage.TotalTokens != 6 {
		t.Errorf("completion: %+v", got)
	}

	// The call is audited with its model, the node and the token counts.
	want := "model:fast provider:node node:" + node.deviceID + " prompt_tokens:3 completion_tokens:3"
	eventually.NoError(t, "the completion audited", func() error {
		var events struct {
			Events []struct {
				Target string `json:"target"`
			} `json:"events"`
		}
		decode(t, admin.ok(t, "audit", "list", "--procedure", "/palyra.compat.v1.CompatService/CreateChatCompletion", "--since", "1h", "-o", "json"), &events)
		if len(events.Events) != 1 || events.Events[0].Target != want {
			return fmt.Errorf("audit events %+v, want one with target %q", events.Events, want)
		}
		return nil
	})

	// Streamed: each token reaches the client before the server produces the next.
	params.Messages = []openai.ChatCompletionMessageParamUnion{openai.UserMessage("stream")}
	params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	// palyrad answers the headers with the first chunk: the first token is sent while
	// the SDK waits for them.
	words := []string{"Tokens", " as", " they", " come"}
	sent := make(chan bool, 1)
	go func() {
		select {
		case llm.next <- words[0]:
			sent <- true
		case <-time.After(time.Minute):
			sent <- false
		}
	}()
	s := c.Chat.Completions.NewStreaming(ctx, params)
	if !<-sent {
		t.Fatalf("the model server did not ask for the first token within a minute; the node says:\n%s", node.stderr)
	}
	var joined strings.Builder
	for i, word := range words {
		if i > 0 {
			select {
			case llm.next <- word:
			case <-time.After(time.Minute):
				t.Fatalf("the model server did not ask for token %d within a minute; the node says:\n%s", i, node.stderr)
			}
		}
		if !s.Next() {
			t.Fatalf("token %d: the stream ended: %v", i, s.Err())
		}
		if ch := s.Current().Choices; len(ch) != 1 || ch[0].Delta.Content != word {
			t.Fatalf("token %d: %+v, want %q", i, s.Current(), word)
		}
		joined.WriteString(word)
	}
	close(llm.next)
	var usage int64
	for s.Next() {
		for _, ch := range s.Current().Choices {
			joined.WriteString(ch.Delta.Content)
		}
		if s.Current().Usage.TotalTokens > 0 {
			usage = s.Current().Usage.TotalTokens
		}
	}
	if err := s.Err(); err != nil || joined.String() != "Tokens as they come" || usage != 9 {
		t.Errorf("stream: %q, usage %d, %v", joined.String(), usage, err)
	}

	// Without include_usage the usage chunk is dropped.
	params.StreamOptions = openai.ChatCompletionStreamOptionsParam{}
	s = c.Chat.Completions.NewStreaming(ctx, params)
	for s.Next() {
		if len(s.Current().Choices) == 0 {
			t.Errorf("a chunk without choices: %+v", s.Current())
		}
	}
	if err := s.Err(); err != nil {
		t.Errorf("stream without usage: %v", err)
	}

	// A client that goes away cancels the dispatch, and the node the server's request.
	params.Messages = []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hang")}
	sctx, cancel := context.WithCancel(ctx)
	s = c.Chat.Completions.NewStreaming(sctx, params)
	if !s.Next() {
		t.Fatalf("no first chunk: %v", s.Err())
	}
	hung := lastChatDispatch(t, api, node.deviceID)
	cancel()
	_ = s.Close()
	select {
	case <-llm.cancelled:
	case <-time.After(time.Minute):
		t.Fatalf("the model server's request still runs a minute after the client went away; the node says:\n%s", node.stderr)
	}
	if d := waitDispatchEnd(t, api, hung); d.GetState() != controlplanev1.DispatchState_DISPATCH_STATE_CANCELLED {
		t.Errorf("the dispatch of a stream the client left: %v (%s)", d.GetState(), d.GetError())
	}

	// A node killed mid-stream ends the stream with an error event.
	llm.reset()
	s = c.Chat.Completions.NewStreaming(ctx, params)
	if !s.Next() {
		t.Fatalf("no first chunk: %v", s.Err())
	}
	node.kill(t)
	for s.Next() {
		t.Errorf("a chunk after the node was killed: %+v", s.Current())
	}
	var se *ssestream.StreamError
	if !errors.As(s.Err(), &se) || !strings.Contains(se.Message, "provider_error") || !strings.Contains(se.Message, "went offline") {
		t.Errorf("a stream whose node was killed: %v", s.Err())
	}

	// No node online: 503, which says so; the model is no longer listed.
	_, err = c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "fast", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}})
	var oe *openai.Error
	if !errors.As(err, &oe) || oe.StatusCode != http.StatusServiceUnavailable || !strings.Contains(oe.Message, `no node serving the model "fast" is online`) {
		t.Errorf("no node online: %v", err)
	}
	if page, err := c.Models.List(ctx); err != nil || len(page.Data) != 0 {
		t.Errorf("models with no node online: %+v %v", page, err)
	}
	_, err = c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "slow", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}})
	if !errors.As(err, &oe) || oe.StatusCode != http.StatusNotFound || oe.Code != "model_not_found" {
		t.Errorf("a model no node serves: %v", err)
	}
}

// lastChatDispatch waits for the newest llm.chat dispatch of node and returns its id.
func lastChatDispatch(t *testing.T, api controlplanev1connect.DispatchServiceClient, node string) string {
	t.Helper()
	var id string
	eventually.NoError(t, "an llm.chat dispatch", func() error {
		res, err := api.ListDispatches(t.Context(), connect.NewRequest(&controlplanev1.ListDispatchesRequest{NodeId: node, Capability: "llm.chat", PageSize: 1}))
		if err != nil {
			return err
		}
		if len(res.Msg.GetDispatches()) == 0 {
			return fmt.Errorf("none")
		}
		id = res.Msg.GetDispatches()[0].GetId()
		return nil
	})
	return id
}
