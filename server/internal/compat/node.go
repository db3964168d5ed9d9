package compat

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	compatv1 "github.com/palyra/palyra/gen/go/palyra/compat/v1"
	"github.com/palyra/palyra/server/internal/access"
	"github.com/palyra/palyra/server/internal/audit"
	"github.com/palyra/palyra/server/internal/dispatch"
	"github.com/palyra/palyra/server/internal/errdefs"
	"github.com/palyra/palyra/server/internal/labels"
)

// The node provider: a model that no configured provider serves but that online nodes
// announce under llm.chat (chat completions, responses) or llm.embed (embeddings) is
// served by one of them, as a durable dispatch of that capability whose input is the
// request and whose output carries the chunks, one line of JSON each (llm.chat), or
// whose result is the answer.
//
// The nodes that may serve are those whose labels match compat.node_selector and the
// request's X-Palyra-Node-Selector header (package labels). A node's labels are those
// it reports (node.toml), overridden by those an administrator gave its device: the
// administrator's word wins over the node's claim.
const (
	// llmChat is the node capability that serves chat completions.
	llmChat = "llm.chat"
	// llmEmbed is the node capability that serves embeddings.
	llmEmbed = "llm.embed"
	// NodeOwner is the owned_by of the models nodes serve, and the provider name the
	// audit target gives them.
	NodeOwner = "node"
	// NodeSelectorHeader is the request header with a label selector that narrows the
	// nodes that may serve the request (beside compat.node_selector).
	NodeSelectorHeader = "X-Palyra-Node-Selector"
	// nodeTimeout is the deadline of a node dispatch; the node's own llm.timeout
	// usually ends a slow answer first.
	nodeTimeout = 10 * time.Minute
	// nodeMaxOutput caps a streamed completion's output (its chunks); more is an error.
	nodeMaxOutput = 64 << 20
	// presenceEvery is how often a followed dispatch's node is checked to still be
	// online: a node that went away ends the call within about this long.
	presenceEvery = time.Second
)

// Nodes is what the node provider asks of the dispatch runtime (dispatch.Service).
type Nodes interface {
	NodesOffering(ctx context.Context, capability string) ([]dispatch.Node, error)
	PresenceOf(ctx context.Context, id string) (dispatch.Presence, error)
	// InFlight counts the unfinished dispatches of capabilities on each node, across
	// replicas.
	InFlight(ctx context.Context, nodes, capabilities []string) (map[string]int, error)
	Create(ctx context.Context, r dispatch.Request) (dispatch.Dispatch, bool, error)
	Watch(ctx context.Context, id string, from int64, sendDispatch func(dispatch.Dispatch) error, sendOutput func(dispatch.OutputChunk) error) error
	Cancel(ctx context.Context, id, reason string) (dispatch.Dispatch, error)
	// Abandon ends a dispatch at once, its node gone, so that it is never delivered again.
	Abandon(ctx context.Context, id, reason string) (dispatch.Dispatch, error)
}

// servedModels returns the models a node serves under capability, none when the
// capability is unavailable.
func servedModels(n dispatch.Node, capability string) []string {
	for _, c := range n.Capabilities {
		if c.Name == capability && c.Available {
			return c.Models
		}
	}
	return nil
}

// headerKey is the context key of the selector header of a REST call.
type headerKey struct{}

// withSelectorHeader keeps the selector header of a REST call in its context (the
// Connect surface reads it from the call's own).
func withSelectorHeader(ctx context.Context, h http.Header) context.Context {
	return context.WithValue(ctx, headerKey{}, h.Values(NodeSelectorHeader))
}

// selectors are the selectors that choose the nodes of a call.
type selectors struct {
	config, request labels.Selector
}

// matches reports whether a node's labels match both.
func (s selectors) matches(n dispatch.Node) bool {
	l := n.EffectiveLabels()
	return s.config.Matches(l) && s.request.Matches(l)
}

// String names the selectors that are not empty, for a message.
func (s selectors) String() string {
	var parts []string
	if !s.config.Empty() {
		parts = append(parts, "compat.node_selector "+strconv.Quote(s.config.String()))
	}
	if !s.request.Empty() {
		parts = append(parts, NodeSelectorHeader+" "+strconv.Quote(s.request.String()))
	}
	return strings.Join(parts, " and ")
}

// nodeSelectors returns the call's selectors: compat.node_selector, and the request's
// header (repeated: its values joined by ","); a header that does not parse is Invalid,
// naming it.
func (h *Handler) nodeSelectors(ctx context.Context) (selectors, error) {
	values, ok := ctx.Value(headerKey{}).([]string)
	if !ok {
		if call, isCall := connect.CallInfoForHandlerContext(ctx); isCall {
			values = call.RequestHeader().Values(NodeSelectorHeader)
		}
	}
	req, err := labels.Parse(strings.Join(values, ","))
	if err != nil {
		return selectors{}, errdefs.InvalidField(NodeSelectorHeader, "the header is not a label selector (such as gpu=a100,zone in (eu-1,eu-2),!spot): %v", err)
	}
	return selectors{config: h.opts.Config().Compat.NodeSelector, request: req}, nil
}

