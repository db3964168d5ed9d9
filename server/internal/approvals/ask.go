package approvals

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/palyra/palyra/gen/dbsqlc"
	agentsv1 "github.com/palyra/palyra/gen/go/palyra/agents/v1"
	"github.com/palyra/palyra/internal/retry"
	"github.com/palyra/palyra/server/internal/audit"
	"github.com/palyra/palyra/server/internal/errdefs"
	"github.com/palyra/palyra/server/internal/pagetoken"
	"github.com/palyra/palyra/server/internal/store"
)

// Ask records q as a pending approval (its audit event committed with it), expiring
// agents.approval_timeout from now, calls pending with it once committed (nil: not
// called), and waits until it is decided on any replica or expires; it returns the
// final approval. An approval nobody decides is expired at its expire time with the
// reason "no decision within <timeout>", by this wait or by the sweep of any replica,
// whichever comes first. When ctx ends first, Ask expires the approval with the reason
// RunEnded and returns ctx.Err().
func (s *Service) Ask(ctx context.Context, q Question, pending func(*agentsv1.Approval)) (*agentsv1.Approval, error) {
	if err := q.check(); err != nil {
		return nil, err
	}
	id := ulid.Make().String()
	// Interest first, then the insert: no decision can be missed.
	changed, stop := s.changes.Wait(id)
	defer stop()
	row, err := s.insert(ctx, id, q)
	if err != nil {
		return nil, err
	}
	if pending != nil {
		pending(approvalProto(row))
	}
	expire := time.NewTimer(row.ExpireAt.Sub(s.now()))
	defer expire.Stop()
	var poll <-chan time.Time
	if s.poll > 0 {
		t := time.NewTicker(s.poll)
		defer t.Stop()
		poll = t.C
	}
	// A failed read or expiry is tried again after a backoff.
	backoff := &retry.Backoff{Initial: 100 * time.Millisecond, Max: 5 * time.Second}
	var again <-chan time.Time
	for {
		var r dbsqlc.Approval
		select {
		case <-ctx.Done():
			endCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), endTimeout)
			defer cancel()
			if _, err := s.expire(endCtx, id, RunEnded); err != nil {
				s.log.Error("expiring the approval of a run that ended failed; the sweep expires it later", "approval_id", id, "err", err)
			}
			return nil, ctx.Err()
		case <-expire.C:
			r, err = s.expire(ctx, id, timedOut(row))
		case <-changed:
			r, err = s.get(ctx, id)
		case <-poll:
			r, err = s.get(ctx, id)
		case <-again:
			r, err = s.get(ctx, id)
			if err == nil && r.State == statePending && !r.ExpireAt.After(s.now()) {
				r, err = s.expire(ctx, id, timedOut(row))
			}
		}
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("reading a pending approval failed; trying again", "approval_id", id, "err", err)
				again = time.After(backoff.Next())
			}
			continue
		}
		if r.State != statePending {
			return approvalProto(r), nil
		}
	}
}

// check refuses a question the table would refuse.
func (q Question) check() error {
	var vs []errdefs.Violation
	if q.RunID == "" {
		vs = append(vs, errdefs.Violation{Field: "run_id", Description: "is required"})
	}
	if q.StepSeq < 1 {
		vs = append(vs, errdefs.Violation{Field: "step_seq", Description: "must be at least 1"})
	}
	if q.Tool == "" {
		vs = append(vs, errdefs.Violation{Field: "tool", Description: "is required"})
	}
	if !json.Valid(q.Input) {
		vs = append(vs, errdefs.Violation{Field: "input", Description: "is not valid JSON"})
	}
	if len(vs) > 0 {
		return errdefs.InvalidFields(vs...)
	}
	return nil
}

