package compat

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/palyra/palyra/gen/dbsqlc"
	compatv1 "github.com/palyra/palyra/gen/go/palyra/compat/v1"
	"github.com/palyra/palyra/server/internal/access"
	"github.com/palyra/palyra/server/internal/apiserver"
	"github.com/palyra/palyra/server/internal/errdefs"
)

// Usage and budgets. Every call that used tokens adds them, as its provider reported
// them, to its API token's row of the UTC day, model and provider in compat_usage
// (sqlc/migrations/00013_compat_usage.sql): one upsert when the call ends, which is
// the call's one write and so commits its audit outbox row with it (the store adds the
// row to the call's first write). A REST call makes it, and appends its audit event,
// after its answer is out (REST.call), so that no commit delays the answer; a replica
// that dies in between loses that call's record. A call's usage counts against the
// budget from then on. A token with a daily token budget is checked before
// its call reaches the provider: one read of today's rows, made only for tokens that
// have a budget (the budget comes with the authenticated token). The check and the
// record are not one transaction: calls that start while the token is under its budget
// all run, so the budget may be overshot by the tokens of the calls in flight when it
// runs out, as LiteLLM's and OpenAI's budgets are.

// dayLayout is how days are written: YYYY-MM-DD.
const dayLayout = time.DateOnly

// day is the UTC day of t, as its column takes it.
func day(t time.Time) pgtype.Date {
	y, m, d := t.UTC().Date()
	return pgtype.Date{Time: time.Date(y, m, d, 0, 0, 0, 0, time.UTC), Valid: true}
}

// checkBudget refuses the call of a token that has used up its daily token budget,
// with ResourceExhausted (REST: 429 insufficient_quota); tokens without a budget pass
// without a query.
func (h *Handler) checkBudget(ctx context.Context) error {
	p, ok := access.PrincipalFrom(ctx)
	if !ok || p == nil || p.DailyTokenBudget == nil || h.opts.Store == nil {
		return nil
	}
	now := h.opts.Now()
	spent, err := h.opts.Store.Q().SpentOn(ctx, dbsqlc.SpentOnParams{TokenID: p.TokenID, Day: day(now)})
	if err != nil {
		return errdefs.Wrap(err, errdefs.Unavailable, "could not check the token's daily budget; retry later")
	}
	budget := *p.DailyTokenBudget
	if spent < budget {
		return nil
	}
	resets := day(now).Time.AddDate(0, 0, 1)
	return &errdefs.Error{Kind: errdefs.ResourceExhausted, Reason: apiserver.ReasonInsufficientQuota,
		Message: fmt.Sprintf("%s has used %d of its daily budget of %d tokens; the budget resets at %s (next UTC midnight)",
			p.ID(), spent, budget, resets.Format(time.RFC3339)),
		Metadata: map[string]string{"daily_token_budget": strconv.FormatInt(budget, 10), "spent": strconv.FormatInt(spent, 10),
			"resets_at": resets.Format(time.RFC3339)}}
}

// record adds a call's tokens to its token's usage; a call without usage records
// nothing. A REST call records once its answer is out (withAfterAnswer), a Connect call
// at once. It writes even when the call's context is cancelled (a client that went
// away after tokens were used), and a failure is logged, not the call's: the answer is
// out already.
func (h *Handler) record(ctx context.Context, r route, model string, u *Usage) {
	p, ok := access.PrincipalFrom(ctx)
	if u == nil || !ok || p == nil || h.opts.Store == nil || r.agent {
		return
	}
	write := func() {
		err := h.opts.Store.Q().RecordUsage(context.WithoutCancel(ctx), dbsqlc.RecordUsageParams{
			TokenID: p.TokenID, Day: day(h.opts.Now()), Model: model, Provider: r.name,
			PromptTokens: max(u.PromptTokens, 0), CompletionTokens: max(u.CompletionTokens, 0),
		})
		if err != nil {
			h.log.Error("compat: usage not recorded", "token", p.TokenID, "model", model, "provider", r.name,
				"prompt_tokens", u.PromptTokens, "completion_tokens", u.CompletionTokens, "err", err)
		}
	}
	if later, ok := ctx.Value(afterAnswerKey{}).(*afterAnswer); ok {
		later.add(write)
		return
	}
	write()
}

