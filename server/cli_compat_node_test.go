package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/packages/ssestream"

	compatv1 "github.com/palyra/palyra/gen/go/palyra/compat/v1"
	"github.com/palyra/palyra/gen/go/palyra/compat/v1/compatv1connect"
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
// event and its dispatch is ended at once (cancelled, abandoned), never to be delivered
// again when the node comes back; with no node online the model is a 503 that says so.
func TestOpenAISDKNodeProvider(t *testing.T) {
	t.Parallel()
	e := startCompatDaemon(t, storetest.URL(t))
	d, dir, admin, api, c, ctx := e.d, e.dir, e.admin, e.api, e.c, t.Context()

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

	// A node killed mid-stream ends the stream with an error event, and palyrad ends
	// the dispatch at once, saying why.
	llm.reset()
	s = c.Chat.Completions.NewStreaming(ctx, params)
	if !s.Next() {
		t.Fatalf("no first chunk: %v", s.Err())
	}
	killed := lastChatDispatch(t, api, node.deviceID)
	node.kill(t)
	for s.Next() {
		t.Errorf("a chunk after the node was killed: %+v", s.Current())
	}
	var se *ssestream.StreamError
	if !errors.As(s.Err(), &se) || !strings.Contains(se.Message, "provider_error") || !strings.Contains(se.Message, "went offline") {
		t.Errorf("a stream whose node was killed: %v", s.Err())
	}
	if d := waitDispatchEnd(t, api, killed); d.GetState() != controlplanev1.DispatchState_DISPATCH_STATE_CANCELLED ||
		!strings.Contains(d.GetError(), "abandoned: node e2e-node went offline before it finished the answer") {
		t.Errorf("the dispatch of the killed node's stream: %v (%s)", d.GetState(), d.GetError())
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

	// The node comes back: it serves again, and never receives the abandoned dispatch
	// (its model server saw two hanging requests: the client's that went away and the
	// killed node's).
	node = restartNodeAgent(t, node)
	if _, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "fast", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}}); err != nil {
		t.Fatalf("the node back: %v", err)
	}
	if d := waitDispatchEnd(t, api, killed); d.GetState() != controlplanev1.DispatchState_DISPATCH_STATE_CANCELLED || llm.hangs.Load() != 2 {
		t.Errorf("after the node reconnected: the abandoned dispatch is %v, the model server saw %d hanging requests", d.GetState(), llm.hangs.Load())
	}
	node.stop(t)
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

