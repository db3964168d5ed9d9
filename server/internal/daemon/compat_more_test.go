package daemon_test

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"slices"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"

	accessv1 "github.com/palyra/palyra/gen/go/palyra/access/v1"
	compatv1 "github.com/palyra/palyra/gen/go/palyra/compat/v1"
	"github.com/palyra/palyra/gen/go/palyra/compat/v1/compatv1connect"
)

// embeddings is the fake upstream's POST /v1/embeddings: input i's vector is [i, length
// of the input's JSON, 0.5], 2 tokens per input; the input "fail-always" fails with 500.
func (f *fakeUpstream) embeddings(w http.ResponseWriter, r *http.Request) {
	var req map[string]any
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, "bad json", http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	f.requests = append(f.requests, req)
	f.auth = append(f.auth, r.Header.Get("Authorization"))
	f.mu.Unlock()
	inputs, ok := req["input"].([]any)
	if !ok {
		inputs = []any{req["input"]}
	}
	if inputs[0] == "fail-always" {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = w.Write([]byte(`{"error":{"message":"embedder broke","type":"server_error","param":null,"code":null}}`))
		return
	}
	data := make([]any, len(inputs))
	for i, in := range inputs {
		raw, _ := json.Marshal(in)
		data[i] = map[string]any{"object": "embedding", "index": i, "embedding": []float64{float64(i), float64(len(raw)), 0.5}}
	}
	slices.Reverse(data) // indexes, not order, say which input a vector is for
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"object": "list", "data": data, "model": req["model"],
		"usage": map[string]any{"prompt_tokens": 2 * len(inputs), "total_tokens": 2 * len(inputs)}})
}

// floats decodes a base64 embedding (little-endian float32s).
func floats(t *testing.T, s string) []float64 {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b)%4 != 0 {
		t.Fatalf("base64 embedding %q: %v", s, err)
	}
	out := make([]float64, len(b)/4)
	for i := range out {
		out[i] = float64(math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:])))
	}
	return out
}

// float32s are the float32s that fs (read from JSON or base64) stand for.
func float32s(fs []float64) []float32 {
	out := make([]float32, len(fs))
	for i, f := range fs {
		out[i] = float32(f)
	}
	return out
}