// insert stores a pending approval and stages its audit event in the same
// transaction, then appends the event.
func (s *Service) insert(ctx context.Context, id string, q Question) (dbsqlc.Approval, error) {
	now := s.now()
	timeout := s.opts.Timeout()
	var row dbsqlc.Approval
	var staged []audit.Record
	err := s.opts.Store.InTx(ctx, func(tx *store.Tx) error {
		var err error
		row, err = tx.Q().InsertApproval(ctx, dbsqlc.InsertApprovalParams{
			ID: id, RunID: q.RunID, StepSeq: q.StepSeq, AgentID: q.AgentID, AgentName: q.AgentName,
			Tool: q.Tool, Capability: q.Capability, NodeID: q.NodeID, Input: q.Input,
			RequestedBy: q.RequestedBy, CreatedAt: now, ExpireAt: now.Add(timeout),
		})
		if err != nil {
			return fmt.Errorf("approvals: insert: %w", err)
		}
		staged, err = s.opts.Audit.Stage(ctx, tx, audit.Event{
			Time: now, Principal: q.RequestedBy, Procedure: "approvals.request", Outcome: audit.Success, Code: "ok",
			Target: fmt.Sprintf("approval:%s run:%s tool:%s node:%s", id, q.RunID, q.Tool, q.NodeID),
		})
		return err
	})
	if err != nil {
		return row, err
	}
	s.log.Info("approval requested", "approval_id", id, "run_id", q.RunID, "step_seq", q.StepSeq, "agent", q.AgentName,
		"tool", q.Tool, "capability", q.Capability, "node_id", q.NodeID, "expire_at", row.ExpireAt)
	s.publish(ctx, staged)
	return row, nil
}

// publish appends staged events; a failure is logged only, for the drainer moves their
// outbox rows later.
func (s *Service) publish(ctx context.Context, staged []audit.Record) {
	if err := s.opts.Audit.Publish(context.WithoutCancel(ctx), staged); err != nil {
		s.log.Warn("audit events left to the outbox drainer", "err", err)
	}
}

// timedOut is the reason of an approval that nobody decided in time.
func timedOut(r dbsqlc.Approval) string {
	return "no decision within " + human(r.ExpireAt.Sub(r.CreatedAt))
}

// human writes d without its zero trailing units: 10m, 1h30m, 45s.
func human(d time.Duration) string {
	if d < time.Second {
		return d.Round(time.Millisecond).String()
	}
	s := d.Round(time.Second).String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// expire expires approval id with reason if it is still pending, auditing it, and
// returns the approval as it is then (decided, if a decision came first).
func (s *Service) expire(ctx context.Context, id, reason string) (dbsqlc.Approval, error) {
	now := s.now()
	var out dbsqlc.Approval
	var staged []audit.Record
	expired := false
	err := s.opts.Store.InTx(ctx, func(tx *store.Tx) error {
		var err error
		out, err = tx.Q().ExpireApproval(ctx, dbsqlc.ExpireApprovalParams{Now: now, Reason: reason, ID: id})
		if errors.Is(err, store.ErrNotFound) {
			// Decided or expired meanwhile (or unknown).
			out, err = tx.Q().GetApproval(ctx, id)
			if errors.Is(err, store.ErrNotFound) {
				return errNoApproval(id)
			}
			return err
		}
		if err != nil {
			return fmt.Errorf("approvals: expire: %w", err)
		}
		expired = true
		staged, err = s.opts.Audit.Stage(ctx, tx, expiryEvent(now, id, reason))
		return err
	})
	if err != nil {
		return out, err
	}
	if expired {
		s.log.Info("approval expired", "approval_id", id, "run_id", out.RunID, "reason", reason)
		s.publish(ctx, staged)
	}
	return out, nil
}

// expiryEvent is the audit event of an expiry.
func expiryEvent(now time.Time, id, reason string) audit.Event {
	return audit.Event{Time: now, Principal: "system", Procedure: "approvals.expire", Outcome: audit.Success, Code: "ok",
		Target: fmt.Sprintf("approval:%s reason:%q", id, reason)}
}

// expireDue expires every pending approval whose time ran out, auditing each.
func (s *Service) expireDue(ctx context.Context) error {
	now := s.now()
	var rows []dbsqlc.Approval
	var staged []audit.Record
	err := s.opts.Store.InTx(ctx, func(tx *store.Tx) error {
		due, err := tx.Q().LockDueApprovals(ctx, now)
		if err != nil {
			return fmt.Errorf("approvals: due approvals: %w", err)
		}
		rows, staged, err = s.expireLocked(ctx, tx, due, now, timedOut)
		return err
	})
	if err != nil {
		return err
	}
	for _, r := range rows {
		s.log.Info("approval expired", "approval_id", r.ID, "run_id", r.RunID, "reason", r.Reason)
	}
	s.publish(ctx, staged)
	return nil
}

// expireLocked expires the locked pending approvals rows with the reason each gets,
// and stages the audit events.
func (s *Service) expireLocked(ctx context.Context, tx *store.Tx, rows []dbsqlc.Approval, now time.Time, reason func(dbsqlc.Approval) string) ([]dbsqlc.Approval, []audit.Record, error) {
	out := make([]dbsqlc.Approval, 0, len(rows))
	events := make([]audit.Event, 0, len(rows))
	for _, r := range rows {
		why := reason(r)
		e, err := tx.Q().ExpireApproval(ctx, dbsqlc.ExpireApprovalParams{Now: now, Reason: why, ID: r.ID})
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, nil, fmt.Errorf("approvals: expire: %w", err)
		}
		out = append(out, e)
		events = append(events, expiryEvent(now, r.ID, why))
	}
	staged, err := s.opts.Audit.Stage(ctx, tx, events...)
	return out, staged, err
}