// afterAnswer is what a call writes once its answer is out.
type afterAnswer struct {
	mu  sync.Mutex
	fns []func()
}

// afterAnswerKey is the context key of a call's afterAnswer.
type afterAnswerKey struct{}

// withAfterAnswer returns ctx carrying an afterAnswer that record adds its write to.
func withAfterAnswer(ctx context.Context) (context.Context, *afterAnswer) {
	a := &afterAnswer{}
	return context.WithValue(ctx, afterAnswerKey{}, a), a
}

func (a *afterAnswer) add(fn func()) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.fns = append(a.fns, fn)
}

// run runs the writes added, in order.
func (a *afterAnswer) run() {
	a.mu.Lock()
	fns := a.fns
	a.fns = nil
	a.mu.Unlock()
	for _, fn := range fns {
		fn()
	}
}

// GetUsage returns the usage rows, their totals and their tokens' budgets.
func (h *Handler) GetUsage(ctx context.Context, req *connect.Request[compatv1.GetUsageRequest]) (*connect.Response[compatv1.GetUsageResponse], error) {
	if h.opts.Store == nil {
		return nil, errdefs.New(errdefs.Unavailable, "usage is not recorded by this daemon")
	}
	since := pgtype.Date{Time: time.Unix(0, 0).UTC(), Valid: true}
	if s := req.Msg.GetSinceDay(); s != "" {
		t, err := time.Parse(dayLayout, s)
		if err != nil {
			return nil, errdefs.InvalidField("since_day", "must be a day as YYYY-MM-DD")
		}
		since = day(t)
	}
	q := h.opts.Store.Q()
	rows, err := q.ListUsage(ctx, dbsqlc.ListUsageParams{Since: since, TokenID: req.Msg.GetTokenId()})
	if err != nil {
		return nil, fmt.Errorf("compat: usage: %w", err)
	}
	today := day(h.opts.Now())
	out := &compatv1.GetUsageResponse{Rows: []*compatv1.UsageRow{}, Totals: &compatv1.UsageTotals{},
		Tokens: []*compatv1.TokenUsage{}, Today: today.Time.Format(dayLayout)}
	ids := map[string]bool{}
	if id := req.Msg.GetTokenId(); id != "" {
		ids[id] = true
	}
	for _, r := range rows {
		ids[r.TokenID] = true
		out.Rows = append(out.Rows, &compatv1.UsageRow{TokenId: r.TokenID, Day: r.Day.Time.Format(dayLayout), Model: r.Model,
			Provider: r.Provider, Requests: r.Requests, PromptTokens: r.PromptTokens, CompletionTokens: r.CompletionTokens,
			TotalTokens: r.PromptTokens + r.CompletionTokens})
		t := out.Totals
		t.Requests += r.Requests
		t.PromptTokens += r.PromptTokens
		t.CompletionTokens += r.CompletionTokens
		t.TotalTokens += r.PromptTokens + r.CompletionTokens
	}
	toks, err := q.UsageTokens(ctx, dbsqlc.UsageTokensParams{Day: today, Ids: slices.Sorted(maps.Keys(ids))})
	if err != nil {
		return nil, fmt.Errorf("compat: usage: %w", err)
	}
	for _, t := range toks {
		tu := &compatv1.TokenUsage{TokenId: t.ID, Label: t.Label, SpentToday: t.Spent}
		if t.DailyTokenBudget.Valid {
			tu.DailyTokenBudget = &t.DailyTokenBudget.Int64
		}
		out.Tokens = append(out.Tokens, tu)
	}
	if id := req.Msg.GetTokenId(); id != "" && len(toks) == 0 {
		return nil, errdefs.New(errdefs.NotFound, "token %s does not exist", id)
	}
	return connect.NewResponse(out), nil
}
