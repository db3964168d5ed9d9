package agents

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/palyra/palyra/gen/dbsqlc"
	agentsv1 "github.com/palyra/palyra/gen/go/palyra/agents/v1"
	"github.com/palyra/palyra/server/internal/errdefs"
	"github.com/palyra/palyra/server/internal/store"
)

// agentRow is a definition as the agents table stores it.
type agentRow struct {
	ID, Name, Description, Model, SystemPrompt string
	// Tools is a JSON array of protojson Tools; Labels a JSON object.
	Tools, Labels            []byte
	MaxSteps, MaxToolCalls   int32
	MaxTokens, DeadlineMilli int64
}

// toRow converts a normalized definition.
func toRow(spec *agentsv1.AgentSpec) (agentRow, error) {
	var tools bytes.Buffer
	tools.WriteByte('[')
	for i, t := range spec.GetTools() {
		if i > 0 {
			tools.WriteByte(',')
		}
		b, err := protojson.Marshal(t)
		if err != nil {
			return agentRow{}, fmt.Errorf("tool %s: %w", t.GetName(), err)
		}
		tools.Write(b)
	}
	tools.WriteByte(']')
	labels := []byte("{}")
	if len(spec.GetLabels()) > 0 {
		var err error
		if labels, err = json.Marshal(spec.GetLabels()); err != nil {
			return agentRow{}, fmt.Errorf("labels: %w", err)
		}
	}
	l := spec.GetLimits()
	return agentRow{
		Name: spec.GetName(), Description: spec.GetDescription(), Model: spec.GetModel(), SystemPrompt: spec.GetSystemPrompt(),
		Tools: tools.Bytes(), Labels: labels,
		MaxSteps: int32(l.GetMaxSteps()), MaxToolCalls: int32(l.GetMaxToolCalls()),
		MaxTokens: int64(l.GetMaxTokens()), DeadlineMilli: l.GetDeadline().AsDuration().Milliseconds(),
	}, nil
}

// agentOf converts a stored agent.
func agentOf(r dbsqlc.Agent) (Agent, error) {
	var raw []json.RawMessage
	if err := json.Unmarshal(r.Tools, &raw); err != nil {
		return Agent{}, fmt.Errorf("agent %s: tools: %w", r.ID, err)
	}
	spec := &agentsv1.AgentSpec{
		Name: r.Name, Description: r.Description, Model: r.Model, SystemPrompt: r.SystemPrompt,
		Tools: make([]*agentsv1.Tool, len(raw)),
		Limits: &agentsv1.AgentLimits{
			MaxSteps: uint32(r.MaxSteps), MaxToolCalls: uint32(r.MaxToolCalls), MaxTokens: uint64(r.MaxTokens),
			Deadline: durationpb.New(time.Duration(r.DeadlineMs) * time.Millisecond),
		},
	}
	for i, b := range raw {
		spec.Tools[i] = &agentsv1.Tool{}
		if err := protojson.Unmarshal(b, spec.Tools[i]); err != nil {
			return Agent{}, fmt.Errorf("agent %s: tool %d: %w", r.ID, i, err)
		}
	}
	if err := json.Unmarshal(r.Labels, &spec.Labels); err != nil {
		return Agent{}, fmt.Errorf("agent %s: labels: %w", r.ID, err)
	}
	return Agent{
		ID: r.ID, Spec: spec, Revision: r.Revision, IsDefault: r.IsDefault,
		CreatedAt: r.CreatedAt.UTC(), CreatedBy: r.CreatedBy, UpdatedAt: r.UpdatedAt.UTC(), UpdatedBy: r.UpdatedBy,
	}, nil
}

// insertAgent stores a new agent.
func insertAgent(ctx context.Context, tx *store.Tx, r agentRow, now time.Time, by string) (Agent, error) {
	row, err := tx.Q().InsertAgent(ctx, dbsqlc.InsertAgentParams{
		ID: r.ID, Name: r.Name, Description: r.Description, Model: r.Model, SystemPrompt: r.SystemPrompt, Tools: r.Tools,
		MaxSteps: r.MaxSteps, MaxToolCalls: r.MaxToolCalls, MaxTokens: r.MaxTokens, DeadlineMs: r.DeadlineMilli,
		Labels: r.Labels, Now: now, By: by,
	})
	if err != nil {
		return Agent{}, err
	}
	return agentOf(row)
}