// EndRun expires the pending approvals of run runID with reason (RunEnded when empty),
// auditing each: its run was cancelled, failed or was reaped, and nobody waits for them.
func (s *Service) EndRun(ctx context.Context, runID, reason string) error {
	if reason == "" {
		reason = RunEnded
	}
	now := s.now()
	var rows []dbsqlc.Approval
	var staged []audit.Record
	err := s.opts.Store.InTx(ctx, func(tx *store.Tx) error {
		pending, err := tx.Q().LockPendingRunApprovals(ctx, runID)
		if err != nil {
			return fmt.Errorf("approvals: pending approvals of run %s: %w", runID, err)
		}
		rows, staged, err = s.expireLocked(ctx, tx, pending, now, func(dbsqlc.Approval) string { return reason })
		return err
	})
	if err != nil {
		return err
	}
	for _, r := range rows {
		s.log.Info("approval expired", "approval_id", r.ID, "run_id", runID, "reason", reason)
	}
	s.publish(ctx, staged)
	return nil
}

// get returns approval id.
func (s *Service) get(ctx context.Context, id string) (dbsqlc.Approval, error) {
	r, err := s.opts.Store.Q().GetApproval(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return r, errNoApproval(id)
	}
	if err != nil {
		return r, fmt.Errorf("approvals: get: %w", err)
	}
	return r, nil
}

// decision is a human's decision on an approval.
type decision struct {
	id      string
	approve bool
	scope   string // scopeOnce or scopeRun; ignored when denying
	reason  string
	by      string
}

// decide records d if the approval is pending and not overdue. A denial without a
// reason is Invalid; an approval that is not pending is FailedPrecondition naming its
// state (an overdue one is expired first).
func (s *Service) decide(ctx context.Context, d decision) (dbsqlc.Approval, error) {
	state, scope := stateApproved, d.scope
	if !d.approve {
		state, scope = stateDenied, ""
		if strings.TrimSpace(d.reason) == "" {
			return dbsqlc.Approval{}, errdefs.InvalidField("reason", "is required to deny: the model is told why")
		}
	}
	r, err := s.opts.Store.Q().DecideApproval(ctx, dbsqlc.DecideApprovalParams{
		State: state, DecidedBy: d.by, Now: s.now(), Reason: d.reason, Scope: scope, ID: d.id,
	})
	if err == nil {
		s.log.Info("approval decided", "approval_id", d.id, "run_id", r.RunID, "state", state, "scope", scope, "decided_by", d.by)
		return r, nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return r, fmt.Errorf("approvals: decide: %w", err)
	}
	// Unknown, final already, or overdue.
	if r, err = s.get(ctx, d.id); err != nil {
		return r, err
	}
	if r.State == statePending {
		if r, err = s.expire(ctx, d.id, timedOut(r)); err != nil {
			return r, err
		}
	}
	return r, errNotPending(r)
}

// list returns a page of approvals in state ("" for all) of runID ("" for all), newest
// first, and the token of the next page.
func (s *Service) list(ctx context.Context, state, runID, pageToken string, limit int) ([]dbsqlc.Approval, string, error) {
	params := dbsqlc.ListApprovalsParams{State: state, RunID: runID, PageLimit: int32(limit) + 1}
	if pageToken != "" {
		at, id, err := pagetoken.Decode(pageToken)
		if err != nil {
			return nil, "", errdefs.InvalidField("page_token", "is malformed")
		}
		params.AfterCreatedAt, params.AfterID = &at, id
	}
	rows, err := s.opts.Store.Q().ListApprovals(ctx, params)
	if err != nil {
		return nil, "", fmt.Errorf("approvals: list: %w", err)
	}
	rows, next := pagetoken.Page(rows, limit, func(r dbsqlc.Approval) (time.Time, string) { return r.CreatedAt, r.ID })
	return rows, next, nil
}
