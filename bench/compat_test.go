package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	accessv1 "github.com/palyra/palyra/gen/go/palyra/access/v1"
	"github.com/palyra/palyra/gen/go/palyra/access/v1/accessv1connect"
	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	"github.com/palyra/palyra/gen/go/palyra/controlplane/v1/controlplanev1connect"
	"github.com/palyra/palyra/internal/eventually"
)

// The models of the compat benchmarks: benchModel is served by the upstream provider
// "fake", nodeModel by a node's llm.chat (fronting nodeUpstreamModel).
const (
	benchModel        = "bench-model"
	nodeModel         = "bench-node-model"
	nodeUpstreamModel = "bench-upstream-model"
	fakeLLMKey        = "sk-bench-3f1a9c"
)

// fakeLLM is an OpenAI-compatible model server on loopback, in this process, that
// answers every chat completion at once with the same answer: without stream, one JSON
// completion (~400 bytes); with stream, server-sent events each flushed as written: a
// role chunk, four content chunks, a finish chunk, the usage chunk when
// stream_options.include_usage asks for it, and [DONE]. It checks the bearer key and
// reads the whole request, as a model server does, and nothing else.
type fakeLLM struct {
	*httptest.Server
	completion []byte
	chunks     [][]byte // the events before the usage chunk
	usage      []byte
}

