package dispatch

import (
	"context"
	"time"

	"github.com/palyra/palyra/gen/dbsqlc"
	"github.com/palyra/palyra/server/internal/store"
)

// db is the package's store layer: the only code that runs its queries (sqlc/queries/
// dispatch.sql and nodes.sql), turning their rows into the package's types. Each method
// is one statement, run as the store runs it (Q, or Lossy where losing it in a crash is
// harmless), so that the audit outbox row of the calling context commits with the first
// one that writes (store.Companion). Errors are the store's (store.ErrNotFound, ...).
type db struct {
	st *store.Store
}

// insertDispatch is what a new dispatch is stored with.
type insertDispatch struct {
	id, nodeID, capability string
	input                  []byte
	idempotencyKey         string // "" for none
	requestHash            []byte
	createdBy              string
	createdAt, deadline    time.Time
	maxOutputBytes         int64
	// sessionID, when not "", stores the dispatch as sent on that session at createdAt.
	sessionID string
}

// insertDispatch stores a dispatch; store.ErrNotFound when its idempotency key names
// another one already (the insert does nothing then). The inserts of concurrent calls
// commit together (store.Grouped).
func (b db) insertDispatch(ctx context.Context, in insertDispatch) (Dispatch, error) {
	p := dbsqlc.InsertDispatchParams{
		ID: in.id, DeviceID: in.nodeID, Capability: in.capability, Input: in.input,
		RequestHash: in.requestHash, CreatedBy: in.createdBy, CreatedAt: in.createdAt,
		Deadline: in.deadline, MaxOutputBytes: in.maxOutputBytes,
	}
	if in.idempotencyKey != "" {
		p.IdempotencyKey = &in.idempotencyKey
	}
	if in.sessionID != "" {
		p.SessionID, p.SentAt = &in.sessionID, &in.createdAt
	}
	return dispatchOf(b.st.Grouped().InsertDispatch(ctx, p))
}

// dispatchByKey returns the dispatch a principal created with an idempotency key, and
// the hash of the request that created it.
func (b db) dispatchByKey(ctx context.Context, createdBy, key string) (Dispatch, []byte, error) {
	row, err := b.st.Q().GetDispatchByKey(ctx, dbsqlc.GetDispatchByKeyParams{CreatedBy: createdBy, IdempotencyKey: key})
	d, err := dispatchOf(row, err)
	return d, row.RequestHash, err
}

// dispatch returns a dispatch.
func (b db) dispatch(ctx context.Context, id string) (Dispatch, error) {
	return dispatchOf(b.st.Q().GetDispatch(ctx, id))
}

// listDispatches returns a page of dispatches, newest first, after the one at (at, id)
// when at is not nil; the filter's empty fields select all.
func (b db) listDispatches(ctx context.Context, f Filter, after *time.Time, afterID string, limit int) ([]Dispatch, error) {
	return dispatchesOf(b.st.Q().ListDispatches(ctx, dbsqlc.ListDispatchesParams{
		DeviceID: f.NodeID, State: string(f.State), Capability: f.Capability,
		AfterCreatedAt: after, AfterID: afterID, PageLimit: int32(limit),
		CreatedSince: store.CeilMicro(f.CreatedSince), CreatedBefore: store.CeilMicro(f.CreatedBefore),
	}))
}

// output returns the stored chunks of a dispatch's output that overlap [from, to), at
// most budget bytes counting overhead per chunk (ListDispatchOutput). Every
// ExecuteCapability reads its output once its dispatch ended: the reads of concurrent
// calls share the round trip of the statements written at the same moment
// (store.Grouped) rather than take one each.
func (b db) output(ctx context.Context, id string, from, to, budget, overhead int64) ([]OutputChunk, error) {
	rows, err := b.st.Grouped().ListDispatchOutput(ctx, dbsqlc.ListDispatchOutputParams{
		DispatchID: id, FromOffset: from, ToOffset: to, MaxBytes: budget, RowOverhead: overhead,
	})
	if err != nil {
		return nil, err
	}
	out := make([]OutputChunk, 0, len(rows))
	for _, r := range rows {
		out = append(out, OutputChunk{DispatchID: r.DispatchID, Offset: r.Offset, Stream: r.Stream, Data: r.Data})
	}
	return out, nil
}