// nodeModels lists the models online nodes that match the call's selectors serve, under
// llm.chat or llm.embed, sorted, without duplicates; none when there is no node provider.
func (h *Handler) nodeModels(ctx context.Context) ([]string, error) {
	if h.opts.Nodes == nil {
		return nil, nil
	}
	sel, err := h.nodeSelectors(ctx)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, capability := range []string{llmChat, llmEmbed} {
		nodes, err := h.opts.Nodes.NodesOffering(ctx, capability)
		if err != nil {
			return nil, err
		}
		for _, n := range nodes {
			if !n.Revoked && n.Presence == dispatch.PresenceOnline && sel.matches(n) {
				ids = append(ids, servedModels(n, capability)...)
			}
		}
	}
	slices.Sort(ids)
	return slices.Compact(ids), nil
}

// nodeRoute routes model to an online node that serves it under capability and matches
// the call's selectors: the one with the fewest dispatches of llm.chat and llm.embed in
// flight, counted in the database over every replica; among those with as few, one at
// random (so that replicas choosing at the same moment spread their calls). A model
// that matching nodes announce but none is online, or that only nodes the selectors
// exclude announce, is Unavailable (503); one no node announces is notFound.
func (h *Handler) nodeRoute(ctx context.Context, model, capability string, notFound error) (route, error) {
	if h.opts.Nodes == nil {
		return route{}, notFound
	}
	sel, err := h.nodeSelectors(ctx)
	if err != nil {
		return route{}, err
	}
	nodes, err := h.opts.Nodes.NodesOffering(ctx, capability)
	if err != nil {
		return route{}, err
	}
	var online []dispatch.Node
	announced, matching := false, false
	for _, n := range nodes {
		if n.Revoked || !slices.Contains(servedModels(n, capability), model) {
			continue
		}
		announced = true
		if !sel.matches(n) {
			continue
		}
		matching = true
		if n.Presence == dispatch.PresenceOnline {
			online = append(online, n)
		}
	}
	switch {
	case !announced:
		return route{}, notFound
	case !matching:
		return route{}, errdefs.New(errdefs.Unavailable,
			"no node serving the model %s matches the node selector %s: nodes serve it, but none with matching labels", quote(model), sel)
	case len(online) == 0 && sel.String() != "":
		return route{}, errdefs.New(errdefs.Unavailable,
			"no node serving the model %s that matches %s is online: start one (palyra node run) or wait for it to reconnect", quote(model), sel)
	case len(online) == 0:
		return route{}, errdefs.New(errdefs.Unavailable,
			"no node serving the model %s is online: start one (palyra node run) or wait for it to reconnect", quote(model))
	}
	best, err := h.leastBusy(ctx, online)
	if err != nil {
		return route{}, err
	}
	return route{provider: &nodeProvider{h: h, node: best, capability: capability}, name: NodeOwner, model: model, node: best.ID}, nil
}

// leastBusy returns the node with the fewest dispatches in flight, one at random among
// those with as few; a single node is chosen without asking the database.
func (h *Handler) leastBusy(ctx context.Context, nodes []dispatch.Node) (dispatch.Node, error) {
	if len(nodes) == 1 {
		return nodes[0], nil
	}
	ids := make([]string, len(nodes))
	for i, n := range nodes {
		ids[i] = n.ID
	}
	counts, err := h.opts.Nodes.InFlight(ctx, ids, []string{llmChat, llmEmbed})
	if err != nil {
		return dispatch.Node{}, err
	}
	var least []dispatch.Node
	for _, n := range nodes {
		switch {
		case len(least) == 0 || counts[n.ID] < counts[least[0].ID]:
			least = []dispatch.Node{n}
		case counts[n.ID] == counts[least[0].ID]:
			least = append(least, n)
		}
	}
	return least[rand.IntN(len(least))], nil
}

// nodeProvider serves a model on one node, under capability.
type nodeProvider struct {
	h          *Handler
	node       dispatch.Node
	capability string
}

// nodeRequest is a request a node answers: a ChatRequest or an EmbeddingRequest.
type nodeRequest interface {
	upstreamBody(model string) ([]byte, error)
}