// TestOpenAIGoSDKEmbeddingsAndResponses is the acceptance of POST /v1/embeddings and
// POST /v1/responses with the official Go client, against palyra-echo and the fake
// upstream, and of their Connect RPCs.
func TestOpenAIGoSDKEmbeddingsAndResponses(t *testing.T) {
	t.Parallel()
	b := startCompat(t)
	ctx := t.Context()
	_, operator := b.createToken(t, &accessv1.CreateTokenRequest{Label: "sdk", Role: accessv1.Role_ROLE_OPERATOR})
	c := b.sdk(operator)

	_, err := c.Embeddings.New(ctx, openai.EmbeddingNewParams{Model: "palyra-echo", Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String("x")}})
	apiError(t, "embeddings with compat_api off", err, http.StatusForbidden, "feature_disabled", "")
	_, err = c.Responses.New(ctx, responses.ResponseNewParams{Model: "palyra-echo", Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("x")}})
	apiError(t, "responses with compat_api off", err, http.StatusForbidden, "feature_disabled", "")
	b.setFlag(t, "compat_api", true)

	// Embeddings, palyra-echo: deterministic unit vectors, floats and base64 alike.
	texts := []string{"the quick brown fox", "jumps"}
	emb := openai.EmbeddingNewParams{Model: "palyra-echo", Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: texts}}
	e1, err := c.Embeddings.New(ctx, emb)
	if err != nil {
		t.Fatal(err)
	}
	if len(e1.Data) != 2 || len(e1.Data[0].Embedding) != 256 || e1.Model != "palyra-echo" || e1.Usage.PromptTokens != 5 || e1.Usage.TotalTokens != 5 {
		t.Fatalf("echo embeddings: %d vectors, model %q, usage %+v", len(e1.Data), e1.Model, e1.Usage)
	}
	var norm float64
	for _, f := range e1.Data[0].Embedding {
		norm += f * f
	}
	if math.Abs(norm-1) > 1e-4 || slices.Equal(e1.Data[0].Embedding, e1.Data[1].Embedding) || e1.Data[1].Index != 1 {
		t.Errorf("echo embeddings: norm² %v, the two inputs' vectors equal: %v", norm, slices.Equal(e1.Data[0].Embedding, e1.Data[1].Embedding))
	}
	emb.Dimensions = openai.Int(12)
	emb.EncodingFormat = openai.EmbeddingNewParamsEncodingFormatBase64
	e2, err := c.Embeddings.New(ctx, emb)
	if err != nil {
		t.Fatal(err)
	}
	var b64 string
	if err := json.Unmarshal([]byte(e2.Data[1].JSON.Embedding.Raw()), &b64); err != nil {
		t.Fatalf("base64 embedding: %s: %v", e2.Data[1].JSON.Embedding.Raw(), err)
	}
	emb.EncodingFormat = openai.EmbeddingNewParamsEncodingFormatFloat
	e3, err := c.Embeddings.New(ctx, emb)
	if err != nil {
		t.Fatal(err)
	}
	if got := floats(t, b64); len(got) != 12 || !slices.Equal(float32s(got), float32s(e3.Data[1].Embedding)) {
		t.Errorf("base64 %v and float %v embeddings differ", got, e3.Data[1].Embedding)
	}

	// Embeddings, the upstream: alias rewritten, floats asked for, the key resolved.
	up := openai.EmbeddingNewParams{Model: "alias", Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{"a", "bcd"}},
		EncodingFormat: openai.EmbeddingNewParamsEncodingFormatBase64}
	e4, err := c.Embeddings.New(ctx, up)
	if err != nil {
		t.Fatal(err)
	}
	req, auth := b.fake.lastRequest()
	if req["model"] != "upstream-model" || req["encoding_format"] != "float" || auth != "Bearer "+upstreamKey {
		t.Errorf("the upstream got %v with %q", req, auth)
	}
	if err := json.Unmarshal([]byte(e4.Data[1].JSON.Embedding.Raw()), &b64); err != nil {
		t.Fatal(err)
	}
	if got := floats(t, b64); !slices.Equal(got, []float64{1, 5, 0.5}) || e4.Usage.PromptTokens != 4 || e4.Model != "alias" {
		t.Errorf("upstream embedding 1: %v, usage %+v, model %q", got, e4.Usage, e4.Model)
	}
	up.EncodingFormat = ""
	up.Input = openai.EmbeddingNewParamsInputUnion{OfString: openai.String("fail-always")}
	_, err = c.Embeddings.New(ctx, up)
	e := apiError(t, "upstream embeddings 500", err, http.StatusBadGateway, "provider_error", "")
	if strings.Contains(e.Message, b.fake.URL) {
		t.Errorf("upstream 500: %q leaks the URL", e.Message)
	}

	// Embeddings: bad input.
	badEmb := func(what, param string, opts ...option.RequestOption) {
		t.Helper()
		_, err := c.Embeddings.New(ctx, openai.EmbeddingNewParams{Model: "palyra-echo", Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String("x")}}, opts...)
		var e *openai.Error
		if !errors.As(err, &e) || e.StatusCode != http.StatusBadRequest || e.Param != param || e.Type != "invalid_request_error" {
			t.Errorf("%s: %v, want 400 naming %s", what, err, param)
		}
	}
	badEmb("empty input", "input", option.WithJSONSet("input", ""))
	badEmb("no inputs", "input", option.WithJSONSet("input", []string{}))
	badEmb("an empty input in a list", "input[1]", option.WithJSONSet("input", []string{"a", ""}))
	badEmb("input of the wrong type", "input", option.WithJSONSet("input", map[string]any{"text": "a"}))
	badEmb("a number in a list of strings", "input[0]", option.WithJSONSet("input", []any{true}))
	badEmb("unknown encoding", "encoding_format", option.WithJSONSet("encoding_format", "hex"))
	badEmb("dimensions 0", "dimensions", option.WithJSONSet("dimensions", 0))
	badEmb("no model", "model", option.WithJSONSet("model", 3))

	// Responses, palyra-echo: instructions and input become messages.
	const prompt = "hello  there,\nworld "
	rp := responses.ResponseNewParams{Model: "palyra-echo", Instructions: openai.String("be brief"),
		Input: responses.ResponseNewParamsInputUnion{OfString: openai.String(prompt)}, MaxOutputTokens: openai.Int(100)}
	res, err := c.Responses.New(ctx, rp)
	if err != nil {
		t.Fatal(err)
	}
	if res.OutputText() != prompt || res.Status != "completed" || res.Model != "palyra-echo" || res.Object != "response" ||
		!strings.HasPrefix(res.ID, "resp_") || res.Usage.InputTokens != 5 || res.Usage.OutputTokens != 3 || res.Usage.TotalTokens != 8 {
		t.Errorf("echo response: %q %q %q %q usage %+v", res.OutputText(), res.Status, res.Model, res.ID, res.Usage)
	}
	s := c.Responses.NewStreaming(ctx, rp)
	for s.Next() {
		t.Error("a stream with compat_streaming off sent an event")
	}
	apiError(t, "stream with compat_streaming off", s.Err(), http.StatusForbidden, "feature_disabled", "")
	b.setFlag(t, "compat_streaming", true)

	stream := func(what string, p responses.ResponseNewParams) (string, []string, responses.Response) {
		t.Helper()
		s := c.Responses.NewStreaming(ctx, p)
		var text strings.Builder
		var types []string
		var done responses.Response
		seq := int64(0)
		for s.Next() {
			ev := s.Current()
			if ev.SequenceNumber != seq {
				t.Errorf("%s: event %d has sequence number %d", what, seq, ev.SequenceNumber)
			}
			seq++
			if len(types) == 0 || types[len(types)-1] != ev.Type {
				types = append(types, ev.Type)
			}
			switch ev.Type {
			case "response.output_text.delta":
				text.WriteString(ev.Delta)
			case "response.output_text.done":
				if ev.Text != text.String() {
					t.Errorf("%s: output_text.done %q, deltas %q", what, ev.Text, text.String())
				}
			case "response.completed":
				done = ev.Response
			}
		}
		if err := s.Err(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return text.String(), types, done
	}
	text, types, done := stream("echo stream", rp)
	wantTypes := []string{"response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
		"response.output_text.delta", "response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed"}
	if text != prompt || !slices.Equal(types, wantTypes) || done.OutputText() != prompt || done.Usage.OutputTokens != 3 || done.Status != "completed" {
		t.Errorf("echo stream: %q, events %v, completed %q usage %+v", text, types, done.OutputText(), done.Usage)
	}

	// Responses, the upstream: a message list, max_output_tokens as max_tokens.
	rp = responses.ResponseNewParams{Model: "fake-model", MaxOutputTokens: openai.Int(50), Temperature: openai.Float(0.25),
		Input: responses.ResponseNewParamsInputUnion{OfInputItemList: responses.ResponseInputParam{
			responses.ResponseInputItemParamOfMessage("ignored", responses.EasyInputMessageRoleUser),
			responses.ResponseInputItemParamOfMessage("sure", responses.EasyInputMessageRoleAssistant),
			responses.ResponseInputItemParamOfMessage("one two three", responses.EasyInputMessageRoleUser),
		}}}
	res, err = c.Responses.New(ctx, rp)
	if err != nil {
		t.Fatal(err)
	}
	if res.OutputText() != "three two one" || res.Usage.InputTokens != 7 || res.Usage.OutputTokens != 3 {
		t.Errorf("upstream response: %q usage %+v", res.OutputText(), res.Usage)
	}
	req, _ = b.fake.lastRequest()
	msgs, _ := req["messages"].([]any)
	if req["model"] != "fake-model" || req["max_tokens"] != 50.0 || req["temperature"] != 0.25 || len(msgs) != 3 || req["max_output_tokens"] != nil {
		t.Errorf("the upstream got %v", req)
	}
	rp.Input.OfInputItemList = responses.ResponseInputParam{responses.ResponseInputItemParamOfMessage("a b c d", responses.EasyInputMessageRoleUser)}
	text, _, done = stream("upstream stream", rp)
	if text != "d c b a" || done.OutputText() != "d c b a" || done.Usage.InputTokens != 7 || done.Usage.OutputTokens != 4 {
		t.Errorf("upstream stream: %q, completed %q usage %+v", text, done.OutputText(), done.Usage)
	}
	rp.Input.OfInputItemList = responses.ResponseInputParam{responses.ResponseInputItemParamOfMessage("fail-always", responses.EasyInputMessageRoleUser)}
	_, err = c.Responses.New(ctx, rp)
	apiError(t, "upstream response 500", err, http.StatusBadGateway, "provider_error", "")

	// A failure after the first event: an error event ends the stream.
	rp.Input.OfInputItemList = responses.ResponseInputParam{responses.ResponseInputItemParamOfMessage("break", responses.EasyInputMessageRoleUser)}
	rs := c.Responses.NewStreaming(ctx, rp)
	var last responses.ResponseStreamEventUnion
	for rs.Next() {
		last = rs.Current()
	}
	if rs.Err() != nil || last.Type != "error" || last.Code != "provider_error" || !strings.Contains(last.Message, "without [DONE]") {
		t.Errorf("a response stream that broke: last event %q %q %q, %v", last.Type, last.Code, last.Message, rs.Err())
	}

	// Responses: bad input.
	badRes := func(what, param string, opts ...option.RequestOption) {
		t.Helper()
		_, err := c.Responses.New(ctx, responses.ResponseNewParams{Model: "palyra-echo", Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("x")}}, opts...)
		var e *openai.Error
		if !errors.As(err, &e) || e.StatusCode != http.StatusBadRequest || e.Param != param || e.Type != "invalid_request_error" {
			t.Errorf("%s: %v, want 400 naming %s", what, err, param)
		}
	}
	badRes("empty input", "input", option.WithJSONSet("input", ""))
	badRes("no messages", "input", option.WithJSONSet("input", []any{}))
	badRes("input of the wrong type", "input", option.WithJSONSet("input", 42))
	badRes("an unknown role", "input[0].role", option.WithJSONSet("input", []any{map[string]any{"role": "wizard", "content": "x"}}))
	badRes("an image", "input[0].content[0].type", option.WithJSONSet("input", []any{map[string]any{"role": "user",
		"content": []any{map[string]any{"type": "input_image", "image_url": "https://example.invalid/a.png"}}}}))
	badRes("a function call output", "input[0].type", option.WithJSONSet("input", []any{map[string]any{"type": "function_call_output", "call_id": "c", "output": "x"}}))
	badRes("instructions of the wrong type", "instructions", option.WithJSONSet("instructions", []string{"x"}))
	badRes("tools", "tools", option.WithJSONSet("tools", []any{map[string]any{"type": "function", "name": "f"}}))
	badRes("previous_response_id", "previous_response_id", option.WithJSONSet("previous_response_id", "resp_1"))
	_, err = c.Responses.New(ctx, responses.ResponseNewParams{Model: "../../v1/models", Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("x")}})
	apiError(t, "a model with path characters", err, http.StatusNotFound, "model_not_found", "model")

	// Access: the permissions are their own.
	_, chatOnly := b.createToken(t, &accessv1.CreateTokenRequest{Label: "chat only", Role: accessv1.Role_ROLE_OPERATOR, Scopes: []string{"compat.chat.create"}})
	chatSDK := b.sdk(chatOnly)
	_, err = chatSDK.Embeddings.New(ctx, openai.EmbeddingNewParams{Model: "palyra-echo", Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String("x")}})
	if e := apiError(t, "no compat.embeddings.create", err, http.StatusForbidden, "insufficient_permissions", ""); !strings.Contains(e.Message, "compat.embeddings.create") {
		t.Errorf("missing permission: %q does not name it", e.Message)
	}
	_, err = chatSDK.Responses.New(ctx, responses.ResponseNewParams{Model: "palyra-echo", Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("x")}})
	if e := apiError(t, "no compat.responses.create", err, http.StatusForbidden, "insufficient_permissions", ""); !strings.Contains(e.Message, "compat.responses.create") {
		t.Errorf("missing permission: %q does not name it", e.Message)
	}

	// Connect: the same operations.
	rpc := compatv1connect.NewCompatServiceClient(b.client(operator), b.baseURL)
	ce, err := rpc.CreateEmbedding(ctx, connect.NewRequest(&compatv1.CreateEmbeddingRequest{Model: "palyra-echo", Input: texts}))
	if err != nil || len(ce.Msg.GetData()) != 2 || len(ce.Msg.GetData()[1].GetEmbedding()) != 256 || ce.Msg.GetUsage().GetPromptTokens() != 5 {
		t.Errorf("CreateEmbedding: %v %v", ce, err)
	} else {
		for i, f := range ce.Msg.GetData()[0].GetEmbedding() {
			if f != float32(e1.Data[0].Embedding[i]) {
				t.Fatalf("CreateEmbedding and POST /v1/embeddings differ at %d: %v, %v", i, f, e1.Data[0].Embedding[i])
			}
		}
	}
	_, err = rpc.CreateEmbedding(ctx, connect.NewRequest(&compatv1.CreateEmbeddingRequest{Model: "palyra-echo"}))
	wantCode(t, "CreateEmbedding without input", err, connect.CodeInvalidArgument)
	input := []*compatv1.ChatMessage{{Role: "user", Content: "to be or not"}}
	cr, err := rpc.CreateResponse(ctx, connect.NewRequest(&compatv1.CreateResponseRequest{Model: "alias", Instructions: "answer", Input: input}))
	if err != nil || cr.Msg.GetResponse().GetOutputText() != "not or be to" || cr.Msg.GetResponse().GetStatus() != "completed" || cr.Msg.GetResponse().GetUsage().GetCompletionTokens() != 4 {
		t.Errorf("CreateResponse: %v %v", cr, err)
	}
	st, err := rpc.StreamResponse(ctx, connect.NewRequest(&compatv1.StreamResponseRequest{Model: "palyra-echo", Input: input}))
	if err != nil {
		t.Fatal(err)
	}
	var deltas strings.Builder
	var final *compatv1.Response
	for st.Receive() {
		deltas.WriteString(st.Msg().GetDelta())
		if st.Msg().GetType() == "response.completed" {
			final = st.Msg().GetResponse()
		}
	}
	if err := st.Err(); err != nil || deltas.String() != "to be or not" || final.GetOutputText() != "to be or not" || final.GetUsage().GetCompletionTokens() != 4 {
		t.Errorf("StreamResponse: %q, final %v, %v", deltas.String(), final, err)
	}

	// Each call is audited with its model, provider and tokens.
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
		"CreateEmbedding model:palyra-echo provider:palyra prompt_tokens:5 completion_tokens:0",
		"CreateEmbedding model:alias provider:fake prompt_tokens:4 completion_tokens:0",
		"CreateResponse model:palyra-echo provider:palyra prompt_tokens:5 completion_tokens:3",
		"StreamResponse model:palyra-echo provider:palyra prompt_tokens:5 completion_tokens:3",
		"CreateResponse model:fake-model provider:fake prompt_tokens:7 completion_tokens:3",
		"StreamResponse model:fake-model provider:fake prompt_tokens:7 completion_tokens:4",
	} {
		if !slices.Contains(targets, want) {
			t.Errorf("no audit event %q in %q", want, targets)
		}
	}
}