// cancelQueued cancels a dispatch that is still queued; store.ErrNotFound when it is
// not.
func (b db) cancelQueued(ctx context.Context, id, reason string, now time.Time) (Dispatch, error) {
	return dispatchOf(b.st.Q().CancelQueuedDispatch(ctx, dbsqlc.CancelQueuedDispatchParams{ID: id, Now: now, Reason: reason}))
}

// requestCancel records a cancellation request for a sent or running dispatch;
// store.ErrNotFound when it is neither.
func (b db) requestCancel(ctx context.Context, id, reason string, now time.Time) (Dispatch, error) {
	return dispatchOf(b.st.Q().RequestDispatchCancel(ctx, dbsqlc.RequestDispatchCancelParams{ID: id, Now: now, Reason: reason}))
}

// abandon ends a dispatch that has not ended as cancelled (AbandonDispatch);
// store.ErrNotFound when it ended already or does not exist.
func (b db) abandon(ctx context.Context, id, reason string, now time.Time) (Dispatch, error) {
	return dispatchOf(b.st.Q().AbandonDispatch(ctx, dbsqlc.AbandonDispatchParams{ID: id, Now: now, Reason: reason}))
}

// inFlight counts the unfinished dispatches of capabilities on each of nodes
// (CountDispatchesInFlight); a node without any is absent.
func (b db) inFlight(ctx context.Context, nodes, capabilities []string) (map[string]int, error) {
	rows, err := b.st.Q().CountDispatchesInFlight(ctx, dbsqlc.CountDispatchesInFlightParams{DeviceIds: nodes, Capabilities: capabilities})
	if err != nil {
		return nil, err
	}
	counts := make(map[string]int, len(rows))
	for _, r := range rows {
		counts[r.DeviceID] = int(r.Count)
	}
	return counts, nil
}

// cancelRequests returns the dispatches of a device whose cancellation was requested.
func (b db) cancelRequests(ctx context.Context, deviceID string) ([]Dispatch, error) {
	return dispatchesOf(b.st.Q().ListCancelRequests(ctx, deviceID))
}

// expired is a dispatch the sweeper ended.
type expired struct {
	id, nodeID string
	state      State
}

// expire ends the dispatches whose deadline passed (ExpireDispatches).
func (b db) expire(ctx context.Context, now time.Time, staleAfter, grace time.Duration) ([]expired, error) {
	rows, err := b.st.Q().ExpireDispatches(ctx, dbsqlc.ExpireDispatchesParams{
		Now: now, StaleAfterSeconds: staleAfter.Seconds(), GraceSeconds: grace.Seconds(),
	})
	if err != nil {
		return nil, err
	}
	out := make([]expired, 0, len(rows))
	for _, r := range rows {
		out = append(out, expired{id: r.ID, nodeID: r.DeviceID, state: State(r.State)})
	}
	return out, nil
}

// countActive counts the dispatches that have not ended, by state.
func (b db) countActive(ctx context.Context) (map[State]int64, error) {
	rows, err := b.st.Q().CountActiveDispatches(ctx)
	if err != nil {
		return nil, err
	}
	counts := make(map[State]int64, len(rows))
	for _, r := range rows {
		counts[State(r.State)] = r.Count
	}
	return counts, nil
}

// claim claims up to max dispatches queued for a device for its session, in no
// particular order. A claim a crash forgets is a dispatch queued again, so the commit
// does not wait for the disk (store.Lossy).
func (b db) claim(ctx context.Context, sessionID, deviceID string, now time.Time, max int) ([]Dispatch, error) {
	return dispatchesOf(b.st.Lossy().ClaimDispatches(ctx, dbsqlc.ClaimDispatchesParams{
		SessionID: sessionID, DeviceID: deviceID, Now: now, MaxClaims: int32(max),
	}))
}

// reports is what one round of a node's messages reports (acceptances, output, ends),
// written with one statement (RecordReports).
type reports dbsqlc.RecordReportsParams

