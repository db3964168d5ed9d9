package approvals

import (
	"context"
	"fmt"
	"time"

	"connectrpc.com/connect"

	"github.com/palyra/palyra/gen/dbsqlc"
	agentsv1 "github.com/palyra/palyra/gen/go/palyra/agents/v1"
	"github.com/palyra/palyra/gen/go/palyra/agents/v1/agentsv1connect"
	"github.com/palyra/palyra/server/internal/audit"
	"github.com/palyra/palyra/server/internal/errdefs"
)

// Page sizes of the list.
const (
	defaultPageSize = 100
	maxPageSize     = 500
)

// resyncMargin is how far before its last complete read a watch that may have missed
// changes looks for decisions: commits and replicas' clocks lag a little.
const resyncMargin = time.Minute

// Handler serves ApprovalService. Authorization (approvals.read, approvals.decide) and
// the audit of every call are the access interceptor's; the handler names what each
// call acted on.
type Handler struct {
	s *Service
}

var _ agentsv1connect.ApprovalServiceHandler = (*Handler)(nil)

// ListApprovals lists approvals, newest first, optionally in one state and of one run.
func (h *Handler) ListApprovals(ctx context.Context, req *connect.Request[agentsv1.ListApprovalsRequest]) (*connect.Response[agentsv1.ListApprovalsResponse], error) {
	size := defaultPageSize
	if n := req.Msg.GetPageSize(); n > 0 {
		size = min(int(n), maxPageSize)
	}
	rows, next, err := h.s.list(ctx, stateFilter(req.Msg.GetState()), req.Msg.GetRunId(), req.Msg.GetPageToken(), size)
	if err != nil {
		return nil, err
	}
	res := &agentsv1.ListApprovalsResponse{Approvals: make([]*agentsv1.Approval, len(rows)), NextPageToken: next}
	for i, r := range rows {
		res.Approvals[i] = approvalProto(r)
	}
	return connect.NewResponse(res), nil
}

// GetApproval returns one approval.
func (h *Handler) GetApproval(ctx context.Context, req *connect.Request[agentsv1.GetApprovalRequest]) (*connect.Response[agentsv1.GetApprovalResponse], error) {
	r, err := h.s.get(ctx, req.Msg.GetId())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&agentsv1.GetApprovalResponse{Approval: approvalProto(r)}), nil
}

// WatchApprovals streams the pending approvals, then synced, then each approval that
// changed, read when its notification arrives (from whichever replica made the
// change). When notifications may have been missed (the listener reconnected, the
// client fell behind by changeBuffer changes, or, without notifications, every poll
// interval) it sends again every pending approval and every one decided since shortly
// before its last complete read. It ends on Shutdown.
func (h *Handler) WatchApprovals(ctx context.Context, req *connect.Request[agentsv1.WatchApprovalsRequest], stream *connect.ServerStream[agentsv1.WatchApprovalsResponse]) error {
	select {
	case <-h.s.stopping:
		return errdefs.New(errdefs.Unavailable, "palyrad is shutting down: watch again")
	default:
	}
	runID := req.Msg.GetRunId()
	// Interest first, then the first read: a change after it is not missed.
	w, stop := h.s.changes.Watch(changeBuffer)
	defer stop()
	send := func(r dbsqlc.Approval) error {
		return stream.Send(&agentsv1.WatchApprovalsResponse{Event: &agentsv1.WatchApprovalsResponse_Approval{Approval: approvalProto(r)}})
	}
	read := h.s.now()
	rows, err := h.s.opts.Store.Q().ListApprovalsSince(ctx, dbsqlc.ListApprovalsSinceParams{Since: read, RunID: runID})
	if err != nil {
		return fmt.Errorf("approvals: list pending: %w", err)
	}
	for _, r := range rows {
		if r.State != statePending {
			continue // decided since the read began: its notification follows
		}
		if err := send(r); err != nil {
			return err
		}
	}
	if err := stream.Send(&agentsv1.WatchApprovalsResponse{Event: &agentsv1.WatchApprovalsResponse_Synced{Synced: true}}); err != nil {
		return err
	}
	var poll <-chan time.Time
	if h.s.poll > 0 {
		t := time.NewTicker(h.s.poll)
		defer t.Stop()
		poll = t.C
	}
	for {
		var missed bool
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-h.s.stopping:
			return nil
		case <-w.Missed:
			missed = true
		case <-poll:
			missed = true
		case id := <-w.IDs:
			r, err := h.s.get(ctx, id)
			if errdefs.KindOf(err) == errdefs.NotFound {
				continue // not an approval (a stray notification)
			}
			if err != nil {
				return err
			}
			if runID != "" && r.RunID != runID {
				continue
			}
			if err := send(r); err != nil {
				return err
			}
		}
		if !missed {
			continue
		}
		next := h.s.now()
		rows, err := h.s.opts.Store.Q().ListApprovalsSince(ctx, dbsqlc.ListApprovalsSinceParams{Since: read.Add(-resyncMargin), RunID: runID})
		if err != nil {
			return fmt.Errorf("approvals: list changes: %w", err)
		}
		read = next
		for _, r := range rows {
			if err := send(r); err != nil {
				return err
			}
		}
	}
}

// DecideApproval approves or denies a pending approval, recording the caller as its
// decider; the interceptor audits the call.
func (h *Handler) DecideApproval(ctx context.Context, req *connect.Request[agentsv1.DecideApprovalRequest]) (*connect.Response[agentsv1.DecideApprovalResponse], error) {
	m := req.Msg
	scope := scopeOnce
	if m.GetScope() == agentsv1.ApprovalScope_APPROVAL_SCOPE_RUN {
		scope = scopeRun
	}
	target := fmt.Sprintf("approval:%s denied reason:%q", m.GetId(), m.GetReason())
	if m.GetApprove() {
		target = fmt.Sprintf("approval:%s approved scope:%s", m.GetId(), scope)
		if m.GetReason() != "" {
			target += fmt.Sprintf(" reason:%q", m.GetReason())
		}
	}
	audit.SetTarget(ctx, target)
	by, err := principalID(ctx)
	if err != nil {
		return nil, err
	}
	r, err := h.s.decide(ctx, decision{id: m.GetId(), approve: m.GetApprove(), scope: scope, reason: m.GetReason(), by: by})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&agentsv1.DecideApprovalResponse{Approval: approvalProto(r)}), nil
}
