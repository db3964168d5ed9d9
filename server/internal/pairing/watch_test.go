package pairing_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"connectrpc.com/connect"

	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	"github.com/palyra/palyra/gen/go/palyra/controlplane/v1/controlplanev1connect"
	nodev1 "github.com/palyra/palyra/gen/go/palyra/node/v1"
	"github.com/palyra/palyra/gen/go/palyra/node/v1/nodev1connect"
	"github.com/palyra/palyra/internal/eventually"
	"github.com/palyra/palyra/server/internal/pairing"
)

// received is one message (or the end) of a watch.
type received struct {
	status *nodev1.PairingStatus
	err    error
	end    bool
}

// watch opens a watch and delivers what it receives on a channel.
func watch(t *testing.T, client nodev1connect.NodeServiceClient, id, secret string) <-chan received {
	t.Helper()
	stream, err := client.WatchPairing(t.Context(), connect.NewRequest(&nodev1.WatchPairingRequest{RequestId: id, PairingSecret: secret}))
	if err != nil {
		t.Fatalf("watch: %v", err)
	}
	out := make(chan received, 16)
	go func() {
		defer stream.Close()
		for stream.Receive() {
			out <- received{status: stream.Msg().GetStatus()}
		}
		out <- received{err: stream.Err(), end: true}
	}()
	return out
}

// next waits for the next message of a watch.
func next(t *testing.T, ch <-chan received) received {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(eventually.Deadline):
		t.Fatalf("nothing from the watch within %v", eventually.Deadline)
		return received{}
	}
}

func TestWatchPairingAcrossReplicas(t *testing.T) {
	t.Parallel()
	// Watches re-read only every hour: what arrives sooner came by NOTIFY.
	slowPoll := withService(func(s *pairing.Service) { s.SetWatchPoll(time.Hour) })
	cases := map[string]struct {
		decide    func(t *testing.T, b *testBundle, id string)
		wantState nodev1.PairingState
	}{
		"approved": {
			decide: func(t *testing.T, b *testBundle, id string) {
				if _, err := b.approve(t, &controlplanev1.ApprovePairingRequestRequest{Id: id}); err != nil {
					t.Fatal(err)
				}
			},
			wantState: nodev1.PairingState_PAIRING_STATE_COMPLETED,
		},
		"rejected": {
			decide: func(t *testing.T, b *testBundle, id string) {
				if _, err := b.reject(t, id, "not today"); err != nil {
					t.Fatal(err)
				}
			},
			wantState: nodev1.PairingState_PAIRING_STATE_REJECTED,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			a := setup(t, slowPoll)
			b := a.replica(t, slowPoll)
			a.run(t)
			b.run(t)

			// The node starts on replica a and watches on replica b, over gRPC.
			id, secret := a.pending(t)
			events := watch(t, b.nodeGRPC, id, secret)
			first := next(t, events)
			if first.end || first.status.GetState() != nodev1.PairingState_PAIRING_STATE_PENDING_APPROVAL {
				t.Fatalf("first message %+v, want pending", first)
			}

			tc.decide(t, a, id)
			got := next(t, events)
			if got.end {
				t.Fatalf("the watch ended without the decision: %v", got.err)
			}
			if got.status.GetState() != tc.wantState {
				t.Fatalf("after the decision the watch sent %v, want %v", got.status.GetState(), tc.wantState)
			}
			if tc.wantState == nodev1.PairingState_PAIRING_STATE_COMPLETED {
				cert := parseCertPEM(t, got.status.GetCertificatePem())
				checkDeviceCertificate(t, b, cert, got.status.GetDeviceId())
				if got.status.GetCaCertificatePem() != string(a.authority.PEM()) {
					t.Error("the replicas disagree on the CA")
				}
			} else if got.status.GetReason() != "not today" {
				t.Errorf("reason %q", got.status.GetReason())
			}
			if end := next(t, events); !end.end || end.err != nil {
				t.Errorf("the watch did not end cleanly after a terminal state: %+v", end)
			}
		})
	}
}

func TestWatchPairingFallsBackToPolling(t *testing.T) {
	t.Parallel()
	// Without notifications, a watch still learns of the decision by re-reading.
	b := setup(t,
		withOptions(func(o *pairing.Options) { o.Notify = nil }),
		withService(func(s *pairing.Service) { s.SetWatchPoll(100 * time.Millisecond) }))
	other := b.replica(t)
	id, secret := b.pending(t)
	events := watch(t, b.node, id, secret)
	if first := next(t, events); first.status.GetState() != nodev1.PairingState_PAIRING_STATE_PENDING_APPROVAL {
		t.Fatalf("first message %+v", first)
	}
	if _, err := other.approve(t, &controlplanev1.ApprovePairingRequestRequest{Id: id}); err != nil {
		t.Fatal(err)
	}
	if got := next(t, events); got.status.GetState() != nodev1.PairingState_PAIRING_STATE_COMPLETED {
		t.Fatalf("after the approval: %+v", got)
	}
	if end := next(t, events); !end.end || end.err != nil {
		t.Errorf("the watch did not end cleanly: %+v", end)
	}
}

