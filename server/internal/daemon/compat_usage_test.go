package daemon_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"
	"google.golang.org/genproto/googleapis/rpc/errdetails"

	accessv1 "github.com/palyra/palyra/gen/go/palyra/access/v1"
	compatv1 "github.com/palyra/palyra/gen/go/palyra/compat/v1"
	"github.com/palyra/palyra/gen/go/palyra/compat/v1/compatv1connect"
	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	"github.com/palyra/palyra/internal/eventually"
	"github.com/palyra/palyra/server/internal/store/storetest"
)

// usageThenHang is an OpenAI-compatible provider whose streams send one word and their
// usage (4 prompt tokens, 1 completion token), then wait for the client to go away.
func usageThenHang(t *testing.T) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		rc := http.NewResponseController(w)
		for _, c := range []map[string]any{
			{"choices": []any{map[string]any{"index": 0, "delta": map[string]any{"role": "assistant", "content": "word"}, "finish_reason": nil}}},
			{"choices": []any{}, "usage": map[string]any{"prompt_tokens": 4, "completion_tokens": 1, "total_tokens": 5}},
		} {
			c["id"], c["object"], c["created"], c["model"] = "chatcmpl-hang", "chat.completion.chunk", 1700000000, "hang-model"
			b, _ := json.Marshal(c)
			fmt.Fprintf(w, "data: %s\n\n", b)
			_ = rc.Flush()
		}
		<-r.Context().Done()
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/v1"
}

// usageRow is a compat_usage row's counts.
type usageRow struct{ requests, prompt, completion int64 }

// usageByKey reads GetUsage's rows by "token model provider", checking their day and
// their totals.
func usageByKey(t *testing.T, res *compatv1.GetUsageResponse) map[string]usageRow {
	t.Helper()
	out := map[string]usageRow{}
	var sum usageRow
	for _, r := range res.GetRows() {
		if r.GetDay() != res.GetToday() || r.GetTotalTokens() != r.GetPromptTokens()+r.GetCompletionTokens() {
			t.Errorf("usage row %v: day or total wrong (today %s)", r, res.GetToday())
		}
		out[r.GetTokenId()+" "+r.GetModel()+" "+r.GetProvider()] = usageRow{r.GetRequests(), r.GetPromptTokens(), r.GetCompletionTokens()}
		sum.requests += r.GetRequests()
		sum.prompt += r.GetPromptTokens()
		sum.completion += r.GetCompletionTokens()
	}
	if tt := res.GetTotals(); tt.GetRequests() != sum.requests || tt.GetPromptTokens() != sum.prompt || tt.GetCompletionTokens() != sum.completion ||
		tt.GetTotalTokens() != sum.prompt+sum.completion {
		t.Errorf("totals %v, the rows sum to %+v", tt, sum)
	}
	return out
}

