package compat

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	compatv1 "github.com/palyra/palyra/gen/go/palyra/compat/v1"
	"github.com/palyra/palyra/server/internal/access"
	"github.com/palyra/palyra/server/internal/audit"
	"github.com/palyra/palyra/server/internal/dispatch"
	"github.com/palyra/palyra/server/internal/errdefs"
)

// The node provider: a model that no configured provider serves but that online nodes
// announce under llm.chat is served by one of them, as a durable dispatch of llm.chat
// whose input is the request and whose output carries the chunks, one line of JSON
// each.
const (
	// llmChat is the node capability that serves chat completions.
	llmChat = "llm.chat"
	// NodeOwner is the owned_by of the models nodes serve, and the provider name the
	// audit target gives them.
	NodeOwner = "node"
	// nodeTimeout is the deadline of a chat completion's dispatch; the node's own
	// llm.timeout usually ends a slow answer first.
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
	Create(ctx context.Context, r dispatch.Request) (dispatch.Dispatch, bool, error)
	Watch(ctx context.Context, id string, from int64, sendDispatch func(dispatch.Dispatch) error, sendOutput func(dispatch.OutputChunk) error) error
	Cancel(ctx context.Context, id, reason string) (dispatch.Dispatch, error)
}

// inflight counts this replica's chat completions in flight on each node.
type inflight struct {
	mu sync.Mutex
	n  map[string]int
}

// add changes a node's count by d.
func (f *inflight) add(node string, d int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n == nil {
		f.n = map[string]int{}
	}
	f.n[node] += d
	if f.n[node] <= 0 {
		delete(f.n, node)
	}
}

// get returns a node's count.
func (f *inflight) get(node string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n[node]
}

// chatModels returns the models a node serves under llm.chat, none when the
// capability is unavailable.
func chatModels(n dispatch.Node) []string {
	for _, c := range n.Capabilities {
		if c.Name == llmChat && c.Available {
			return c.Models
		}
	}
	return nil
}

// nodeModels lists the models online nodes serve, sorted, without duplicates; none
// when there is no node provider.
func (h *Handler) nodeModels(ctx context.Context) ([]string, error) {
	if h.opts.Nodes == nil {
		return nil, nil
	}
	nodes, err := h.opts.Nodes.NodesOffering(ctx, llmChat)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, n := range nodes {
		if !n.Revoked && n.Presence == dispatch.PresenceOnline {
			ids = append(ids, chatModels(n)...)
		}
	}
	slices.Sort(ids)
	return slices.Compact(ids), nil
}

// nodeRoute routes model to the online node that serves it with the fewest of this
// replica's requests in flight (ties: the first listed, the newest node). A model only
// offline nodes announce is Unavailable (503); one no node announces is notFound.
func (h *Handler) nodeRoute(ctx context.Context, model string, notFound error) (route, error) {
	if h.opts.Nodes == nil {
		return route{}, notFound
	}
	nodes, err := h.opts.Nodes.NodesOffering(ctx, llmChat)
	if err != nil {
		return route{}, err
	}
	var best *dispatch.Node
	known := false
	for i, n := range nodes {
		if n.Revoked || !slices.Contains(chatModels(n), model) {
			continue
		}
		known = true
		if n.Presence == dispatch.PresenceOnline && (best == nil || h.inflight.get(n.ID) < h.inflight.get(best.ID)) {
			best = &nodes[i]
		}
	}
	switch {
	case best != nil:
		return route{provider: &nodeProvider{h: h, node: *best}, name: NodeOwner, model: model, node: best.ID}, nil
	case known:
		return route{}, errdefs.New(errdefs.Unavailable,
			"no node serving the model %s is online: start one (palyra node run) or wait for it to reconnect", quote(model))
	}
	return route{}, notFound
}

// nodeProvider serves a model on one node.
type nodeProvider struct {
	h    *Handler
	node dispatch.Node
}

// Chat implements Provider: the dispatch's result is the completion.
func (p *nodeProvider) Chat(ctx context.Context, req *ChatRequest, model string) (*Completion, error) {
	f, err := p.start(ctx, req, model)
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
	body := []byte(f.last.Result)
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
	return p.start(ctx, req, model)
}

// fail is the node's failure: 502, "provider node NAME ...".
func (p *nodeProvider) fail(format string, args ...any) error {
	return providerError(NodeOwner+" "+p.node.Name, format, args...)
}

// start creates the dispatch and follows it.
func (p *nodeProvider) start(ctx context.Context, req *ChatRequest, model string) (*follow, error) {
	input, err := req.upstreamBody(model)
	if err != nil {
		return nil, err
	}
	by, err := access.Caller(ctx)
	if err != nil {
		return nil, err
	}
	p.h.inflight.add(p.node.ID, 1)
	d, _, err := p.h.opts.Nodes.Create(ctx, dispatch.Request{
		NodeID: p.node.ID, Capability: llmChat, Input: string(input), Timeout: nodeTimeout,
		MaxOutputBytes: nodeMaxOutput, CreatedBy: by.ID(),
	})
	if err != nil {
		p.h.inflight.add(p.node.ID, -1)
		return nil, err
	}
	audit.SetTarget(ctx, fmt.Sprintf("model:%s provider:%s node:%s dispatch:%s", req.Model, NodeOwner, p.node.ID, d.ID))
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

// Close implements ChunkStream: it stops following and cancels the dispatch unless it
// ended (the client went away, or the call failed).
func (f *follow) Close() error {
	f.close.Do(func() {
		f.cancel(context.Canceled)
		<-f.done
		f.p.h.inflight.add(f.p.node.ID, -1)
		if f.last.State.Terminal() {
			return
		}
		reason := "the client went away"
		if f.err != nil && f.ctx.Err() == nil {
			reason = "the call failed: " + f.err.Error()
		}
		ctx, cancel := context.WithTimeout(context.WithoutCancel(f.ctx), 5*time.Second)
		defer cancel()
		if _, err := f.p.h.opts.Nodes.Cancel(ctx, f.id, reason); err != nil && errdefs.KindOf(err) != errdefs.FailedPrecondition {
			f.p.h.log.Warn("compat: node dispatch not cancelled", "dispatch_id", f.id, "err", err)
		}
	})
	return nil
}

// allModels lists the configured models (models), then those only online nodes serve,
// owned by NodeOwner.
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
	return out, nil
}
