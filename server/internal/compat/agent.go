package compat

import (
	"context"
	"encoding/json"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	compatv1 "github.com/palyra/palyra/gen/go/palyra/compat/v1"
	"github.com/palyra/palyra/server/internal/access"
	"github.com/palyra/palyra/server/internal/errdefs"
)

// Agents as models: "agent:NAME" runs the agent NAME, and "agent:" alone the default
// agent, on the request's messages (system, developer, user and assistant; the
// client's tools are ignored, the agent's own serve), and answers with the run's
// answer and the run's total usage. The caller needs agents.run beside the API's own
// permission. Each of the run's model calls records its own usage against the caller,
// so the call records none of its own. A stream carries the text of each of the run's
// model calls as it comes, and each tool call's start and end and each pending approval
// as a chat.completion.chunk without choices whose "palyra" member holds the event: the
// official SDKs pass such a chunk on like the usage chunk, and code that reads
// choices skips it.

const (
	// AgentPrefix begins the model id of an agent: "agent:NAME", or "agent:" for the
	// default agent.
	AgentPrefix = "agent:"
	// AgentOwner is the owned_by of the agents' models, and the provider name the audit
	// target gives them.
	AgentOwner = "agent"
)

// Agents runs the agents served as models (agents.Runs); the daemon gives it to the
// Handler (SetAgents), as compat does not import agents.
type Agents interface {
	// AgentNames lists the agents' names, sorted.
	AgentNames(ctx context.Context) ([]string, error)
	// RunAgent runs the agent name ("" for the default one) on msgs as ctx's principal
	// and returns its answer once the run ended; a run that did not succeed is an error.
	// event, when not nil, gets the run's events as they happen.
	RunAgent(ctx context.Context, name string, msgs []Message, event func(AgentEvent)) (AgentAnswer, error)
}

// AgentEvent is an event of an agent's run: a piece of text, or a Palyra event.
type AgentEvent struct {
	// RunID is the run's id.
	RunID string
	// Text is a piece of a model call's text.
	Text string
	// Palyra, when not nil, is a tool call's start or end or a pending approval, as JSON,
	// sent to streaming clients as the "palyra" member of a chunk without choices.
	Palyra json.RawMessage
}

// AgentAnswer is the end of a run that succeeded.
type AgentAnswer struct {
	RunID string
	Text  string
	Usage Usage
}

// SetAgents makes the agents served as models; call it before serving. Without it no
// agent is a model.
func (h *Handler) SetAgents(a Agents) { h.agents = a }

// agentModels lists "agent:NAME" for each agent.
func (h *Handler) agentModels(ctx context.Context) ([]*compatv1.Model, error) {
	if h.agents == nil {
		return nil, nil
	}
	names, err := h.agents.AgentNames(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]*compatv1.Model, len(names))
	for i, n := range names {
		out[i] = &compatv1.Model{Id: AgentPrefix + n, OwnedBy: AgentOwner}
	}
	return out, nil
}

// agentRoute routes "agent:NAME" to the agent, refusing a caller without agents.run.
func (h *Handler) agentRoute(ctx context.Context, model string) (route, error) {
	name := strings.TrimPrefix(model, AgentPrefix)
	if h.agents == nil {
		return route{}, modelNotFound(model)
	}
	p, err := access.Caller(ctx)
	if err != nil {
		return route{}, err
	}
	if !p.Permissions.Has(access.AgentsRun) {
		return route{}, errdefs.New(errdefs.PermissionDenied, "the model %s runs an agent, which needs the permission %s; %s lacks it",
			quote(model), access.AgentsRun, p.ID())
	}
	return route{provider: &agentProvider{agents: h.agents, name: name, now: h.opts.Now}, name: AgentOwner, model: model, agent: true}, nil
}

// agentProvider serves the model of one agent.
type agentProvider struct {
	agents Agents
	name   string
	now    func() time.Time
}

// agentMessages are a request's messages as a run's input: developer is system; tool
// and function messages answer tool calls of the client's own, which an agent does not
// make.
func agentMessages(req *ChatRequest) ([]Message, error) {
	out := make([]Message, 0, len(req.Messages))
	for i, m := range req.Messages {
		switch m.Role {
		case "system", "user", "assistant":
		case "developer":
			m.Role = "system"
		default:
			return nil, invalid("messages["+strconv.Itoa(i)+"].role", "%s messages are not taken by agent models (their tools are the agent's): use system, developer, user or assistant", quote(m.Role))
		}
		out = append(out, m)
	}
	return out, nil
}

