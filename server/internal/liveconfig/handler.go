package liveconfig

import (
	"context"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	"github.com/palyra/palyra/gen/go/palyra/controlplane/v1/controlplanev1connect"
	"github.com/palyra/palyra/server/internal/access"
	"github.com/palyra/palyra/server/internal/config"
	"github.com/palyra/palyra/server/internal/errdefs"
)

// defaultPageSize is the page size of ListConfigRevisions when the request names none.
const defaultPageSize = 100

// Handler serves ConfigService.
type Handler struct {
	s *Service
}

var _ controlplanev1connect.ConfigServiceHandler = (*Handler)(nil)

// Handler returns the ConfigService handler of the Service.
func (s *Service) Handler() *Handler { return &Handler{s: s} }

// GetConfig returns every setting, or one, as in effect on this replica after reading
// the stored values.
func (h *Handler) GetConfig(ctx context.Context, req *connect.Request[controlplanev1.GetConfigRequest]) (*connect.Response[controlplanev1.GetConfigResponse], error) {
	snap, err := h.s.Reload(ctx)
	if err != nil {
		return nil, err
	}
	key := req.Msg.GetKey()
	res := &controlplanev1.GetConfigResponse{Revision: snap.Revision}
	for _, st := range snap.Config.Settings() {
		if key != "" && st.Key != key {
			continue
		}
		res.Settings = append(res.Settings, settingProto(snap, st))
	}
	if st, ok := config.Lookup(key); key != "" && len(res.Settings) == 0 && ok && !st.Template {
		// A provider's setting before the provider has any.
		res.Settings = append(res.Settings, settingProto(snap, st))
	}
	if key != "" && len(res.Settings) == 0 {
		if near := config.Suggest(key); near != "" {
			return nil, errdefs.New(errdefs.NotFound, "unknown setting %q; did you mean %q?", key, near)
		}
		return nil, errdefs.New(errdefs.NotFound, "unknown setting %q", key)
	}
	return connect.NewResponse(res), nil
}

// ValidateConfig checks a change without making it.
func (h *Handler) ValidateConfig(ctx context.Context, req *connect.Request[controlplanev1.ValidateConfigRequest]) (*connect.Response[controlplanev1.ValidateConfigResponse], error) {
	diffs, next, err := h.s.Validate(ctx, changeFromProto(req.Msg.GetChange()), req.Msg.ExpectedRevision)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&controlplanev1.ValidateConfigResponse{Changes: diffsProto(diffs, true), Revision: next}), nil
}

// UpdateConfig makes a change as one revision.
func (h *Handler) UpdateConfig(ctx context.Context, req *connect.Request[controlplanev1.UpdateConfigRequest]) (*connect.Response[controlplanev1.UpdateConfigResponse], error) {
	p, err := access.Caller(ctx)
	if err != nil {
		return nil, err
	}
	rev, diffs, err := h.s.Update(ctx, p.ID(), req.Msg.GetReason(), changeFromProto(req.Msg.GetChange()), req.Msg.ExpectedRevision)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&controlplanev1.UpdateConfigResponse{Revision: revisionProto(rev), Changes: diffsProto(diffs, true)}), nil
}

// ListConfigRevisions lists the revisions, newest first.
func (h *Handler) ListConfigRevisions(ctx context.Context, req *connect.Request[controlplanev1.ListConfigRevisionsRequest]) (*connect.Response[controlplanev1.ListConfigRevisionsResponse], error) {
	limit := int(req.Msg.GetPageSize())
	if limit == 0 {
		limit = defaultPageSize
	}
	revs, next, err := h.s.History(ctx, req.Msg.GetPageToken(), limit)
	if err != nil {
		return nil, err
	}
	res := &controlplanev1.ListConfigRevisionsResponse{NextPageToken: next}
	for _, r := range revs {
		res.Revisions = append(res.Revisions, revisionProto(r))
	}
	return connect.NewResponse(res), nil
}

// GetConfigRevision returns a revision and its changes.
func (h *Handler) GetConfigRevision(ctx context.Context, req *connect.Request[controlplanev1.GetConfigRevisionRequest]) (*connect.Response[controlplanev1.GetConfigRevisionResponse], error) {
	rev, diffs, err := h.s.GetRevision(ctx, req.Msg.GetRevision())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&controlplanev1.GetConfigRevisionResponse{Revision: revisionProto(rev), Changes: diffsProto(diffs, false)}), nil
}