// TestOpenAISDKNodeRouting: which node serves a model, with two real nodes fronting one
// fake model server. Both serve a chat model and an embedding model; node A reports
// zone=eu and tier=spot, but its administrator labelled it tier=prod at approval (the
// administrator's label wins); node B reports zone=us. Embeddings go to a node as
// llm.embed dispatches; the least busy node serves, counted from the database (a
// dispatch created outside the compat API counts, and so does a stream through
// another replica of the same database); the X-Palyra-Node-Selector header
// and compat.node_selector narrow the nodes, on REST and Connect, and bad selectors are
// refused; a stream the client cancels leaves no dispatch running and no goroutine
// behind. Not parallel: it counts palyrad's goroutines, which no other test's must add to.
func TestOpenAISDKNodeRouting(t *testing.T) {
	dbURL := storetest.URL(t)
	e := startCompatDaemon(t, dbURL)
	d, dir, admin, api, c, ctx := e.d, e.dir, e.admin, e.api, e.c, t.Context()
	rpc := compatv1connect.NewCompatServiceClient(e.hc, "https://"+d.addr, e.auth)
	// A second replica of the same database, for the load across replicas.
	d2 := startDaemon(t, map[string]string{"PALYRA_MASTER_KEY": masterKey(t, dir)},
		"--listen", "127.0.0.1:0", "--data-dir", t.TempDir(), "--database-url", dbURL)
	c2 := openai.NewClient(option.WithBaseURL("https://"+d2.addr+"/v1/"), option.WithAPIKey(e.token),
		option.WithHTTPClient(e.hc), option.WithMaxRetries(0))

	const key = "sk-e2e-routing-key"
	llm := newFakeLLM(t, key)
	keyFile := filepath.Join(t.TempDir(), "llm.key")
	if err := os.WriteFile(keyFile, []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	start := func(o nodeOptions) *nodeAgent {
		stateDir := t.TempDir()
		writeRawNodeConfig(t, stateDir, `[llm]
base_url = "`+llm.URL+`/v1"
api_key_file = "`+keyFile+`"
models = ["fast=qwen2.5:0.5b-instruct"]
embedding_models = ["embed=nomic-embed-text"]
`)
		return startNodeAgentWith(t, admin, "https://"+d.addr, caFingerprint(t, dir), stateDir, o)
	}
	a := start(nodeOptions{run: []string{"--label", "zone=eu", "--label", "tier=spot"}, approve: []string{"--label", "tier=prod"}})
	b := start(nodeOptions{run: []string{"--label", "zone=us"}})

	// The models of both capabilities are listed; the header narrows the list.
	listed := func(opts ...option.RequestOption) string {
		t.Helper()
		page, err := c.Models.List(ctx, opts...)
		if err != nil {
			t.Fatalf("list models: %v", err)
		}
		var ids []string
		for _, m := range page.Data {
			ids = append(ids, m.ID+"/"+m.OwnedBy)
		}
		return strings.Join(ids, ",")
	}
	if got := listed(); got != "embed/node,fast/node" {
		t.Errorf("models: %s", got)
	}
	if got := listed(option.WithHeader("X-Palyra-Node-Selector", "zone=nowhere")); got != "" {
		t.Errorf("models no node matching the header serves: %s", got)
	}

	// Embeddings are answered by a node, through both surfaces.
	emb, err := c.Embeddings.New(ctx, openai.EmbeddingNewParams{Model: "embed", Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String("hello")}})
	if err != nil {
		t.Fatal(err)
	}
	if emb.Model != "embed" || len(emb.Data) != 1 || fmt.Sprint(emb.Data[0].Embedding) != "[0.5 0.25]" || emb.Usage.PromptTokens != 1 {
		t.Errorf("embeddings: %+v", emb)
	}
	res, err := rpc.CreateEmbedding(ctx, connect.NewRequest(&compatv1.CreateEmbeddingRequest{Model: "embed", Input: []string{"hello"}}))
	if err != nil || len(res.Msg.GetData()) != 1 || fmt.Sprint(res.Msg.GetData()[0].GetEmbedding()) != "[0.5 0.25]" {
		t.Errorf("CreateEmbedding: %v %v", res, err)
	}
	if n := countDispatches(t, api, a.deviceID, "llm.embed") + countDispatches(t, api, b.deviceID, "llm.embed"); n != 2 {
		t.Errorf("%d llm.embed dispatches, want 2", n)
	}
	var oe *openai.Error
	_, err = c.Embeddings.New(ctx, openai.EmbeddingNewParams{Model: "fast", Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String("hello")}})
	if !errors.As(err, &oe) || oe.StatusCode != http.StatusNotFound || oe.Code != "model_not_found" {
		t.Errorf("embeddings of a model nodes serve only for chat: %v", err)
	}

	chatVia := func(c openai.Client, opts ...option.RequestOption) error {
		t.Helper()
		_, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "fast",
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}}, opts...)
		return err
	}
	chat := func(opts ...option.RequestOption) error { return chatVia(c, opts...) }
	// served counts the chat completions each node served, from what it served before.
	served := func() (int, int) {
		return countDispatches(t, api, a.deviceID, "llm.chat"), countDispatches(t, api, b.deviceID, "llm.chat")
	}

	// A dispatch in flight on A, created without the compat API (as another replica's
	// would be, which this one does not count): every completion goes to B.
	busy := createLLMDispatch(t, api, a.deviceID, `{"model":"fast","stream":true,"messages":[{"role":"user","content":"hang"}]}`)
	eventually.NoError(t, "the busy dispatch running", func() error {
		if len(outputLines(t, api, busy)) == 0 {
			return fmt.Errorf("no output yet")
		}
		return nil
	})
	a0, b0 := served()
	for range 3 {
		if err := chat(); err != nil {
			t.Fatal(err)
		}
	}
	if a1, b1 := served(); a1 != a0 || b1 != b0+3 {
		t.Errorf("with A busy: A served %d, B %d, want 0 and 3", a1-a0, b1-b0)
	}
	if _, err := api.CancelDispatch(ctx, connect.NewRequest(&controlplanev1.CancelDispatchRequest{Id: busy})); err != nil {
		t.Fatal(err)
	}
	select {
	case <-llm.cancelled:
	case <-time.After(time.Minute):
		t.Fatal("the busy dispatch's request still runs a minute after it was cancelled")
	}
	waitDispatchEnd(t, api, busy)

	// A stream in flight on one node through one replica: the next completion, through
	// the other replica, goes to the other node. Then the client cancels the stream: the
	// dispatch ends, and nothing of it stays behind in either replica.
	llm.reset()
	sctx, cancel := context.WithCancel(ctx)
	s := c.Chat.Completions.NewStreaming(sctx, openai.ChatCompletionNewParams{Model: "fast",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hang")}})
	if !s.Next() {
		t.Fatalf("no first chunk: %v", s.Err())
	}
	a0, b0 = served()
	if err := chatVia(c2); err != nil {
		t.Fatal(err)
	}
	a1, b1 := served()
	hungOn, otherServed := a.deviceID, b1-b0
	if a1 != a0 {
		hungOn, otherServed = b.deviceID, a1-a0
	}
	if otherServed != 1 || a1-a0+b1-b0 != 1 {
		t.Errorf("with a stream on %s: A served %d, B %d; want the other node to serve", hungOn, a1-a0, b1-b0)
	}
	hung := lastChatDispatch(t, api, hungOn)
	if followGoroutines() == 0 {
		t.Error("no goroutine follows the open stream's dispatch: counting them below proves nothing")
	}
	cancel()
	_ = s.Close()
	select {
	case <-llm.cancelled:
	case <-time.After(time.Minute):
		t.Fatal("the model server's request still runs a minute after the client went away")
	}
	if d := waitDispatchEnd(t, api, hung); d.GetState() != controlplanev1.DispatchState_DISPATCH_STATE_CANCELLED {
		t.Errorf("the dispatch of the cancelled stream: %v (%s)", d.GetState(), d.GetError())
	}
	eventually.NoError(t, "no goroutine following a dispatch", func() error {
		if n := followGoroutines(); n > 0 {
			return fmt.Errorf("%d goroutine stacks of compat.(*follow) remain", n)
		}
		return nil
	})

	// The header chooses: zone=us is B; tier=prod is A (its administrator's label);
	// tier=spot, which A reports but its administrator overrode, is no node.
	for _, tc := range []struct {
		selector string
		node     *nodeAgent
	}{{"zone=us", b}, {"tier=prod", a}, {"zone in (eu,ap), !gpu", a}, {"zone notin (eu)", b}} {
		a0, b0 := served()
		if err := chat(option.WithHeader("X-Palyra-Node-Selector", tc.selector)); err != nil {
			t.Fatalf("selector %q: %v", tc.selector, err)
		}
		a1, b1 := served()
		if got := map[bool]*nodeAgent{true: a, false: b}[a1 != a0]; got != tc.node || a1-a0+b1-b0 != 1 {
			t.Errorf("selector %q: A served %d, B %d", tc.selector, a1-a0, b1-b0)
		}
	}
	err = chat(option.WithHeader("X-Palyra-Node-Selector", "tier=spot"))
	if !errors.As(err, &oe) || oe.StatusCode != http.StatusServiceUnavailable ||
		!strings.Contains(oe.Message, `no node serving the model "fast" matches the node selector X-Palyra-Node-Selector "tier=spot"`) {
		t.Errorf("a selector no node matches: %v", err)
	}
	// The inventory agrees with the routing: A is listed by tier=prod, with it.
	inventory := controlplanev1connect.NewNodeInventoryServiceClient(e.hc, "https://"+d.addr, e.auth)
	for selector, want := range map[string]string{"prod": a.deviceID, "spot": ""} {
		res, err := inventory.ListNodes(ctx, connect.NewRequest(&controlplanev1.ListNodesRequest{Labels: map[string]string{"tier": selector}}))
		if err != nil {
			t.Fatalf("list nodes with tier=%s: %v", selector, err)
		}
		var got []string
		for _, n := range res.Msg.GetNodes() {
			got = append(got, n.GetId()+" tier="+n.GetEffectiveLabels()["tier"])
		}
		if (want == "" && len(got) != 0) || (want != "" && (len(got) != 1 || got[0] != want+" tier=prod")) {
			t.Errorf("nodes listed with tier=%s: %v", selector, got)
		}
	}

	// A bad header is a 400 naming it, on every call and surface.
	for name, call := range map[string]func(opt option.RequestOption) error{
		"chat":   func(opt option.RequestOption) error { return chat(opt) },
		"models": func(opt option.RequestOption) error { _, err := c.Models.List(ctx, opt); return err },
	} {
		err := call(option.WithHeader("X-Palyra-Node-Selector", "zone in eu"))
		if !errors.As(err, &oe) || oe.StatusCode != http.StatusBadRequest || oe.Param != "X-Palyra-Node-Selector" ||
			!strings.Contains(oe.Message, `X-Palyra-Node-Selector: the header is not a label selector`) ||
			!strings.Contains(oe.Message, `at position 9: want "(" after "in", found "eu"`) {
			t.Errorf("%s with a bad selector: %v", name, err)
		}
	}
	req := connect.NewRequest(&compatv1.CreateEmbeddingRequest{Model: "embed", Input: []string{"hello"}})
	req.Header().Set("X-Palyra-Node-Selector", "zone=")
	if _, err := rpc.CreateEmbedding(ctx, req); err != nil {
		if !strings.Contains(err.Error(), `matches the node selector X-Palyra-Node-Selector "zone="`) || connect.CodeOf(err) != connect.CodeUnavailable {
			t.Errorf("CreateEmbedding with zone=: %v", err)
		}
	} else {
		t.Error("CreateEmbedding with zone= (no node has an empty zone) succeeded")
	}
	req.Header().Set("X-Palyra-Node-Selector", "zone=eu,")
	if _, err := rpc.CreateEmbedding(ctx, req); connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "X-Palyra-Node-Selector") {
		t.Errorf("CreateEmbedding with a bad selector: %v", err)
	}

	// compat.node_selector restricts every call; the header narrows it further. A bad
	// selector is refused when it is set, and changes nothing.
	if code, _, stderr := admin.run(t, "", "config", "set", "compat.node_selector", "zone==eu,tier notin prod"); code == 0 ||
		!strings.Contains(stderr, `at position 21: want "(" after "notin", found "prod"`) {
		t.Errorf("set a bad node selector: exit %d, %s", code, stderr)
	}
	admin.ok(t, "config", "set", "compat.node_selector", "zone==eu")
	if got := listed(); got != "embed/node,fast/node" {
		t.Errorf("models with the setting: %s", got)
	}
	for range 2 {
		a0, b0 := served()
		if err := chat(); err != nil {
			t.Fatal(err)
		}
		if a1, b1 := served(); a1 != a0+1 || b1 != b0 {
			t.Errorf("with compat.node_selector zone==eu: A served %d, B %d", a1-a0, b1-b0)
		}
	}
	err = chat(option.WithHeader("X-Palyra-Node-Selector", "zone=us"))
	if !errors.As(err, &oe) || oe.StatusCode != http.StatusServiceUnavailable ||
		!strings.Contains(oe.Message, `matches the node selector compat.node_selector "zone=eu" and X-Palyra-Node-Selector "zone=us"`) {
		t.Errorf("a header outside the setting: %v", err)
	}

	// The only matching node goes offline: 503 naming the selector.
	a.stop(t)
	eventually.NoError(t, "A offline", func() error {
		err := chat()
		if !errors.As(err, &oe) || oe.StatusCode != http.StatusServiceUnavailable ||
			!strings.Contains(oe.Message, `no node serving the model "fast" that matches compat.node_selector "zone=eu" is online`) {
			return fmt.Errorf("with A offline: %v", err)
		}
		return nil
	})
	b.stop(t)
}