// recordReports writes a round's reports and returns the dispatches it changed. The
// rounds of the sessions of this replica that are written at the same moment commit
// together (store.Grouped).
func (b db) recordReports(ctx context.Context, r reports) ([]Dispatch, error) {
	return dispatchesOf(b.st.Grouped().RecordReports(ctx, dbsqlc.RecordReportsParams(r)))
}

// recordStarts records acceptances alone. A crash that forgets one leaves its dispatch
// sent, which the node's result ends as well, so the commit does not wait for the disk
// (store.Lossy).
func (b db) recordStarts(ctx context.Context, deviceID string, ids []string, now time.Time) error {
	_, err := b.st.Lossy().RecordReports(ctx, dbsqlc.RecordReportsParams{DeviceID: deviceID, Now: now, StartIds: ids})
	return err
}

// attach is what a node's hello records with its new session.
type attach struct {
	deviceID, sessionID, replicaID string
	now                            time.Time
	platform, agentVersion         string
	protocolVersion                int32
	capabilities, reportedLabels   []byte // JSON
}

// attach records a new session of a device, replacing any earlier one;
// store.ErrNotFound when the device is revoked or does not exist.
func (b db) attach(ctx context.Context, a attach) error {
	_, err := b.st.Q().AttachDevice(ctx, dbsqlc.AttachDeviceParams{
		ID: a.deviceID, SessionID: a.sessionID, ReplicaID: a.replicaID, Now: a.now,
		Platform: a.platform, AgentVersion: a.agentVersion, ProtocolVersion: a.protocolVersion,
		Capabilities: a.capabilities, ReportedLabels: a.reportedLabels,
	})
	return err
}

// detach records that a session ended, unless a newer one replaced it.
func (b db) detach(ctx context.Context, deviceID, sessionID string, now time.Time) error {
	_, err := b.st.Q().DetachDevice(ctx, dbsqlc.DetachDeviceParams{ID: deviceID, SessionID: sessionID, Now: now})
	return err
}

// detachReplica ends every session a replica held and returns how many; now nil keeps
// their last-seen times (a start after a crash).
func (b db) detachReplica(ctx context.Context, replicaID string, now *time.Time) (int64, error) {
	return b.st.Q().DetachReplica(ctx, dbsqlc.DetachReplicaParams{ReplicaID: replicaID, Now: now})
}

// updateCapabilities records the capabilities (JSON) a session's node announced anew;
// false when a newer session replaced it.
func (b db) updateCapabilities(ctx context.Context, deviceID, sessionID string, caps []byte, now time.Time) (bool, error) {
	n, err := b.st.Q().UpdateCapabilities(ctx, dbsqlc.UpdateCapabilitiesParams{
		ID: deviceID, SessionID: sessionID, Capabilities: caps, Now: now,
	})
	return n > 0, err
}

// touch records the last activity of sessions (parallel slices) and returns the devices
// whose session is still the current one. Last-seen times are refreshed every few
// seconds: a crash may lose one round (store.Lossy).
func (b db) touch(ctx context.Context, deviceIDs, sessionIDs []string, seen []time.Time) ([]string, error) {
	return b.st.Lossy().TouchSessions(ctx, dbsqlc.TouchSessionsParams{Ids: deviceIDs, SessionIds: sessionIDs, SeenAt: seen})
}

// nodeCapabilities is what deciding on a dispatch to a node not attached here reads.
type nodeCapabilities struct {
	revoked         bool
	protocolVersion int32
	capabilities    []byte // JSON
}

// nodeCapabilities reads a node's stored capabilities: every dispatch created for a
// node attached to another replica reads them, so the reads of concurrent calls share
// the round trip of the statements written at the same moment (store.Grouped).
func (b db) nodeCapabilities(ctx context.Context, id string) (nodeCapabilities, error) {
	row, err := b.st.Grouped().GetNodeCapabilities(ctx, id)
	if err != nil {
		return nodeCapabilities{}, err
	}
	return nodeCapabilities{revoked: row.RevokedAt != nil, protocolVersion: row.ProtocolVersion, capabilities: row.Capabilities}, nil
}

