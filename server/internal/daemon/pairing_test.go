package daemon_test

import (
	"errors"
	"net"
	"strconv"
	"testing"

	"connectrpc.com/connect"
	"github.com/oklog/ulid/v2"

	nodev1 "github.com/palyra/palyra/gen/go/palyra/node/v1"
	"github.com/palyra/palyra/gen/go/palyra/node/v1/nodev1connect"
	"github.com/palyra/palyra/server/internal/pairing"
	"github.com/palyra/palyra/server/internal/store/storetest"
)

// TestPublicPairingRPCsAreRateLimited: GetPairingStatus and WatchPairing, public RPCs
// that anyone reaching the port may call, share a per-address limit (issue 10, item 3):
// past it an address is refused with ResourceExhausted and Retry-After before anything
// is looked up, and other addresses are not affected.
func TestPublicPairingRPCsAreRateLimited(t *testing.T) {
	t.Parallel()
	td := startDaemon(t, "--database-url", storetest.URL(t), "--data-dir", t.TempDir())
	from := func(last byte) nodev1connect.NodeServiceClient {
		return nodev1connect.NewNodeServiceClient(td.clientFrom(net.IPv4(127, 0, 3, last)), td.baseURL)
	}
	status := func(c nodev1connect.NodeServiceClient) error {
		_, err := c.GetPairingStatus(t.Context(), connect.NewRequest(&nodev1.GetPairingStatusRequest{
			RequestId: ulid.Make().String(), PairingSecret: "guess"}))
		return err
	}
	watch := func(c nodev1connect.NodeServiceClient) error {
		stream, err := c.WatchPairing(t.Context(), connect.NewRequest(&nodev1.WatchPairingRequest{
			RequestId: ulid.Make().String(), PairingSecret: "guess"}))
		if err != nil {
			return err
		}
		defer stream.Close()
		for stream.Receive() {
		}
		return stream.Err()
	}
	wantLimited := func(what string, err error) {
		t.Helper()
		var ce *connect.Error
		if !errors.As(err, &ce) || ce.Code() != connect.CodeResourceExhausted {
			t.Fatalf("%s: got %v, want resource_exhausted", what, err)
		}
		if retry, err := strconv.Atoi(ce.Meta().Get("Retry-After")); err != nil || retry < 1 || retry > 60 {
			t.Errorf("%s: Retry-After %q, want whole seconds within 1..60", what, ce.Meta().Get("Retry-After"))
		}
	}

	guesser := from(1)
	for i := range pairing.FollowBurst {
		call := status
		if i%2 == 1 {
			call = watch
		}
		if err := call(guesser); connect.CodeOf(err) != connect.CodeNotFound {
			t.Fatalf("call %d of the burst: got %v, want not_found", i+1, err)
		}
	}
	wantLimited("GetPairingStatus past the burst", status(guesser))
	wantLimited("WatchPairing past the burst", watch(guesser))
	// Another address is served.
	wantCode(t, "GetPairingStatus from another address", status(from(2)), connect.CodeNotFound)
	wantCode(t, "WatchPairing from another address", watch(from(2)), connect.CodeNotFound)
}