// Chat implements Provider: the dispatch's result is the completion.
func (p *nodeProvider) Chat(ctx context.Context, req *ChatRequest, model string) (*Completion, error) {
	body, err := p.result(ctx, req, model, req.Model)
	if err != nil {
		return nil, err
	}
	var c struct {
		Object string `json:"object"`
		Usage  *Usage `json:"usage"`
	}
	if err := json.Unmarshal(body, &c); err != nil || c.Object != "chat.completion" {
		return nil, p.fail("answered with something that is not a chat completion")
	}
	return &Completion{Body: body, Usage: c.Usage}, nil
}

// StreamChat implements Provider: the dispatch's output lines are the chunks.
func (p *nodeProvider) StreamChat(ctx context.Context, req *ChatRequest, model string) (ChunkStream, error) {
	return p.start(ctx, req, model, req.Model)
}

// Embed implements Embedder: the dispatch's result is the embeddings list.
func (p *nodeProvider) Embed(ctx context.Context, req *EmbeddingRequest, model string) (*Embeddings, error) {
	body, err := p.result(ctx, req, model, req.Model)
	if err != nil {
		return nil, err
	}
	return embeddingsOf(NodeOwner+" "+p.node.Name, body)
}

// result runs the dispatch of req to its end and returns its result.
func (p *nodeProvider) result(ctx context.Context, req nodeRequest, model, asked string) ([]byte, error) {
	f, err := p.start(ctx, req, model, asked)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	for {
		if _, err := f.Next(); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, err
		}
	}
	return []byte(f.last.Result), nil
}

// fail is the node's failure: 502, "provider node NAME ...".
func (p *nodeProvider) fail(format string, args ...any) error {
	return providerError(NodeOwner+" "+p.node.Name, format, args...)
}

// start creates the dispatch of req, its model set to model, and follows it; asked is
// the model the client asked for, for the audit target.
func (p *nodeProvider) start(ctx context.Context, req nodeRequest, model, asked string) (*follow, error) {
	input, err := req.upstreamBody(model)
	if err != nil {
		return nil, err
	}
	by, err := access.Caller(ctx)
	if err != nil {
		return nil, err
	}
	d, _, err := p.h.opts.Nodes.Create(ctx, dispatch.Request{
		NodeID: p.node.ID, Capability: p.capability, Input: string(input), Timeout: nodeTimeout,
		MaxOutputBytes: nodeMaxOutput, CreatedBy: by.ID(),
	})
	if err != nil {
		return nil, err
	}
	audit.SetTarget(ctx, fmt.Sprintf("model:%s provider:%s node:%s dispatch:%s", asked, NodeOwner, p.node.ID, d.ID))
	fctx, cancel := context.WithCancelCause(ctx)
	f := &follow{p: p, ctx: ctx, cancel: cancel, id: d.ID, last: d, lines: make(chan []byte, 64), done: make(chan struct{})}
	go f.run(fctx)
	return f, nil
}

// errNodeGone ends a follow whose node went offline.
var errNodeGone = errors.New("node went offline")

// follow is a followed dispatch: its output's lines as they arrive, then its end.
type follow struct {
	p *nodeProvider
	// ctx is the call's context; cancel ends the follow.
	ctx    context.Context
	cancel context.CancelCauseFunc
	id     string
	// lines carries the output's lines; it is closed after err is set.
	lines chan []byte
	done  chan struct{}
	// err is the follow's end: nil when the dispatch succeeded.
	err error
	// gone is set with err when the node went offline.
	gone bool
	// last is the dispatch as last seen; final once done is closed.
	last  dispatch.Dispatch
	close sync.Once
}

// run watches the dispatch, and its node's presence, until the dispatch ended or the
// follow was cancelled.
func (f *follow) run(ctx context.Context) {
	defer close(f.done)
	defer close(f.lines)
	go f.watchNode(ctx)
	var pending []byte
	err := f.p.h.opts.Nodes.Watch(ctx, f.id, 0, func(d dispatch.Dispatch) error {
		f.last = d
		return nil
	}, func(o dispatch.OutputChunk) error {
		if o.Stream != "stdout" {
			return nil
		}
		pending = append(pending, o.Data...)
		for {
			i := bytes.IndexByte(pending, '\n')
			if i < 0 {
				return nil
			}
			line := bytes.Clone(pending[:i])
			pending = pending[i+1:]
			if len(bytes.TrimSpace(line)) == 0 {
				continue
			}
			select {
			case f.lines <- line:
			case <-ctx.Done():
				return context.Cause(ctx)
			}
		}
	})
	f.cancel(nil) // stops watchNode
	switch {
	case err == nil:
		f.err = f.ended(len(bytes.TrimSpace(pending)) > 0)
	case errors.Is(context.Cause(ctx), errNodeGone):
		f.gone = true
		f.err = f.p.fail("went offline before it finished the answer (dispatch %s)", f.id)
	default:
		f.err = err
	}
}