// Chat implements Provider: the run's answer as one completion.
func (p *agentProvider) Chat(ctx context.Context, req *ChatRequest, model string) (*Completion, error) {
	msgs, err := agentMessages(req)
	if err != nil {
		return nil, err
	}
	a, err := p.agents.RunAgent(ctx, p.name, msgs, nil)
	if err != nil {
		return nil, err
	}
	usage := a.Usage
	usage.TotalTokens = usage.PromptTokens + usage.CompletionTokens
	body, err := completionBody("chatcmpl-"+a.RunID, p.now().Unix(), model, a.Text, &usage)
	if err != nil {
		return nil, err
	}
	return &Completion{Body: body, Usage: &usage}, nil
}

// StreamChat implements Provider: the run's events as chunks as they happen, then a
// chunk with finish_reason "stop" and the usage chunk.
func (p *agentProvider) StreamChat(ctx context.Context, req *ChatRequest, model string) (ChunkStream, error) {
	msgs, err := agentMessages(req)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	s := &agentStream{model: model, created: p.now().Unix(), chunks: make(chan []byte, 64), cancel: cancel}
	s.pending = append(s.pending, s.chunk(map[string]any{"role": "assistant", "content": ""}, nil, nil, nil))
	go func() {
		defer close(s.chunks)
		a, err := p.agents.RunAgent(ctx, p.name, msgs, func(ev AgentEvent) {
			s.mu.Lock()
			s.id = "chatcmpl-" + ev.RunID
			s.mu.Unlock()
			var c []byte
			if ev.Palyra != nil {
				c = s.chunk(nil, nil, nil, ev.Palyra)
			} else {
				c = s.chunk(map[string]any{"content": ev.Text}, nil, nil, nil)
			}
			select {
			case s.chunks <- c:
			case <-ctx.Done():
			}
		})
		if err != nil {
			s.err = err
			return
		}
		s.mu.Lock()
		s.id = "chatcmpl-" + a.RunID
		s.mu.Unlock()
		stop := "stop"
		usage := a.Usage
		usage.TotalTokens = usage.PromptTokens + usage.CompletionTokens
		for _, c := range [][]byte{s.chunk(map[string]any{}, &stop, nil, nil), s.chunk(nil, nil, &usage, nil)} {
			select {
			case s.chunks <- c:
			case <-ctx.Done():
				return
			}
		}
	}()
	return s, nil
}

// agentStream is a run's chunks as they come.
type agentStream struct {
	model   string
	created int64
	cancel  context.CancelFunc
	pending [][]byte
	// chunks carries the chunks; it is closed after err is set.
	chunks chan []byte
	err    error
	mu     sync.Mutex
	// id is the completion's id: "chatcmpl-<run id>" once the run is known, a
	// placeholder before.
	id string
}

// chunk makes a chunk: with delta (and finish, when not nil) a choice; else none, with
// usage or the palyra event.
func (s *agentStream) chunk(delta map[string]any, finish *string, usage *Usage, palyra json.RawMessage) []byte {
	s.mu.Lock()
	id := s.id
	s.mu.Unlock()
	if id == "" {
		id = "chatcmpl-agent"
	}
	out := map[string]any{"id": id, "object": "chat.completion.chunk", "created": s.created, "model": s.model, "choices": []any{}}
	if delta != nil {
		out["choices"] = []any{map[string]any{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": nil}}
	}
	if usage != nil {
		out["usage"] = usage
	}
	if palyra != nil {
		out["palyra"] = palyra
	}
	b, _ := json.Marshal(out)
	return b
}

// Next implements ChunkStream.
func (s *agentStream) Next() ([]byte, error) {
	if len(s.pending) > 0 {
		c := s.pending[0]
		s.pending = s.pending[1:]
		return c, nil
	}
	c, ok := <-s.chunks
	if ok {
		return c, nil
	}
	if s.err != nil {
		return nil, s.err
	}
	return nil, io.EOF
}

// Close implements ChunkStream: it stops waiting for the run, which goes on (CancelRun
// stops it).
func (s *agentStream) Close() error {
	s.cancel()
	for range s.chunks {
	}
	return nil
}

// isAgentModel reports whether model names an agent.
func isAgentModel(model string) bool { return strings.HasPrefix(model, AgentPrefix) }

// withAgents adds the agents' models to ms, after the others.
func withAgents(ms, agents []*compatv1.Model) []*compatv1.Model {
	for _, m := range agents {
		if !slices.ContainsFunc(ms, func(o *compatv1.Model) bool { return o.GetId() == m.GetId() }) {
			ms = append(ms, m)
		}
	}
	return ms
}
