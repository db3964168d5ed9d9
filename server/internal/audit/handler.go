package audit

import (
	"context"
	"encoding/hex"
	"fmt"
	"strconv"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	accessv1 "github.com/palyra/palyra/gen/go/palyra/access/v1"
	"github.com/palyra/palyra/gen/go/palyra/access/v1/accessv1connect"
	"github.com/palyra/palyra/server/internal/pagetoken"
)

// defaultPageSize is the page size of a ListAuditEvents that does not ask for one.
const defaultPageSize = 100

// HandlerOptions are the AuditService handler's dependencies.
type HandlerOptions struct {
	Log *Log
}

// Handler serves AuditService.
type Handler struct {
	opts HandlerOptions
}

var _ accessv1connect.AuditServiceHandler = (*Handler)(nil)

// NewHandler returns the AuditService handler.
func NewHandler(opts HandlerOptions) *Handler { return &Handler{opts: opts} }

// ListAuditEvents lists audit events, newest first.
func (h *Handler) ListAuditEvents(ctx context.Context, req *connect.Request[accessv1.ListAuditEventsRequest]) (*connect.Response[accessv1.ListAuditEventsResponse], error) {
	m := req.Msg
	f := Filter{Principal: m.GetPrincipal(), Procedure: m.GetProcedure(), Limit: int(m.GetPageSize())}
	if f.Limit == 0 {
		f.Limit = defaultPageSize
	}
	switch m.GetOutcome() {
	case accessv1.AuditOutcome_AUDIT_OUTCOME_SUCCESS:
		f.Outcome = Success
	case accessv1.AuditOutcome_AUDIT_OUTCOME_FAILURE:
		f.Outcome = Failure
	}
	if m.Since != nil {
		at := m.GetSince().AsTime()
		f.Since = &at
	}
	if m.Until != nil {
		at := m.GetUntil().AsTime()
		f.Until = &at
	}
	if m.GetPageToken() != "" {
		seq, err := strconv.ParseInt(m.GetPageToken(), 10, 64)
		if err != nil || seq <= 0 {
			return nil, fmt.Errorf("audit: list audit events: %w", pagetoken.ErrMalformed)
		}
		f.BeforeSequence = seq
	}
	// One more than asked tells whether there is a next page.
	f.Limit++
	records, err := h.opts.Log.List(ctx, f)
	if err != nil {
		return nil, err
	}
	res := &accessv1.ListAuditEventsResponse{}
	if len(records) == f.Limit {
		records = records[:f.Limit-1]
		res.NextPageToken = strconv.FormatInt(records[len(records)-1].Sequence, 10)
	}
	res.Events = make([]*accessv1.AuditEvent, len(records))
	for i, r := range records {
		res.Events[i] = eventProto(r)
	}
	return connect.NewResponse(res), nil
}

func eventProto(r Record) *accessv1.AuditEvent {
	out := &accessv1.AuditEvent{
		Sequence: r.Sequence, Id: r.ID, Time: timestamppb.New(r.Time), Principal: r.Principal,
		Procedure: r.Procedure, Target: r.Target, Code: r.Code, RemoteAddress: r.RemoteAddress,
		RequestId: r.RequestID, Hash: hex.EncodeToString(r.Hash),
		Outcome: accessv1.AuditOutcome_AUDIT_OUTCOME_SUCCESS,
	}
	if r.Outcome == Failure {
		out.Outcome = accessv1.AuditOutcome_AUDIT_OUTCOME_FAILURE
	}
	out.ReplicaId, out.Format = r.Replica, uint32(r.Format)
	switch r.RequestIDSource {
	case FromClient:
		out.RequestIdSource = accessv1.AuditRequestIdSource_AUDIT_REQUEST_ID_SOURCE_CLIENT
	case FromReplica:
		out.RequestIdSource = accessv1.AuditRequestIdSource_AUDIT_REQUEST_ID_SOURCE_REPLICA
	}
	if s := r.Summary; s != nil {
		out.Summary = &accessv1.AuditSummary{Count: s.Count, FirstTime: timestamppb.New(s.First), Procedures: s.Procedures}
	}
	return out
}

// VerifyAuditLog verifies the audit log's hash chain.
func (h *Handler) VerifyAuditLog(ctx context.Context, _ *connect.Request[accessv1.VerifyAuditLogRequest]) (*connect.Response[accessv1.VerifyAuditLogResponse], error) {
	v, err := h.opts.Log.Verify(ctx)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&accessv1.VerifyAuditLogResponse{
		Intact: v.Intact, EventsChecked: v.Checked, HeadSequence: v.HeadSequence,
		HeadHash: hex.EncodeToString(v.HeadHash), FirstBrokenSequence: v.FirstBroken, Problem: v.Problem,
	}), nil
}