// watchNode cancels the follow with errNodeGone once the node is no longer online.
func (f *follow) watchNode(ctx context.Context) {
	t := time.NewTicker(presenceEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		p, err := f.p.h.opts.Nodes.PresenceOf(ctx, f.p.node.ID)
		if err == nil && p != dispatch.PresenceOnline || errdefs.KindOf(err) == errdefs.NotFound {
			f.cancel(errNodeGone)
			return
		}
	}
}

// ended is the error of the dispatch's end, nil when it succeeded with all its output;
// partial says the output ends in an unfinished line.
func (f *follow) ended(partial bool) error {
	d := f.last
	switch {
	case d.State == dispatch.StateSucceeded && d.OutputTruncated:
		return f.p.fail("answered with more than %d bytes (dispatch %s)", nodeMaxOutput, d.ID)
	case d.State == dispatch.StateSucceeded && partial:
		return f.p.fail("ended its answer in the middle of a chunk (dispatch %s)", d.ID)
	case d.State == dispatch.StateSucceeded:
		return nil
	case d.State == dispatch.StateCancelled:
		return f.p.fail("dispatch %s was cancelled: %s", d.ID, d.CancelReason)
	}
	var res struct {
		Status int `json:"status"`
		Error  struct {
			Message string `json:"message"`
		} `json:"error"`
		TimedOut bool `json:"timed_out"`
	}
	_ = json.Unmarshal([]byte(d.Result), &res)
	msg := res.Error.Message
	if msg == "" {
		msg = d.Error
	}
	if d.State == dispatch.StateTimedOut || res.TimedOut {
		return errdefs.New(errdefs.DeadlineExceeded, "node %s did not finish the answer in time (dispatch %s): %s", f.p.node.Name, d.ID, msg)
	}
	if res.Status >= 400 && res.Status < 500 && res.Status != 429 {
		return errdefs.New(errdefs.Invalid, "node %s's model server refused the request: %s", f.p.node.Name, msg)
	}
	return f.p.fail("failed (dispatch %s): %s", d.ID, msg)
}

// Next implements ChunkStream.
func (f *follow) Next() ([]byte, error) {
	line, ok := <-f.lines
	if ok {
		return line, nil
	}
	if f.err != nil {
		return nil, f.err
	}
	return nil, io.EOF
}

// Close implements ChunkStream: it stops following and ends the dispatch unless it
// ended. A dispatch whose node went offline is abandoned (cancelled at once, never to
// be delivered again when the node reconnects); otherwise (the client went away, or the
// call failed) its cancellation is asked for, and the node stops it and reports.
func (f *follow) Close() error {
	f.close.Do(func() {
		f.cancel(context.Canceled)
		<-f.done
		if f.last.State.Terminal() {
			return
		}
		ctx, cancel := context.WithTimeout(context.WithoutCancel(f.ctx), 5*time.Second)
		defer cancel()
		var err error
		switch {
		case f.gone:
			_, err = f.p.h.opts.Nodes.Abandon(ctx, f.id, fmt.Sprintf("node %s went offline before it finished the answer", f.p.node.Name))
		case f.err != nil && f.ctx.Err() == nil:
			_, err = f.p.h.opts.Nodes.Cancel(ctx, f.id, "the call failed: "+f.err.Error())
		default:
			_, err = f.p.h.opts.Nodes.Cancel(ctx, f.id, "the client went away")
		}
		if err != nil && errdefs.KindOf(err) != errdefs.FailedPrecondition {
			f.p.h.log.Warn("compat: node dispatch not ended", "dispatch_id", f.id, "err", err)
		}
	})
	return nil
}

// ModelIDs returns the ids of the models ListModels lists, whether or not the
// compat_api flag is on: the models an agent may use.
func (h *Handler) ModelIDs(ctx context.Context) ([]string, error) {
	ms, err := h.allModels(ctx)
	if err != nil {
		return nil, err
	}
	ids := make([]string, len(ms))
	for i, m := range ms {
		ids[i] = m.GetId()
	}
	return ids, nil
}

// allModels lists the configured models (models), then those only online nodes serve,
// owned by NodeOwner, then the agents' (agent.go), owned by AgentOwner.
func (h *Handler) allModels(ctx context.Context) ([]*compatv1.Model, error) {
	out := models(h.opts.Config())
	ids, err := h.nodeModels(ctx)
	if err != nil {
		return nil, err
	}
	for _, id := range ids {
		if !slices.ContainsFunc(out, func(m *compatv1.Model) bool { return m.GetId() == id }) {
			out = append(out, &compatv1.Model{Id: id, OwnedBy: NodeOwner})
		}
	}
	agents, err := h.agentModels(ctx)
	if err != nil {
		return nil, err
	}
	return withAgents(out, agents), nil
}