// RollbackConfig restores a revision's stored values as a new revision.
func (h *Handler) RollbackConfig(ctx context.Context, req *connect.Request[controlplanev1.RollbackConfigRequest]) (*connect.Response[controlplanev1.RollbackConfigResponse], error) {
	p, err := access.Caller(ctx)
	if err != nil {
		return nil, err
	}
	rev, diffs, err := h.s.Rollback(ctx, p.ID(), req.Msg.GetReason(), req.Msg.GetRevision(), req.Msg.ExpectedRevision)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&controlplanev1.RollbackConfigResponse{Revision: revisionProto(rev), Changes: diffsProto(diffs, true)}), nil
}

// settingProto describes one setting as in effect in snap.
func settingProto(snap *Snapshot, st config.Setting) *controlplanev1.Setting {
	out := &controlplanev1.Setting{
		Key: st.Key, Source: sourceProto(snap.Config.Source(st.Key)), Runtime: st.Runtime, Type: st.Kind,
		Description: st.Usage, Secret: st.Secret, Revision: snap.StoredRevision(st.Key), SecretReference: st.SecretRef,
	}
	switch {
	case st.Runtime:
		out.ChangeHint = "palyra config set " + st.Key + " VALUE"
	default:
		out.ChangeHint = st.Where()
	}
	if st.Secret {
		// Only whether it is set: the master key's default is the key file.
		out.IsSet = snap.Config.Source(st.Key) != config.SourceDefault
		return out
	}
	out.Value = valueProto(snap.Config.Value(st.Key))
	return out
}

func sourceProto(s config.Source) controlplanev1.ConfigSource {
	switch s {
	case config.SourceFile:
		return controlplanev1.ConfigSource_CONFIG_SOURCE_FILE
	case config.SourceEnvironment:
		return controlplanev1.ConfigSource_CONFIG_SOURCE_ENVIRONMENT
	case config.SourceFlag:
		return controlplanev1.ConfigSource_CONFIG_SOURCE_FLAG
	case config.SourceDatabase:
		return controlplanev1.ConfigSource_CONFIG_SOURCE_DATABASE
	}
	return controlplanev1.ConfigSource_CONFIG_SOURCE_DEFAULT
}

func valueProto(v config.Value) *controlplanev1.ConfigValue {
	if v.List {
		return &controlplanev1.ConfigValue{Kind: &controlplanev1.ConfigValue_List{List: &controlplanev1.ConfigList{Items: v.Items}}}
	}
	return &controlplanev1.ConfigValue{Kind: &controlplanev1.ConfigValue_Text{Text: v.Text}}
}

func valueFromProto(v *controlplanev1.ConfigValue) config.Value {
	if l, ok := v.GetKind().(*controlplanev1.ConfigValue_List); ok {
		return config.Value{List: true, Items: l.List.GetItems()}
	}
	return config.Value{Text: v.GetText()}
}

func changeFromProto(c *controlplanev1.ConfigChangeSpec) Change {
	var out Change
	for _, s := range c.GetSet() {
		out.Set = append(out.Set, KeyValue{Key: s.GetKey(), Value: valueFromProto(s.GetValue())})
	}
	out.Unset = c.GetUnset()
	return out
}

// diffsProto describes diffs; effective adds the effective values, which a revision
// read back does not record.
func diffsProto(diffs []Diff, effective bool) []*controlplanev1.ConfigChange {
	out := make([]*controlplanev1.ConfigChange, len(diffs))
	for i, d := range diffs {
		c := &controlplanev1.ConfigChange{Key: d.Key, Op: d.Op}
		if !d.Secret {
			if d.Old != nil {
				c.OldValue = valueProto(*d.Old)
			}
			if d.New != nil {
				c.NewValue = valueProto(*d.New)
			}
			if effective {
				c.OldEffective, c.NewEffective = valueProto(d.OldEffective), valueProto(d.NewEffective)
			}
		}
		out[i] = c
	}
	return out
}

func revisionProto(r Revision) *controlplanev1.ConfigRevision {
	out := &controlplanev1.ConfigRevision{
		Revision: r.Revision, Actor: r.Actor, Reason: r.Reason, RollbackOf: r.RollbackOf, ChangeCount: int32(r.ChangeCount),
	}
	if !r.CreatedAt.IsZero() {
		out.CreateTime = timestamppb.New(r.CreatedAt)
	}
	return out
}