func newFakeLLM(tb testing.TB) *fakeLLM {
	tb.Helper()
	marshal := func(v any) []byte {
		b, err := json.Marshal(v)
		if err != nil {
			tb.Fatal(err)
		}
		return b
	}
	usage := map[string]any{"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16}
	f := &fakeLLM{completion: marshal(map[string]any{
		"id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000, "model": nodeUpstreamModel,
		"choices": []any{map[string]any{"index": 0, "message": map[string]any{"role": "assistant", "content": "Hello from the fake", "refusal": nil},
			"logprobs": nil, "finish_reason": "stop"}},
		"usage": usage,
	})}
	chunk := func(choices []any, usage any) []byte {
		return append(append([]byte("data: "), marshal(map[string]any{"id": "chatcmpl-bench", "object": "chat.completion.chunk",
			"created": 1700000000, "model": nodeUpstreamModel, "choices": choices, "usage": usage})...), '\n', '\n')
	}
	delta := func(d map[string]any, finish any) []any {
		return []any{map[string]any{"index": 0, "delta": d, "finish_reason": finish}}
	}
	f.chunks = append(f.chunks, chunk(delta(map[string]any{"role": "assistant", "content": ""}, nil), nil))
	for _, w := range []string{"Hello", " from", " the", " fake"} {
		f.chunks = append(f.chunks, chunk(delta(map[string]any{"content": w}, nil), nil))
	}
	f.chunks = append(f.chunks, chunk(delta(map[string]any{}, "stop"), nil))
	f.usage = chunk([]any{}, usage)
	f.Server = httptest.NewServer(http.HandlerFunc(f.serve))
	tb.Cleanup(f.Close)
	return f
}

func (f *fakeLLM) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/v1/chat/completions" {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	if r.Header.Get("Authorization") != "Bearer "+fakeLLMKey {
		http.Error(w, `{"error":{"message":"bad key","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}`, http.StatusUnauthorized)
		return
	}
	var req struct {
		Stream        bool `json:"stream"`
		StreamOptions struct {
			IncludeUsage bool `json:"include_usage"`
		} `json:"stream_options"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if !req.Stream {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(f.completion)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	rc := http.NewResponseController(w)
	for _, c := range f.chunks {
		_, _ = w.Write(c)
		_ = rc.Flush()
	}
	if req.StreamOptions.IncludeUsage {
		_, _ = w.Write(f.usage)
		_ = rc.Flush()
	}
	_, _ = w.Write([]byte("data: [DONE]\n\n"))
}

// directClient is the official Go SDK pointed at the fake itself, as an application
// next to the model server would call it: keep-alive HTTP/1.1 (the fake serves no
// TLS), enough idle connections for every worker.
func (f *fakeLLM) directClient(tb testing.TB) openai.Client {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     time.Minute,
	}
	tb.Cleanup(tr.CloseIdleConnections)
	return openai.NewClient(option.WithBaseURL(f.URL+"/v1/"), option.WithAPIKey(fakeLLMKey),
		option.WithHTTPClient(&http.Client{Transport: tr}), option.WithMaxRetries(0))
}

// sdkClient is the official Go SDK pointed at palyrad with a fresh token: HTTPS with
// palyrad's CA, HTTP/2 on one connection of its own (what the SDK's default client
// negotiates), no retries.
func (d *daemon) sdkClient(tb testing.TB, token string) openai.Client {
	tr := d.transport(nil, nil)
	tb.Cleanup(tr.CloseIdleConnections)
	return openai.NewClient(option.WithBaseURL(d.baseURL+"/v1/"), option.WithAPIKey(token),
		option.WithHTTPClient(&http.Client{Transport: tr}), option.WithMaxRetries(0))
}

// enableCompat turns the compat_api and compat_streaming flags on, stores the fake's
// key as the secret "bench-llm" and configures the provider "fake" (base URL, the key
// as a secret reference, benchModel), as the owner.
func (d *daemon) enableCompat(tb testing.TB, fake *fakeLLM) {
	tb.Helper()
	ctx := context.Background()
	hc := d.apiClient(d.owner)
	defer hc.CloseIdleConnections()
	flags := accessv1connect.NewFeatureFlagServiceClient(hc, d.baseURL)
	for _, f := range []string{"compat_api", "compat_streaming"} {
		if _, err := flags.SetFlag(ctx, connect.NewRequest(&accessv1.SetFlagRequest{Key: f, Enabled: true})); err != nil {
			tb.Fatalf("set flag %s: %v", f, err)
		}
	}
	secrets := controlplanev1connect.NewSecretServiceClient(hc, d.baseURL)
	if _, err := secrets.PutSecret(ctx, connect.NewRequest(&controlplanev1.PutSecretRequest{Name: "bench-llm", Value: []byte(fakeLLMKey)})); err != nil {
		tb.Fatalf("put the provider's key: %v", err)
	}
	text := func(s string) *controlplanev1.ConfigValue {
		return &controlplanev1.ConfigValue{Kind: &controlplanev1.ConfigValue_Text{Text: s}}
	}
	_, err := controlplanev1connect.NewConfigServiceClient(hc, d.baseURL).UpdateConfig(ctx, connect.NewRequest(&controlplanev1.UpdateConfigRequest{
		Change: &controlplanev1.ConfigChangeSpec{Set: []*controlplanev1.ConfigSet{
			{Key: "compat.providers.fake.base_url", Value: text(fake.URL + "/v1")},
			{Key: "compat.providers.fake.api_key", Value: text("secret:bench-llm")},
			{Key: "compat.providers.fake.models", Value: text(benchModel)},
		}},
		ExpectedRevision: new(int64), Reason: "compat benchmark",
	}))
	if err != nil {
		tb.Fatalf("configure the provider: %v", err)
	}
}

// waitModel waits until palyrad lists model as owned by owner (the configuration and
// the nodes' capabilities reach it asynchronously).
func waitModel(tb testing.TB, c openai.Client, model, owner string) {
	tb.Helper()
	eventually.NoError(tb, "palyrad to serve "+model, func() error {
		m, err := c.Models.Get(context.Background(), model)
		if err != nil {
			return err
		}
		if m.OwnedBy != owner {
			return fmt.Errorf("%s is owned by %q, want %q", model, m.OwnedBy, owner)
		}
		return nil
	})
}

// chatParams is the request of every call: a system and a user message (~150 bytes).
func chatParams(model string, stream bool) openai.ChatCompletionNewParams {
	p := openai.ChatCompletionNewParams{Model: model, Messages: []openai.ChatCompletionMessageParamUnion{
		openai.SystemMessage("You are a terse assistant."),
		openai.UserMessage("Say hello in four words."),
	}}
	if stream {
		p.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	}
	return p
}

// chatOnce makes one non-streaming chat completion and returns its latency.
func chatOnce(ctx context.Context, c openai.Client, model string) (time.Duration, error) {
	p := chatParams(model, false)
	t0 := time.Now()
	res, err := c.Chat.Completions.New(ctx, p)
	took := time.Since(t0)
	if err != nil {
		return 0, err
	}
	if len(res.Choices) != 1 || res.Choices[0].Message.Content != "Hello from the fake" || res.Usage.TotalTokens != 16 {
		return 0, fmt.Errorf("completion of %s: %+v", model, res)
	}
	return took, nil
}

// streamOnce makes one streaming chat completion and returns its time to first token:
// from the call to the first chunk with content. It reads the stream to its end and
// checks the answer and the usage.
func streamOnce(ctx context.Context, c openai.Client, model string) (time.Duration, error) {
	p := chatParams(model, true)
	t0 := time.Now()
	s := c.Chat.Completions.NewStreaming(ctx, p)
	defer s.Close()
	var ttft time.Duration
	var text []byte
	var usage int64
	for s.Next() {
		cur := s.Current()
		for _, ch := range cur.Choices {
			if ch.Delta.Content != "" && ttft == 0 {
				ttft = time.Since(t0)
			}
			text = append(text, ch.Delta.Content...)
		}
		if cur.Usage.TotalTokens > 0 {
			usage = cur.Usage.TotalTokens
		}
	}
	if err := s.Err(); err != nil {
		return 0, err
	}
	if string(text) != "Hello from the fake" || usage != 16 {
		return 0, fmt.Errorf("stream of %s: %q, usage %d", model, text, usage)
	}
	return ttft, nil
}

// pairedLoop measures b.N pairs of calls on c workers: in each pair the same call
// (call) made to the fake directly and through palyrad (or a node), back to back, the
// order alternating from one pair to the next, so that both series see the same
// machine at the same time. warm pairs run first, off the clock. It reports each
// series' quantiles and their differences:
//
//	direct-p50-µs, direct-p99-µs     the call to the fake itself
//	palyrad-p50-µs, palyrad-p99-µs   the same call through palyrad
//	added-p50-µs, added-p99-µs       palyrad's quantile minus the direct one
//	palyrad-cpu-µs/op                palyrad's CPU time per call through it
//	pg-cpu-µs/op, pg-xacts/op        PostgreSQL's CPU time and write transactions per
//	                                 call through palyrad (its audit record, a dispatch)
//
// ns/op is the wall time of a pair.
func pairedLoop(b *testing.B, c, warm int, m meter, direct, through openai.Client, model, upstreamModel string,
	call func(context.Context, openai.Client, string) (time.Duration, error)) {
	b.Helper()
	ctx := context.Background()
	loop := func(n int) (directH, throughH histogram) {
		var next atomic.Int64
		var wg sync.WaitGroup
		var mu sync.Mutex // guards all
		var all [2]histogram
		errs := make(chan error, c)
		for range c {
			wg.Go(func() {
				var h [2]histogram
				for {
					i := next.Add(1)
					if i > int64(n) {
						break
					}
					for k := range 2 {
						// Even pairs start with the direct call, odd ones with palyrad.
						which := (int(i) + k) % 2
						cl, mod := direct, upstreamModel
						if which == 1 {
							cl, mod = through, model
						}
						d, err := call(ctx, cl, mod)
						if err != nil {
							errs <- fmt.Errorf("%s (%s): %w", mod, [2]string{"direct", "through palyrad"}[which], err)
							return
						}
						h[which].record(d)
					}
				}
				mu.Lock()
				all[0].merge(&h[0])
				all[1].merge(&h[1])
				mu.Unlock()
			})
		}
		wg.Wait()
		close(errs)
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
		return all[0], all[1]
	}
	loop(warm)
	u0 := m.read(b)
	prof := startProfiling(b, m.pprof)
	b.ResetTimer()
	dh, ph := loop(b.N)
	b.StopTimer()
	u1 := m.read(b)
	prof.finish(b)
	dp50, dp99 := dh.quantile(0.5), dh.quantile(0.99)
	pp50, pp99 := ph.quantile(0.5), ph.quantile(0.99)
	b.ReportMetric(micros(dp50), "direct-p50-µs")
	b.ReportMetric(micros(dp99), "direct-p99-µs")
	b.ReportMetric(micros(pp50), "palyrad-p50-µs")
	b.ReportMetric(micros(pp99), "palyrad-p99-µs")
	b.ReportMetric(micros(pp50-dp50), "added-p50-µs")
	b.ReportMetric(micros(pp99-dp99), "added-p99-µs")
	if m.palyrad != 0 {
		b.ReportMetric(micros(u1.palyrad-u0.palyrad)/float64(b.N), "palyrad-cpu-µs/op")
	}
	if m.pg.postmaster != 0 {
		b.ReportMetric(micros(u1.pg-u0.pg)/float64(b.N), "pg-cpu-µs/op")
	}
	b.ReportMetric(float64(u1.xid-u0.xid)/float64(b.N), "pg-xacts/op")
}

// compatModes are the calls the compat benchmarks measure, by sub-benchmark name.
var compatModes = []struct {
	name string
	call func(context.Context, openai.Client, string) (time.Duration, error)
}{{"chat", chatOnce}, {"stream-ttft", streamOnce}}

// BenchmarkCompat measures the latency palyrad adds to a chat completion of the
// OpenAI-compatible API: the official Go SDK calls a fake OpenAI-compatible server on
// loopback directly, and the same model through palyrad (HTTPS, HTTP/2, an operator
// token, the flags on, the fake configured as the provider "fake" with its key a
// secret reference), interleaved in one run (pairedLoop).
//
//	chat/c=C         non-streaming: the whole call
//	stream-ttft/c=C  stream: true with include_usage: time to the first content delta
//	                 (the stream is read to its end)
//
// Each run takes a fresh token and connection and runs 200 pairs before the clock.
func BenchmarkCompat(b *testing.B) {
	bed := startCompatBed(b)
	waitModel(b, bed.d.sdkClient(b, bed.d.owner), benchModel, "fake")
	bed.run(b, []int{1, 16}, 200, benchModel, benchModel, nil)
}

// BenchmarkCompatNode measures the time to first token of a model served by a node:
// a real `palyra node run` whose llm.chat fronts a fake OpenAI-compatible server,
// through palyrad (SDK → palyrad → durable llm.chat dispatch → node → fake, and the
// chunks back as dispatch output), against the same fake called directly from the
// node's machine (this process), interleaved in one run (pairedLoop).
//
//	chat/c=C         non-streaming: the whole call
//	stream-ttft/c=C  time to the first content delta (the stream read to its end)
//
// Each run takes a fresh token and connection and runs 50 pairs before the clock.
func BenchmarkCompatNode(b *testing.B) {
	bed := startCompatBed(b)
	d := bed.d
	hc := d.apiClient(d.owner)
	b.Cleanup(hc.CloseIdleConnections)
	dir := b.TempDir()
	a := pairAgent(b, d, controlplanev1connect.NewPairingServiceClient(hc, d.baseURL), palyraBinary(b), "/bin/true", dir, "bench-llm-node")
	keyFile := filepath.Join(dir, "llm.key")
	if err := os.WriteFile(keyFile, []byte(fakeLLMKey+"\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	config := fmt.Sprintf("[llm]\nbase_url = %q\napi_key_file = %q\nmodels = [%q]\nmax_concurrent = 16\n",
		bed.fake.URL+"/v1", keyFile, nodeModel+"="+nodeUpstreamModel)
	if err := os.WriteFile(filepath.Join(a.stateDir, "node.toml"), []byte(config), 0o600); err != nil {
		b.Fatal(err)
	}
	a.start(b)
	b.Cleanup(a.stop)
	waitModel(b, d.sdkClient(b, d.owner), nodeModel, "node")
	bed.run(b, []int{1, 4}, 50, nodeModel, nodeUpstreamModel, a.failed)
}

// compatBed is a palyrad on a database of its own with the OpenAI-compatible API on
// and the fake as its provider "fake".
type compatBed struct {
	pg   *postgres
	d    *daemon
	fake *fakeLLM
}

func startCompatBed(b *testing.B) *compatBed {
	b.Helper()
	pg := openPostgres(b)
	bed := &compatBed{pg: pg, d: startDaemon(b, pg.newDatabase(b), b.TempDir()), fake: newFakeLLM(b)}
	bed.d.enableCompat(b, bed.fake)
	return bed
}

// run runs a sub-benchmark per mode (compatModes) and concurrency: pairedLoop of
// model through palyrad against upstreamModel at the fake, each with a fresh operator
// token and connection, after warm pairs and a CHECKPOINT; check, when not nil, fails
// the run if it reports an error afterwards.
func (bed *compatBed) run(b *testing.B, concurrency []int, warm int, model, upstreamModel string, check func() error) {
	m := meter{palyrad: bed.d.pid(), pprof: bed.d.pprof, pg: bed.pg}
	for _, mode := range compatModes {
		for _, c := range concurrency {
			b.Run(fmt.Sprintf("%s/c=%d", mode.name, c), func(b *testing.B) {
				through := bed.d.sdkClient(b, bed.d.operatorToken(b))
				bed.pg.checkpoint(b)
				pairedLoop(b, c, warm, m, bed.fake.directClient(b), through, model, upstreamModel, mode.call)
				if check == nil {
					return
				}
				if err := check(); err != nil {
					b.Fatal(err)
				}
			})
		}
	}
}

// operatorToken creates an operator token (the role README suggests for SDKs) with the
// highest rate limit, and returns its secret.
func (d *daemon) operatorToken(tb testing.TB) string {
	tb.Helper()
	rate := uint32(maxRatePerMinute)
	hc := d.apiClient(d.owner)
	defer hc.CloseIdleConnections()
	res, err := accessv1connect.NewAccessServiceClient(hc, d.baseURL).CreateToken(context.Background(), connect.NewRequest(&accessv1.CreateTokenRequest{
		Label: "bench-sdk", Role: accessv1.Role_ROLE_OPERATOR, RateLimitPerMinute: &rate,
	}))
	if err != nil {
		tb.Fatalf("create an operator token: %v", err)
	}
	return res.Msg.GetSecret()
}

// failed says whether the agent exited.
func (a *agent) failed() error {
	select {
	case <-a.exited:
		return errors.New("palyra node run exited; its log is agent.log")
	default:
		return nil
	}
}
