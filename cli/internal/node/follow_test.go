package node

import (
	"context"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/palyra/palyra/cli/internal/client"
	nodev1 "github.com/palyra/palyra/gen/go/palyra/node/v1"
	"github.com/palyra/palyra/gen/go/palyra/node/v1/nodev1connect"
)

const (
	followRequest = "01JD5ZJ8Q0W1X2Y3Z4A5B6C7R1"
	followSecret  = "pairing-secret"
)

// scriptedNode is a NodeService whose WatchPairing and GetPairingStatus follow scripts:
// each WatchPairing call sends the statuses of the next script (the last one repeats)
// and then ends with watchErr; each GetPairingStatus call returns the next poll (the
// last one repeats). Both check the request id and secret.
type scriptedNode struct {
	nodev1connect.UnimplementedNodeServiceHandler
	mu         sync.Mutex // guards the following
	watches    [][]nodev1.PairingState
	watchErr   error
	watchCalls int
	polls      []nodev1.PairingState
	pollCalls  int
}

func status(s nodev1.PairingState) *nodev1.PairingStatus {
	st := &nodev1.PairingStatus{RequestId: followRequest, State: s}
	switch s {
	case nodev1.PairingState_PAIRING_STATE_APPROVED:
		st.CertificatePem = "certificate"
	case nodev1.PairingState_PAIRING_STATE_REJECTED:
		st.Reason = "unknown machine"
	}
	return st
}

func checkSecret(id, secret string) error {
	if id != followRequest || secret != followSecret {
		return connect.NewError(connect.CodeNotFound, errors.New("no such pairing request"))
	}
	return nil
}

func (s *scriptedNode) WatchPairing(ctx context.Context, req *connect.Request[nodev1.WatchPairingRequest], stream *connect.ServerStream[nodev1.WatchPairingResponse]) error {
	if err := checkSecret(req.Msg.GetRequestId(), req.Msg.GetPairingSecret()); err != nil {
		return err
	}
	s.mu.Lock()
	var script []nodev1.PairingState
	if len(s.watches) > 0 {
		script = s.watches[min(s.watchCalls, len(s.watches)-1)]
	}
	s.watchCalls++
	err := s.watchErr
	s.mu.Unlock()
	for _, st := range script {
		if err := stream.Send(&nodev1.WatchPairingResponse{Status: status(st)}); err != nil {
			return err
		}
	}
	return err
}

func (s *scriptedNode) GetPairingStatus(_ context.Context, req *connect.Request[nodev1.GetPairingStatusRequest]) (*connect.Response[nodev1.GetPairingStatusResponse], error) {
	if err := checkSecret(req.Msg.GetRequestId(), req.Msg.GetPairingSecret()); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.polls) == 0 {
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("no polls scripted"))
	}
	st := s.polls[min(s.pollCalls, len(s.polls)-1)]
	s.pollCalls++
	return connect.NewResponse(&nodev1.GetPairingStatusResponse{Status: status(st)}), nil
}

// followWith runs follow against fake, with short waits, and returns its result and
// the events.
func followWith(t *testing.T, ctx context.Context, fake nodev1connect.NodeServiceHandler, secret string) (*nodev1.PairingStatus, []Event, error) {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle(nodev1connect.NewNodeServiceHandler(fake))
	srv := httptest.NewUnstartedServer(mux)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(client.Options{URL: srv.URL, CAFile: caFile})
	if err != nil {
		t.Fatal(err)
	}
	var events []Event
	p := &pairer{
		PairOptions: PairOptions{
			Events: func(e Event) { events = append(events, e) },
			retry:  retryPolicy{initial: time.Millisecond, max: 4 * time.Millisecond, streamFailures: 3, poll: time.Millisecond},
		},
		pending: &Pending{RequestID: followRequest, Secret: secret},
		nodes:   c.Node,
	}
	st, err := p.follow(ctx)
	return st, events, err
}

// count returns how many events of each kind there are.
func count(events []Event) (changes, retries, polls int) {
	for _, e := range events {
		switch e.(type) {
		case StateChanged:
			changes++
		case Retrying:
			retries++
		case Polling:
			polls++
		}
	}
	return changes, retries, polls
}

const (
	pending  = nodev1.PairingState_PAIRING_STATE_PENDING_APPROVAL
	approved = nodev1.PairingState_PAIRING_STATE_APPROVED
	rejected = nodev1.PairingState_PAIRING_STATE_REJECTED
)