// compatDaemon is a palyrad whose OpenAI-compatible API is on (streaming too), with
// the owner's clients.
type compatDaemon struct {
	d          *runningDaemon
	dir, token string
	admin      *cliUser
	api        controlplanev1connect.DispatchServiceClient
	hc         *http.Client
	auth       connect.ClientOption
	c          openai.Client
}

// startCompatDaemon starts palyrad on dbURL and turns its OpenAI-compatible API on.
func startCompatDaemon(t *testing.T, dbURL string) compatDaemon {
	t.Helper()
	e := compatDaemon{dir: t.TempDir()}
	e.d = startDaemon(t, nil, "--listen", "127.0.0.1:0", "--data-dir", e.dir, "--database-url", dbURL)
	e.token = bootstrapToken(t, e.dir)
	e.admin = newCLIUser(t).with("PALYRA_TOKEN", e.token, "PALYRA_URL", "https://"+e.d.addr,
		"PALYRA_CA_FILE", filepath.Join(e.dir, "ca.pem"))
	e.admin.ok(t, "flags", "set", "compat_api", "on")
	e.admin.ok(t, "flags", "set", "compat_streaming", "on")
	e.api = newDispatchClient(t, e.d.addr, e.dir)
	e.hc, e.auth = ownerClient(t, e.dir)
	e.c = openai.NewClient(option.WithBaseURL("https://"+e.d.addr+"/v1/"), option.WithAPIKey(e.token),
		option.WithHTTPClient(e.hc), option.WithMaxRetries(0))
	return e
}

// countDispatches counts a node's dispatches of capability.
func countDispatches(t *testing.T, api controlplanev1connect.DispatchServiceClient, node, capability string) int {
	t.Helper()
	res, err := api.ListDispatches(t.Context(), connect.NewRequest(&controlplanev1.ListDispatchesRequest{NodeId: node, Capability: capability, PageSize: 500}))
	if err != nil {
		t.Fatal(err)
	}
	return len(res.Msg.GetDispatches())
}

// followGoroutines counts the goroutine stacks (of this process: the in-process
// palyrad's) that follow a node dispatch for the compat API.
func followGoroutines() int {
	var buf bytes.Buffer
	_ = pprof.Lookup("goroutine").WriteTo(&buf, 1)
	return strings.Count(buf.String(), "compat.(*follow)")
}