func TestWatchPairingEndsWithTheClient(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.run(t)
	id, secret := b.pending(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	stream, err := b.node.WatchPairing(ctx, connect.NewRequest(&nodev1.WatchPairingRequest{RequestId: id, PairingSecret: secret}))
	if err != nil {
		t.Fatal(err)
	}
	if !stream.Receive() {
		t.Fatalf("no first message: %v", stream.Err())
	}
	cancel()
	if stream.Receive() {
		t.Errorf("the canceled watch sent %v", stream.Msg())
	}
	_ = stream.Close()
	// The handler returns: the server's stream ends, which the audit note records.
	eventually.NoError(t, "the watch handler returns after the client went away", func() error {
		if last := b.calls.last("/palyra.node.v1.NodeService/WatchPairing"); last != "pairing_request:"+id {
			return fmt.Errorf("the last call noted is of %q", last)
		}
		return nil
	})
}

// watchRequests opens a watch of every request and delivers what it receives.
func watchRequests(t *testing.T, client controlplanev1connect.PairingServiceClient) <-chan *controlplanev1.WatchPairingRequestsResponse {
	t.Helper()
	stream, err := client.WatchPairingRequests(t.Context(), connect.NewRequest(&controlplanev1.WatchPairingRequestsRequest{}))
	if err != nil {
		t.Fatalf("watch: %v", err)
	}
	out := make(chan *controlplanev1.WatchPairingRequestsResponse, 16)
	go func() {
		defer stream.Close()
		defer close(out)
		for stream.Receive() {
			out <- stream.Msg()
		}
	}()
	return out
}

// nextChange waits for the next message of a watch of every request.
func nextChange(t *testing.T, ch <-chan *controlplanev1.WatchPairingRequestsResponse) *controlplanev1.WatchPairingRequestsResponse {
	t.Helper()
	select {
	case m, ok := <-ch:
		if !ok {
			t.Fatal("the watch ended")
		}
		return m
	case <-time.After(eventually.Deadline):
		t.Fatalf("nothing from the watch within %v", eventually.Deadline)
		return nil
	}
}

func TestWatchPairingRequestsAcrossReplicas(t *testing.T) {
	t.Parallel()
	// Nothing polls: what arrives came by NOTIFY from the other replica.
	slowPoll := withService(func(s *pairing.Service) { s.SetWatchPoll(time.Hour) })
	a := setup(t, slowPoll)
	b := a.replica(t, slowPoll)
	a.run(t)
	b.run(t)

	changes := watchRequests(t, b.admin)
	if first := nextChange(t, changes); first.GetPairingRequest() != nil {
		t.Fatalf("first message %v, want an empty one", first)
	}
	id, _ := a.pending(t)
	created := nextChange(t, changes).GetPairingRequest()
	if created.GetId() != id || created.GetState() != nodev1.PairingState_PAIRING_STATE_PENDING_APPROVAL || created.GetPublicKeyFingerprint() == "" {
		t.Fatalf("after the start: %v, want request %s pending with its fingerprint", created, id)
	}
	if _, err := a.reject(t, id, "not this one"); err != nil {
		t.Fatal(err)
	}
	rejected := nextChange(t, changes).GetPairingRequest()
	if rejected.GetId() != id || rejected.GetState() != nodev1.PairingState_PAIRING_STATE_REJECTED || rejected.GetReason() != "not this one" {
		t.Fatalf("after the rejection: %v", rejected)
	}
}

func TestWatchPairingRequestsWithoutNotifications(t *testing.T) {
	t.Parallel()
	// Without notifications, the watch says "list again" every poll interval.
	b := setup(t,
		withOptions(func(o *pairing.Options) { o.Notify = nil }),
		withService(func(s *pairing.Service) { s.SetWatchPoll(100 * time.Millisecond) }))
	changes := watchRequests(t, b.admin)
	for range 3 {
		if m := nextChange(t, changes); m.GetPairingRequest() != nil {
			t.Fatalf("message %v, want an empty one", m)
		}
	}
}

func TestWatchPairingRequestsEndsOnShutdown(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.run(t)
	stream, err := b.admin.WatchPairingRequests(t.Context(), connect.NewRequest(&controlplanev1.WatchPairingRequestsRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	if !stream.Receive() {
		t.Fatalf("no first message: %v", stream.Err())
	}
	// The HTTP server's shutdown waits for the streams: Shutdown ends them.
	b.svc.Shutdown()
	if stream.Receive() {
		t.Fatalf("after Shutdown the watch sent %v", stream.Msg())
	}
	if err := stream.Err(); err != nil {
		t.Errorf("the watch ended with %v, want a clean end", err)
	}
	again, err := b.admin.WatchPairingRequests(t.Context(), connect.NewRequest(&controlplanev1.WatchPairingRequestsRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if again.Receive() || connect.CodeOf(again.Err()) != connect.CodeUnavailable {
		t.Errorf("a watch after Shutdown: %v, want unavailable", again.Err())
	}
}
