// Package relay is the naive durable relay of PERF-BASELINES.md ("relay + Postgres",
// synchronous commit on): the durable-dispatch floor a competent engineer writes in an
// afternoon. BenchmarkPeers (bench/peers_test.go) runs it as a process of its own
// (bench/cmd/durablerelay), as palyrad runs, and sets Palyra's dispatch against it.
//
// The protocol, in the order of one dispatch:
//
//  1. A node opens the Stream (a Connect bidi stream, one per node, kept open) and sends
//     a hello (id 0). The relay keeps the stream of the last node that said hello.
//  2. A client calls Dispatch (unary, Connect protocol) with a payload.
//  3. The relay INSERTs the dispatch (one autocommit statement: a synchronous commit),
//  4. sends the payload behind an 8-byte id on the node's stream,
//  5. the node answers with the same message,
//  6. the relay routes the answer by its id to the waiting call, UPDATEs the row with
//     the result (a second synchronous commit) and replies with it.
//
// Both handlers use connect.WithCompressMinBytes(1024), as the floor's relay and
// palyrad do: no gzip of small messages.
package relay

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/oklog/ulid/v2"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Procedures of the relay: the clients' unary call and the nodes' stream.
const (
	DispatchProcedure = "/perf.v1.Dispatch/Dispatch"
	StreamProcedure   = "/perf.v1.Node/Stream"
)

// Schema is the table of PERF-BASELINES.md's relay + Postgres: a time-ordered 16-byte
// key and one secondary index.
const Schema = `create table if not exists dispatch (id uuid primary key, node_id text not null,
	method text not null, payload bytea, state text not null, result bytea,
	created_at timestamptz not null default now(), completed_at timestamptz);
create index if not exists dispatch_node_created on dispatch (node_id, created_at)`

const (
	insertSQL = `insert into dispatch (id, node_id, method, payload, state) values ($1, $2, $3, $4, 'sent')`
	updateSQL = `update dispatch set state = 'done', result = $2, completed_at = now() where id = $1`
)

// nodeID is the node_id of every row: the relay serves one node.
const nodeID = "node-1"

// idLen is the length of the id in front of every message on the stream.
const idLen = 8

// Relay serves Dispatch and Stream. The zero value is not usable; call New.
type Relay struct {
	pool     *pgxpool.Pool
	attached func()
	nextID   atomic.Uint64
	node     atomic.Pointer[node]
	// pending holds, by id, the channel (buffer 1) of each call waiting for its answer.
	pending sync.Map
}

// node is an attached node's stream.
type node struct {
	mu     sync.Mutex // guards stream's sending side: one sender at a time
	stream *connect.BidiStream[wrapperspb.BytesValue, wrapperspb.BytesValue]
}

// New returns a relay that persists into pool (which must hold Schema) and calls
// attached, when not nil, each time a node has said hello.
func New(pool *pgxpool.Pool, attached func()) *Relay {
	return &Relay{pool: pool, attached: attached}
}

// Handler serves the relay's two procedures.
func (r *Relay) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle(DispatchProcedure, connect.NewUnaryHandler(DispatchProcedure, r.dispatch, connect.WithCompressMinBytes(1024)))
	mux.Handle(StreamProcedure, connect.NewBidiStreamHandler(StreamProcedure, r.stream, connect.WithCompressMinBytes(1024)))
	return mux
}

// dispatch is steps 2–6 of the protocol.
func (r *Relay) dispatch(ctx context.Context, req *connect.Request[wrapperspb.BytesValue]) (*connect.Response[wrapperspb.BytesValue], error) {
	n := r.node.Load()
	if n == nil {
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("no node attached"))
	}
	key := [16]byte(ulid.Make())
	payload := req.Msg.GetValue()
	if _, err := r.pool.Exec(ctx, insertSQL, key, nodeID, DispatchProcedure, payload); err != nil {
		return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("insert: %w", err))
	}
	id := r.nextID.Add(1)
	answer := make(chan []byte, 1)
	r.pending.Store(id, answer)
	defer r.pending.Delete(id)
	if err := n.send(frame(id, payload)); err != nil {
		return nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf("send to the node: %w", err))
	}
	var result []byte
	select {
	case result = <-answer:
	case <-ctx.Done():
		return nil, connect.NewError(connect.CodeDeadlineExceeded, ctx.Err())
	}
	if _, err := r.pool.Exec(ctx, updateSQL, key, result); err != nil {
		return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("update: %w", err))
	}
	return connect.NewResponse(wrapperspb.Bytes(result)), nil
}

// send sends one message on the node's stream.
func (n *node) send(msg []byte) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.stream.Send(wrapperspb.Bytes(msg))
}

// stream is step 1, then routes the node's answers (step 6) until the stream ends. It
// runs on the stream's handler goroutine.
func (r *Relay) stream(_ context.Context, s *connect.BidiStream[wrapperspb.BytesValue, wrapperspb.BytesValue]) error {
	if _, err := s.Receive(); err != nil {
		return fmt.Errorf("hello: %w", err)
	}
	n := &node{stream: s}
	r.node.Store(n)
	defer r.node.CompareAndSwap(n, nil)
	if r.attached != nil {
		r.attached()
	}
	for {
		m, err := s.Receive()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		id, result, ok := split(m.GetValue())
		if !ok {
			return connect.NewError(connect.CodeInvalidArgument, errors.New("a message shorter than its id"))
		}
		if answer, ok := r.pending.Load(id); ok {
			answer.(chan []byte) <- result
		}
	}
}

// RunNode is the node: it opens the Stream of the relay at baseURL through hc, says
// hello, then answers every message with itself, until ctx ends or the stream fails.
func RunNode(ctx context.Context, hc connect.HTTPClient, baseURL string) error {
	client := connect.NewClient[wrapperspb.BytesValue, wrapperspb.BytesValue](hc, baseURL+StreamProcedure)
	s := client.CallBidiStream(ctx)
	defer s.CloseResponse()
	if err := s.Send(wrapperspb.Bytes(frame(0, nil))); err != nil {
		return fmt.Errorf("hello: %w", err)
	}
	for {
		m, err := s.Receive()
		if err != nil {
			return err
		}
		if err := s.Send(m); err != nil {
			return err
		}
	}
}

// frame puts id in front of payload.
func frame(id uint64, payload []byte) []byte {
	b := make([]byte, idLen, idLen+len(payload))
	binary.BigEndian.PutUint64(b, id)
	return append(b, payload...)
}

// split is frame's inverse.
func split(b []byte) (id uint64, payload []byte, ok bool) {
	if len(b) < idLen {
		return 0, nil, false
	}
	return binary.BigEndian.Uint64(b), b[idLen:], true
}