// TestFollowPairing checks how a node waits for the decision: through the stream, across
// broken streams, by polling once the stream keeps failing or does not exist, and that
// it gives up on a request palyrad refuses to report on.
func TestFollowPairing(t *testing.T) {
	t.Parallel()
	unavailable := connect.NewError(connect.CodeUnavailable, errors.New("replica shutting down"))

	t.Run("stream", func(t *testing.T) {
		t.Parallel()
		fake := &scriptedNode{watches: [][]nodev1.PairingState{{pending, pending, approved}}}
		st, events, err := followWith(t, t.Context(), fake, followSecret)
		if err != nil || st.GetState() != approved || st.GetCertificatePem() == "" {
			t.Fatalf("follow = %v, %v", st, err)
		}
		if c, r, p := count(events); c != 1 || r != 0 || p != 0 {
			t.Errorf("events %v: want one state change", events)
		}
	})

	t.Run("reconnect after a broken stream", func(t *testing.T) {
		t.Parallel()
		fake := &scriptedNode{watches: [][]nodev1.PairingState{{pending}, {}, {pending, rejected}}, watchErr: nil}
		st, events, err := followWith(t, t.Context(), fake, followSecret)
		if err != nil || st.GetState() != rejected || st.GetReason() != "unknown machine" {
			t.Fatalf("follow = %v, %v", st, err)
		}
		if c, r, p := count(events); c != 1 || r != 2 || p != 0 {
			t.Errorf("events %v: want one state change and two retries", events)
		}
	})

	t.Run("poll when the stream keeps failing", func(t *testing.T) {
		t.Parallel()
		fake := &scriptedNode{watchErr: unavailable, polls: []nodev1.PairingState{pending, pending, approved}}
		st, events, err := followWith(t, t.Context(), fake, followSecret)
		if err != nil || st.GetState() != approved {
			t.Fatalf("follow = %v, %v", st, err)
		}
		if c, r, p := count(events); c != 1 || r != 3 || p != 1 {
			t.Errorf("events %v: want 3 retries, then polling", events)
		}
		fake.mu.Lock()
		watches, polls := fake.watchCalls, fake.pollCalls
		fake.mu.Unlock()
		if watches != 3 || polls != 3 {
			t.Errorf("%d watches and %d polls; want 3 and 3", watches, polls)
		}
		var retry Retrying
		for _, e := range events {
			if r, ok := e.(Retrying); ok {
				retry = r
			}
		}
		if !strings.Contains(retry.Err.Error(), "replica shutting down") || retry.Delay < 0 || retry.Delay > 4*time.Millisecond {
			t.Errorf("retry %+v", retry)
		}
	})

	t.Run("poll when palyrad cannot watch", func(t *testing.T) {
		t.Parallel()
		fake := &scriptedNode{
			watchErr: connect.NewError(connect.CodeUnimplemented, errors.New("no WatchPairing")),
			polls:    []nodev1.PairingState{approved},
		}
		st, events, err := followWith(t, t.Context(), fake, followSecret)
		if err != nil || st.GetState() != approved {
			t.Fatalf("follow = %v, %v", st, err)
		}
		if _, r, p := count(events); r != 0 || p != 1 {
			t.Errorf("events %v: want polling at once", events)
		}
	})

	t.Run("rate limited: waits for the Retry-After", func(t *testing.T) {
		t.Parallel()
		limited := connect.NewError(connect.CodeResourceExhausted, errors.New("too many status calls from this address"))
		limited.Meta().Set("Retry-After", "1")
		fake := &scriptedNode{watches: [][]nodev1.PairingState{{}, {approved}}, watchErr: limited}
		st, events, err := followWith(t, t.Context(), fake, followSecret)
		if err != nil || st.GetState() != approved {
			t.Fatalf("follow = %v, %v", st, err)
		}
		if len(events) != 1 {
			t.Fatalf("events %v: want one retry", events)
		}
		if r, ok := events[0].(Retrying); !ok || r.Delay < time.Second {
			t.Errorf("event %+v: want a retry after at least the Retry-After of 1 s", events[0])
		}
	})

	t.Run("an internal error is final", func(t *testing.T) {
		t.Parallel()
		fake := &scriptedNode{watchErr: connect.NewError(connect.CodeInternal, errors.New("internal error"))}
		_, events, err := followWith(t, t.Context(), fake, followSecret)
		if connect.CodeOf(err) != connect.CodeInternal || len(events) != 0 {
			t.Errorf("follow = %v after events %v: want palyrad's answer, not retried", err, events)
		}
	})

	t.Run("request unknown", func(t *testing.T) {
		t.Parallel()
		_, _, err := followWith(t, t.Context(), &scriptedNode{}, "wrong secret")
		if connect.CodeOf(err) != connect.CodeNotFound || !strings.Contains(err.Error(), "pass --force to start over") {
			t.Errorf("follow with a wrong secret = %v", err)
		}
	})

	t.Run("interrupted while polling", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		defer cancel()
		_, _, err := followWith(t, ctx, &scriptedNode{watchErr: unavailable, polls: []nodev1.PairingState{pending}}, followSecret)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("follow after the context ended = %v", err)
		}
	})
}