// listNodes returns a page of nodes, newest first, after the one at (at, id) when at
// is not nil. Presence is decided as Service.presence does, from heartbeat.
func (b db) listNodes(ctx context.Context, f NodeFilter, labels []byte, heartbeat time.Duration, now time.Time,
	after *time.Time, afterID string, limit int) ([]storedNode, error) {
	rows, err := b.st.Q().ListNodes(ctx, dbsqlc.ListNodesParams{
		Now: now, IncludeRevoked: f.IncludeRevoked, Capability: f.Capability, Labels: labels,
		Presence: string(f.Presence), StaleAfterSeconds: (staleAfter * heartbeat).Seconds(),
		OfflineAfterSeconds: (offlineAfter * heartbeat).Seconds(), PageLimit: int32(limit),
		AfterCreatedAt: after, AfterID: afterID,
	})
	if err != nil {
		return nil, err
	}
	out := make([]storedNode, 0, len(rows))
	for _, r := range rows {
		out = append(out, storedNodeOf(r.Device, r.CertificateNotAfter))
	}
	return out, nil
}

// node returns a node.
func (b db) node(ctx context.Context, id string, now time.Time) (storedNode, error) {
	row, err := b.st.Q().GetNode(ctx, dbsqlc.GetNodeParams{ID: id, Now: now})
	if err != nil {
		return storedNode{}, err
	}
	return storedNodeOf(row.Device, row.CertificateNotAfter), nil
}

// storedNode is a node as stored, its JSON columns not parsed yet.
type storedNode struct {
	id, name, platform, agentVersion     string
	labels, reportedLabels, capabilities []byte
	createdAt                            time.Time
	revoked                              bool
	protocolVersion                      int32
	sessionID, attachedReplica           *string
	lastSeenAt                           *time.Time
	// certNotAfter is the expiry of its newest valid certificate; the epoch for none.
	certNotAfter time.Time
}

// storedNodeOf is a device row with its certificate's expiry as a storedNode.
func storedNodeOf(d dbsqlc.Device, certNotAfter time.Time) storedNode {
	return storedNode{
		id: d.ID, name: d.Name, platform: d.Platform, agentVersion: d.AgentVersion,
		labels: d.Labels, reportedLabels: d.ReportedLabels, capabilities: d.Capabilities,
		createdAt: d.CreatedAt, revoked: d.RevokedAt != nil, protocolVersion: d.ProtocolVersion,
		sessionID: d.SessionID, attachedReplica: d.AttachedReplica, lastSeenAt: d.LastSeenAt,
		certNotAfter: certNotAfter,
	}
}

// dispatchOf is a dispatch row, with the error that came with it, as a Dispatch.
func dispatchOf(r dbsqlc.Dispatch, err error) (Dispatch, error) {
	if err != nil {
		return Dispatch{}, err
	}
	d := Dispatch{
		ID: r.ID, NodeID: r.DeviceID, Capability: r.Capability, Input: string(r.Input), State: State(r.State),
		CreatedBy: r.CreatedBy, CreatedAt: r.CreatedAt, Deadline: r.Deadline, MaxOutputBytes: r.MaxOutputBytes,
		SentAt: r.SentAt, StartedAt: r.StartedAt, FinishedAt: r.FinishedAt,
		CancelRequestedAt: r.CancelRequestedAt, CancelReason: r.CancelReason,
		Result: string(r.Result), Error: r.Error, ExitCode: r.ExitCode, OutputBytes: r.OutputBytes,
		OutputTruncated: r.OutputTruncated, OutputStored: r.OutputStored, OutputLostReason: r.OutputLostReason,
	}
	if r.IdempotencyKey != nil {
		d.IdempotencyKey = *r.IdempotencyKey
	}
	return d, nil
}

// dispatchesOf is dispatch rows, with the error that came with them, as Dispatches.
func dispatchesOf(rows []dbsqlc.Dispatch, err error) ([]Dispatch, error) {
	if err != nil {
		return nil, err
	}
	out := make([]Dispatch, 0, len(rows))
	for _, r := range rows {
		d, _ := dispatchOf(r, nil)
		out = append(out, d)
	}
	return out, nil
}
