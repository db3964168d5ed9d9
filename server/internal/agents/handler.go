package agents

import (
	"context"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	agentsv1 "github.com/palyra/palyra/gen/go/palyra/agents/v1"
	"github.com/palyra/palyra/gen/go/palyra/agents/v1/agentsv1connect"
	"github.com/palyra/palyra/server/internal/access"
)

// Handler serves AgentService: the agents here, their runs in RunHandler.
type Handler struct {
	*RunHandler
	a *Agents
}

var _ agentsv1connect.AgentServiceHandler = (*Handler)(nil)

// NewHandler returns the AgentService handler of a and r.
func NewHandler(a *Agents, r *Runs) *Handler { return &Handler{RunHandler: NewRunHandler(r), a: a} }

// CreateAgent stores a new agent.
func (h *Handler) CreateAgent(ctx context.Context, req *connect.Request[agentsv1.CreateAgentRequest]) (*connect.Response[agentsv1.CreateAgentResponse], error) {
	p, err := access.Caller(ctx)
	if err != nil {
		return nil, err
	}
	ag, warnings, err := h.a.Create(ctx, req.Msg.GetSpec(), p.ID())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&agentsv1.CreateAgentResponse{Agent: AgentProto(ag), Warnings: warnings}), nil
}

// GetAgent returns an agent.
func (h *Handler) GetAgent(ctx context.Context, req *connect.Request[agentsv1.GetAgentRequest]) (*connect.Response[agentsv1.GetAgentResponse], error) {
	ag, warnings, err := h.a.Get(ctx, Ref{ID: req.Msg.GetId(), Name: req.Msg.GetName()})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&agentsv1.GetAgentResponse{Agent: AgentProto(ag), Warnings: warnings}), nil
}

// ListAgents lists agents.
func (h *Handler) ListAgents(ctx context.Context, req *connect.Request[agentsv1.ListAgentsRequest]) (*connect.Response[agentsv1.ListAgentsResponse], error) {
	list, next, err := h.a.List(ctx, req.Msg.GetLabelSelector(), int(req.Msg.GetPageSize()), req.Msg.GetPageToken())
	if err != nil {
		return nil, err
	}
	res := &agentsv1.ListAgentsResponse{Agents: make([]*agentsv1.Agent, len(list)), NextPageToken: next}
	for i, ag := range list {
		res.Agents[i] = AgentProto(ag)
	}
	return connect.NewResponse(res), nil
}

// UpdateAgent replaces an agent's definition.
func (h *Handler) UpdateAgent(ctx context.Context, req *connect.Request[agentsv1.UpdateAgentRequest]) (*connect.Response[agentsv1.UpdateAgentResponse], error) {
	p, err := access.Caller(ctx)
	if err != nil {
		return nil, err
	}
	m := req.Msg
	ag, warnings, err := h.a.Update(ctx, Ref{ID: m.GetId(), Name: m.GetName()}, m.GetSpec(), m.GetExpectedRevision(), p.ID())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&agentsv1.UpdateAgentResponse{Agent: AgentProto(ag), Warnings: warnings}), nil
}

// DeleteAgent deletes an agent.
func (h *Handler) DeleteAgent(ctx context.Context, req *connect.Request[agentsv1.DeleteAgentRequest]) (*connect.Response[agentsv1.DeleteAgentResponse], error) {
	m := req.Msg
	ag, err := h.a.Delete(ctx, Ref{ID: m.GetId(), Name: m.GetName()}, m.ExpectedRevision)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&agentsv1.DeleteAgentResponse{Agent: AgentProto(ag)}), nil
}

// SetDefaultAgent makes an agent the default.
func (h *Handler) SetDefaultAgent(ctx context.Context, req *connect.Request[agentsv1.SetDefaultAgentRequest]) (*connect.Response[agentsv1.SetDefaultAgentResponse], error) {
	ag, previous, err := h.a.SetDefault(ctx, Ref{ID: req.Msg.GetId(), Name: req.Msg.GetName()})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&agentsv1.SetDefaultAgentResponse{Agent: AgentProto(ag), PreviousName: previous}), nil
}

// AgentProto converts an agent.
func AgentProto(ag Agent) *agentsv1.Agent {
	return &agentsv1.Agent{
		Id: ag.ID, Spec: proto.CloneOf(ag.Spec), Revision: ag.Revision, IsDefault: ag.IsDefault,
		CreateTime: timestamppb.New(ag.CreatedAt), UpdateTime: timestamppb.New(ag.UpdatedAt),
		CreatedBy: ag.CreatedBy, UpdatedBy: ag.UpdatedBy,
	}
}