// TestCompatUsageIsRecordedPerTokenModelAndDay makes chat completions (unary and
// streamed), responses (both) and embeddings through the official SDK, and reads the
// usage back: one row per token, model and provider with the providers' counts; a
// stream the client cancelled after the usage arrived counts, failed calls do not; no
// prompt or answer text in the usage or the audit log; GetUsage's filters and
// permission.
func TestCompatUsageIsRecordedPerTokenModelAndDay(t *testing.T) {
	t.Parallel()
	dbURL := storetest.URL(t)
	b := startCompatOn(t, dbURL)
	ctx := t.Context()
	b.setFlag(t, "compat_api", true)
	b.setFlag(t, "compat_streaming", true)
	_, err := b.configClient(b.owner).UpdateConfig(ctx, connect.NewRequest(&controlplanev1.UpdateConfigRequest{
		Change: &controlplanev1.ConfigChangeSpec{Set: []*controlplanev1.ConfigSet{
			{Key: "compat.providers.hang.base_url", Value: textValue(usageThenHang(t))},
			{Key: "compat.providers.hang.models", Value: textValue("hang-model")},
		}},
		ExpectedRevision: new(int64(1)), Reason: "test",
	}))
	if err != nil {
		t.Fatal(err)
	}
	tokA, secretA := b.createToken(t, &accessv1.CreateTokenRequest{Label: "usage-a", Role: accessv1.Role_ROLE_OPERATOR})
	tokB, secretB := b.createToken(t, &accessv1.CreateTokenRequest{Label: "usage-b", Role: accessv1.Role_ROLE_OPERATOR})
	a, bc := b.sdk(secretA), b.sdk(secretB)
	chat := func(model, text string) openai.ChatCompletionNewParams {
		return openai.ChatCompletionNewParams{Model: model, Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(text)}}
	}

	// palyra-echo counts words: prompt and completion 3.
	if _, err := a.Chat.Completions.New(ctx, chat("palyra-echo", "alpha bravo charlie")); err != nil {
		t.Fatal(err)
	}
	// Streamed without include_usage: palyrad asks for it all the same. 2 and 2.
	s := a.Chat.Completions.NewStreaming(ctx, chat("palyra-echo", "delta echo"))
	collect(t, "echo stream", s.Next, s.Current, s.Err)
	// Responses: 3 and 3, then streamed 2 and 2.
	if _, err := a.Responses.New(ctx, responses.ResponseNewParams{Model: "palyra-echo",
		Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("foxtrot golf hotel")}}); err != nil {
		t.Fatal(err)
	}
	rs := a.Responses.NewStreaming(ctx, responses.ResponseNewParams{Model: "palyra-echo",
		Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("india juliet")}})
	for rs.Next() {
	}
	if err := rs.Err(); err != nil {
		t.Fatal(err)
	}
	// Embeddings: 3 prompt tokens, no completion.
	if _, err := a.Embeddings.New(ctx, openai.EmbeddingNewParams{Model: "palyra-echo",
		Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{"kilo lima", "mike"}}}); err != nil {
		t.Fatal(err)
	}
	// The upstream's counts: 7 and 2.
	if _, err := a.Chat.Completions.New(ctx, chat("fake-model", "november oscar")); err != nil {
		t.Fatal(err)
	}
	// Token B: 2 and 2.
	if _, err := bc.Chat.Completions.New(ctx, chat("palyra-echo", "papa quebec")); err != nil {
		t.Fatal(err)
	}
	// Failed calls use no tokens and record nothing.
	_, err = a.Chat.Completions.New(ctx, chat("gpt-5", "romeo"))
	apiError(t, "unknown model", err, http.StatusNotFound, "model_not_found", "model")
	_, err = a.Chat.Completions.New(ctx, chat("fake-model", "fail-always"))
	apiError(t, "failing upstream", err, http.StatusBadGateway, "provider_error", "")
	// A stream cancelled by the client once the provider reported its usage counts it.
	cctx, cancel := context.WithCancel(ctx)
	hang := chat("hang-model", "sierra tango")
	hang.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	hs := a.Chat.Completions.NewStreaming(cctx, hang)
	for hs.Next() {
		if hs.Current().Usage.TotalTokens > 0 {
			cancel()
			break
		}
	}
	cancel()
	_ = hs.Close()

	usage := compatv1connect.NewCompatServiceClient(b.h2, b.baseURL)
	get := func(req *compatv1.GetUsageRequest) *compatv1.GetUsageResponse {
		t.Helper()
		res, err := usage.GetUsage(ctx, connect.NewRequest(req))
		if err != nil {
			t.Fatal(err)
		}
		return res.Msg
	}
	want := map[string]usageRow{
		tokA.GetId() + " palyra-echo palyra": {5, 3 + 2 + 3 + 2 + 3, 3 + 2 + 3 + 2},
		tokA.GetId() + " fake-model fake":    {1, 7, 2},
		tokA.GetId() + " hang-model hang":    {1, 4, 1},
		tokB.GetId() + " palyra-echo palyra": {1, 2, 2},
	}
	var all *compatv1.GetUsageResponse
	eventually.NoError(t, "the cancelled stream's usage is recorded", func() error {
		all = get(&compatv1.GetUsageRequest{})
		if got := usageByKey(t, all); fmt.Sprint(got) != fmt.Sprint(want) {
			return fmt.Errorf("usage %v, want %v", got, want)
		}
		return nil
	})
	if today := time.Now().UTC().Format(time.DateOnly); all.GetToday() != today {
		t.Errorf("today %q, want %q", all.GetToday(), today)
	}
	spent := map[string]string{}
	for _, tu := range all.GetTokens() {
		spent[tu.GetTokenId()] = fmt.Sprintf("%s %v %d", tu.GetLabel(), tu.DailyTokenBudget != nil, tu.GetSpentToday())
	}
	if w := map[string]string{tokA.GetId(): "usage-a false 37", tokB.GetId(): "usage-b false 4"}; fmt.Sprint(spent) != fmt.Sprint(w) {
		t.Errorf("tokens %v, want %v", spent, w)
	}

	// Filters: one token; days from tomorrow on.
	onlyB := get(&compatv1.GetUsageRequest{TokenId: tokB.GetId()})
	if got := usageByKey(t, onlyB); len(got) != 1 || len(onlyB.GetTokens()) != 1 || got[tokB.GetId()+" palyra-echo palyra"] != (usageRow{1, 2, 2}) {
		t.Errorf("token B's usage: %v", onlyB)
	}
	later := get(&compatv1.GetUsageRequest{SinceDay: time.Now().UTC().AddDate(0, 0, 2).Format(time.DateOnly)})
	if len(later.GetRows()) != 0 || later.GetTotals().GetTotalTokens() != 0 {
		t.Errorf("usage from the day after tomorrow: %v", later)
	}
	if today := get(&compatv1.GetUsageRequest{SinceDay: all.GetToday()}); len(today.GetRows()) != 4 {
		t.Errorf("usage from today: %d rows", len(today.GetRows()))
	}
	for _, bad := range []*compatv1.GetUsageRequest{{SinceDay: "2025-13-45"}, {SinceDay: "7d"}, {TokenId: "not-a-token"}} {
		_, err := usage.GetUsage(ctx, connect.NewRequest(bad))
		wantCode(t, fmt.Sprintf("GetUsage %v", bad), err, connect.CodeInvalidArgument)
	}
	_, err = usage.GetUsage(ctx, connect.NewRequest(&compatv1.GetUsageRequest{TokenId: "01JD5ZJ8Q0W1X2Y3Z4A5B6C7D8"}))
	wantCode(t, "GetUsage of an unknown token", err, connect.CodeNotFound)

	// compat.usage.read: admins and owners, not operators.
	_, err = compatv1connect.NewCompatServiceClient(b.client(secretA), b.baseURL).GetUsage(ctx, connect.NewRequest(&compatv1.GetUsageRequest{}))
	wantCode(t, "GetUsage as an operator", err, connect.CodePermissionDenied)
	if err != nil && !strings.Contains(err.Error(), "compat.usage.read") {
		t.Errorf("the refusal does not name the permission: %v", err)
	}
	_, admin := b.createToken(t, &accessv1.CreateTokenRequest{Label: "usage-admin", Role: accessv1.Role_ROLE_ADMIN})
	if _, err := compatv1connect.NewCompatServiceClient(b.client(admin), b.baseURL).GetUsage(ctx, connect.NewRequest(&compatv1.GetUsageRequest{})); err != nil {
		t.Errorf("GetUsage as an admin: %v", err)
	}

	// No prompt or answer text lands in the usage or in the audit log's targets.
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var rows, targets string
	if err := conn.QueryRow(ctx, "select coalesce(string_agg(row_to_json(u)::text, ' '), '') from compat_usage u").Scan(&rows); err != nil {
		t.Fatal(err)
	}
	eventually.NoError(t, "the compat calls are in the audit log", func() error {
		var n int
		err := conn.QueryRow(ctx, `select count(*), coalesce(string_agg(target, ' '), '') from audit_events
			where procedure like '/palyra.compat.v1.CompatService/%' and procedure not like '%Usage'`).Scan(&n, &targets)
		if err == nil && n < 10 {
			err = fmt.Errorf("%d compat events", n)
		}
		return err
	})
	// A call refused before it was routed names the model it asked for.
	if !strings.Contains(targets, "model:gpt-5") {
		t.Errorf("the refused call's event does not name its model: %s", targets)
	}
	for _, word := range []string{"alpha", "charlie", "delta", "golf", "juliet", "kilo", "mike", "oscar", "quebec", "romeo", "tango", "word"} {
		if strings.Contains(rows, word) || strings.Contains(targets, word) {
			t.Errorf("%q is in the usage (%s) or the audit targets (%s)", word, rows, targets)
		}
	}
}