// updateAgent stores r as the next revision of agent r.ID.
func updateAgent(ctx context.Context, tx *store.Tx, r agentRow, now time.Time, by string) (Agent, error) {
	row, err := tx.Q().UpdateAgent(ctx, dbsqlc.UpdateAgentParams{
		ID: r.ID, Name: r.Name, Description: r.Description, Model: r.Model, SystemPrompt: r.SystemPrompt, Tools: r.Tools,
		MaxSteps: r.MaxSteps, MaxToolCalls: r.MaxToolCalls, MaxTokens: r.MaxTokens, DeadlineMs: r.DeadlineMilli,
		Labels: r.Labels, Now: now, By: by,
	})
	if err != nil {
		return Agent{}, err
	}
	return agentOf(row)
}

// getAgent reads the agent ref; NotFound when there is none.
func getAgent(ctx context.Context, q *dbsqlc.Queries, ref Ref) (Agent, error) {
	return readAgent(ctx, ref, q.GetAgentByID, q.GetAgentByName)
}

// getDefaultAgent reads the default agent; FailedPrecondition when there is none.
func getDefaultAgent(ctx context.Context, q *dbsqlc.Queries) (Agent, error) {
	row, err := q.GetDefaultAgent(ctx)
	if errors.Is(err, store.ErrNotFound) {
		return Agent{}, errdefs.Wrap(err, errdefs.FailedPrecondition, "there is no default agent: make one the default with `palyra agents set-default NAME`")
	}
	if err != nil {
		return Agent{}, err
	}
	return agentOf(row)
}

// lockAgent reads the agent ref and locks it until tx ends; NotFound when there is none.
func lockAgent(ctx context.Context, tx *store.Tx, ref Ref) (Agent, error) {
	q := tx.Q()
	return readAgent(ctx, ref, q.LockAgentByID, q.LockAgentByName)
}

// readAgent reads the agent ref with the query by its id or by its name.
func readAgent(ctx context.Context, ref Ref, byID, byName func(context.Context, string) (dbsqlc.Agent, error)) (Agent, error) {
	read, key := byName, ref.Name
	if ref.ID != "" {
		read, key = byID, ref.ID
	}
	row, err := read(ctx, key)
	if err != nil {
		return Agent{}, notFound(ref, err)
	}
	return agentOf(row)
}

// listAgents reads up to limit agents by name after the name after, and whether there
// may be more.
func listAgents(ctx context.Context, q *dbsqlc.Queries, after string, limit int) ([]Agent, bool, error) {
	rows, err := q.ListAgents(ctx, dbsqlc.ListAgentsParams{AfterName: after, MaxRows: int32(limit)})
	if err != nil {
		return nil, false, err
	}
	out := make([]Agent, len(rows))
	for i, r := range rows {
		if out[i], err = agentOf(r); err != nil {
			return nil, false, err
		}
	}
	return out, len(rows) == limit, nil
}

// deleteAgent deletes agent id.
func deleteAgent(ctx context.Context, tx *store.Tx, id string) error {
	return tx.Q().DeleteAgent(ctx, id)
}

// setDefault moves the default mark to agent id.
func setDefault(ctx context.Context, tx *store.Tx, id string) error {
	if err := tx.Q().ClearDefaultAgent(ctx); err != nil {
		return err
	}
	_, err := tx.Q().MarkDefaultAgent(ctx, id)
	return err
}

// notFound turns the store's NotFound into the domain's.
func notFound(ref Ref, err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return errdefs.Wrap(err, errdefs.NotFound, "there is no %s", ref)
	}
	return err
}

// encodePageToken and decodePageToken carry the name a page of agents ends with.
func encodePageToken(name string) string {
	return base64.RawURLEncoding.EncodeToString([]byte("agents:" + name))
}

func decodePageToken(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	name, ok := bytes.CutPrefix(b, []byte("agents:"))
	if err != nil || !ok || !nameRE.Match(name) {
		return "", errdefs.InvalidField("page_token", "not a page token of ListAgents")
	}
	return string(name), nil
}