// quotaError checks that err is the SDK's 429 insufficient_quota, which says what the
// token spent of what budget and when it resets, and that the SDK is told not to retry.
func quotaError(t *testing.T, what string, err error, spent, budget int) {
	t.Helper()
	e := apiError(t, what, err, http.StatusTooManyRequests, "insufficient_quota", "")
	if e.Type != "insufficient_quota" {
		t.Errorf("%s: type %q, want insufficient_quota", what, e.Type)
	}
	midnight := time.Now().UTC().Truncate(24 * time.Hour).Add(24 * time.Hour).Format(time.RFC3339)
	if want := fmt.Sprintf("has used %d of its daily budget of %d tokens", spent, budget); !strings.Contains(e.Message, want) || !strings.Contains(e.Message, midnight) {
		t.Errorf("%s: message %q, want %q and the reset at %s", what, e.Message, want, midnight)
	}
	if e.Response != nil && e.Response.Header.Get("X-Should-Retry") != "false" {
		t.Errorf("%s: X-Should-Retry %q, want false", what, e.Response.Header.Get("X-Should-Retry"))
	}
}

// TestCompatDailyTokenBudgetHoldsAcrossReplicas spends a token's daily budget through
// two replicas sharing the database: calls pass until the day's usage reaches the
// budget, then every call, on either replica and on either surface, is refused before
// it reaches the provider (429 insufficient_quota; ResourceExhausted with an ErrorInfo).
// Raising the budget lets calls through again on both replicas; rotation keeps it.
func TestCompatDailyTokenBudgetHoldsAcrossReplicas(t *testing.T) {
	t.Parallel()
	dbURL := storetest.URL(t)
	b := startCompatOn(t, dbURL)
	second := (&accessBundle{testDaemon: b.testDaemon, dbURL: dbURL}).startReplica(t)
	ctx := t.Context()
	b.setFlag(t, "compat_api", true)
	b.setFlag(t, "compat_streaming", true)
	tok, secret := b.createToken(t, &accessv1.CreateTokenRequest{Label: "budget", Role: accessv1.Role_ROLE_OPERATOR, DailyTokenBudget: new(int64(20))})
	if tok.DailyTokenBudget == nil || tok.GetDailyTokenBudget() != 20 {
		t.Fatalf("created token's budget: %v", tok.DailyTokenBudget)
	}
	sdkA := b.sdk(secret)
	sdkB := openai.NewClient(option.WithBaseURL(second.baseURL+"/v1/"), option.WithAPIKey(secret),
		option.WithHTTPClient(second.client("")), option.WithMaxRetries(0))
	// Each call uses 10 tokens of the fake upstream: 7 prompt, 3 completion.
	params := openai.ChatCompletionNewParams{Model: "fake-model", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("a b c")}}
	calls := func() int {
		b.fake.mu.Lock()
		defer b.fake.mu.Unlock()
		return b.fake.calls["a b c"]
	}
	if _, err := sdkA.Chat.Completions.New(ctx, params); err != nil {
		t.Fatalf("first call: %v", err)
	}
	if _, err := sdkB.Chat.Completions.New(ctx, params); err != nil {
		t.Fatalf("second call, on the other replica: %v", err)
	}
	// A REST call records its usage right after its answer: wait for it.
	spent := func(want int64) {
		t.Helper()
		eventually.NoError(t, fmt.Sprintf("the token has spent %d tokens", want), func() error {
			res, err := compatv1connect.NewCompatServiceClient(b.client(b.owner), b.baseURL).GetUsage(ctx, connect.NewRequest(&compatv1.GetUsageRequest{TokenId: tok.GetId()}))
			if err != nil {
				return err
			}
			if got := res.Msg.GetTokens()[0].GetSpentToday(); got != want {
				return fmt.Errorf("spent %d", got)
			}
			return nil
		})
	}
	spent(20)
	_, err := sdkA.Chat.Completions.New(ctx, params)
	quotaError(t, "third call", err, 20, 20)
	_, err = sdkB.Chat.Completions.New(ctx, params)
	quotaError(t, "third call on the other replica", err, 20, 20)
	params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	s := sdkB.Chat.Completions.NewStreaming(ctx, params)
	for s.Next() {
		t.Error("a refused stream sent a chunk")
	}
	quotaError(t, "a stream", s.Err(), 20, 20)
	_, err = sdkA.Embeddings.New(ctx, openai.EmbeddingNewParams{Model: "fake-model", Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String("x")}})
	quotaError(t, "embeddings", err, 20, 20)
	_, err = sdkA.Responses.New(ctx, responses.ResponseNewParams{Model: "fake-model", Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("a b c")}})
	quotaError(t, "responses", err, 20, 20)
	_, err = compatv1connect.NewCompatServiceClient(second.client(secret), second.baseURL).CreateChatCompletion(ctx,
		connect.NewRequest(&compatv1.CreateChatCompletionRequest{Model: "fake-model", Messages: []*compatv1.ChatMessage{{Role: "user", Content: "a b c"}}}))
	wantCode(t, "the Connect call", err, connect.CodeResourceExhausted)
	var ce *connect.Error
	reason := ""
	if errors.As(err, &ce) {
		for _, d := range ce.Details() {
			if v, derr := d.Value(); derr == nil {
				if info, ok := v.(*errdetails.ErrorInfo); ok {
					reason = info.GetReason() + " " + info.GetMetadata()["spent"] + "/" + info.GetMetadata()["daily_token_budget"]
				}
			}
		}
	}
	if reason != "insufficient_quota 20/20" {
		t.Errorf("the Connect refusal's ErrorInfo: %q", reason)
	}
	if n := calls(); n != 2 {
		t.Errorf("the upstream got %d calls, want 2: the refused ones must not reach it", n)
	}

	// Only tokens.manage changes a budget.
	access := b.accessClient(b.owner)
	_, err = b.accessClient(secret).SetTokenBudget(ctx, connect.NewRequest(&accessv1.SetTokenBudgetRequest{Id: tok.GetId(), DailyTokenBudget: new(int64(1000))}))
	wantCode(t, "an operator raising its own budget", err, connect.CodePermissionDenied)
	_, err = access.SetTokenBudget(ctx, connect.NewRequest(&accessv1.SetTokenBudgetRequest{Id: tok.GetId(), DailyTokenBudget: new(int64(0))}))
	wantCode(t, "a zero budget", err, connect.CodeInvalidArgument)

	// Raised, through the first replica: both let calls through again.
	res, err := access.SetTokenBudget(ctx, connect.NewRequest(&accessv1.SetTokenBudgetRequest{Id: tok.GetId(), DailyTokenBudget: new(int64(40))}))
	if err != nil || res.Msg.GetToken().GetDailyTokenBudget() != 40 {
		t.Fatalf("raise the budget: %v, %v", res, err)
	}
	params.StreamOptions = openai.ChatCompletionStreamOptionsParam{}
	if _, err := sdkA.Chat.Completions.New(ctx, params); err != nil {
		t.Fatalf("a call after the raise: %v", err)
	}
	eventually.NoError(t, "the other replica applies the raised budget", func() error {
		_, err := sdkB.Chat.Completions.New(ctx, params)
		return err
	})
	spent(40)
	_, err = sdkA.Chat.Completions.New(ctx, params)
	quotaError(t, "the raised budget spent", err, 40, 40)

	// Rotation keeps the budget; none removes it.
	rot, err := access.RotateToken(ctx, connect.NewRequest(&accessv1.RotateTokenRequest{Id: tok.GetId()}))
	if err != nil || rot.Msg.GetToken().DailyTokenBudget == nil || rot.Msg.GetToken().GetDailyTokenBudget() != 40 {
		t.Fatalf("rotate: %v, %v", rot, err)
	}
	_, err = access.SetTokenBudget(ctx, connect.NewRequest(&accessv1.SetTokenBudgetRequest{Id: tok.GetId(), DailyTokenBudget: new(int64(50))}))
	wantCode(t, "the budget of a rotated (revoked) token", err, connect.CodeFailedPrecondition)
	newID, newSecret := rot.Msg.GetToken().GetId(), rot.Msg.GetSecret()
	if _, err := access.SetTokenBudget(ctx, connect.NewRequest(&accessv1.SetTokenBudgetRequest{Id: newID})); err != nil {
		t.Fatal(err)
	}
	got, err := access.GetToken(ctx, connect.NewRequest(&accessv1.GetTokenRequest{Id: newID}))
	if err != nil || got.Msg.GetToken().DailyTokenBudget != nil {
		t.Errorf("budget removed: %v, %v", got, err)
	}
	rotated := b.sdk(newSecret)
	if _, err := rotated.Chat.Completions.New(ctx, params); err != nil {
		t.Errorf("a call without a budget: %v", err)
	}
}
