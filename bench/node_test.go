package bench

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	"github.com/palyra/palyra/gen/go/palyra/controlplane/v1/controlplanev1connect"
	nodev1 "github.com/palyra/palyra/gen/go/palyra/node/v1"
	"github.com/palyra/palyra/gen/go/palyra/node/v1/nodev1connect"
)

// capability is the one capability the fake nodes offer: no input schema, so that the
// daemon's schema validation costs nothing.
const capability = "bench.echo"

// outputChunk returns the output a fake node sends for every dispatch, in one message:
// PALYRA_BENCH_OUTPUT_BYTES bytes, by default 128 (the payload size of
// PERF-BASELINES.md).
var outputChunk = sync.OnceValue(func() []byte {
	n := 128
	if v, err := strconv.Atoi(os.Getenv("PALYRA_BENCH_OUTPUT_BYTES")); err == nil && v > 0 {
		n = v
	}
	return []byte(strings.Repeat(strings.Repeat("x", 127)+"\n", n/128+1)[:n])
})

// device is an enrolled device: its id and its certificate with the private key.
type device struct {
	id   string
	cert tls.Certificate
}

// loopback returns the loopback address 127.<net>.x.y for the i-th client, so that
// per-address rate limits (StartPairing allows ten a minute) do not apply across them.
func loopback(netByte byte, i int) net.IP {
	return net.IPv4(127, netByte, byte(i/250), byte(i%250+1))
}

// enroll pairs n devices the way `palyra node pair` and an administrator do: a PIN
// code, StartPairing with a CSR for a fresh P-256 key, approval bound to the key's
// fingerprint, then GetPairingStatus to collect the certificate. admin is a token
// that may create codes and approve.
func enroll(tb testing.TB, d *daemon, admin string, n int) []device {
	tb.Helper()
	hc := d.apiClient(admin)
	defer hc.CloseIdleConnections()
	pairing := controlplanev1connect.NewPairingServiceClient(hc, d.baseURL)
	devs := make([]device, n)
	err := forEach(n, 8, func(i int) error {
		dev, err := pair(d, pairing, i)
		if err != nil {
			return fmt.Errorf("device %d: %w", i, err)
		}
		devs[i] = dev
		return nil
	})
	if err != nil {
		tb.Fatalf("enrol: %v", err)
	}
	return devs
}

// forEach calls fn for 0 to n-1 on workers goroutines and returns the first error; a
// worker stops at its first error, the others go on.
func forEach(n, workers int, fn func(i int) error) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				if err := fn(i); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// pair enrols the i-th device.
func pair(d *daemon, pairing controlplanev1connect.PairingServiceClient, i int) (device, error) {
	ctx := context.Background()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return device{}, err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "bench"}}, key)
	if err != nil {
		return device{}, err
	}
	code, err := pairing.CreatePairingCode(ctx, connect.NewRequest(&controlplanev1.CreatePairingCodeRequest{
		Method: controlplanev1.PairingMethod_PAIRING_METHOD_PIN, Label: fmt.Sprintf("bench-%d", i),
	}))
	if err != nil {
		return device{}, fmt.Errorf("create pairing code: %w", err)
	}
	// The node has no certificate yet, and calls from an address of its own.
	tr := d.transport(loopback(3, i), nil)
	defer tr.CloseIdleConnections()
	node := nodev1connect.NewNodeServiceClient(&http.Client{Transport: tr}, d.baseURL)
	started, err := node.StartPairing(ctx, connect.NewRequest(&nodev1.StartPairingRequest{
		Code: &nodev1.StartPairingRequest_Pin{Pin: code.Msg.GetCode()}, Csr: csr,
		DeviceName: fmt.Sprintf("bench-%d", i), Platform: "linux/amd64", AgentVersion: "bench",
	}))
	if err != nil {
		return device{}, fmt.Errorf("start pairing: %w", err)
	}
	if _, err := pairing.ApprovePairingRequest(ctx, connect.NewRequest(&controlplanev1.ApprovePairingRequestRequest{
		Id: started.Msg.GetRequestId(), ExpectedKeyFingerprint: started.Msg.GetPublicKeyFingerprint(),
	})); err != nil {
		return device{}, fmt.Errorf("approve: %w", err)
	}
	st, err := node.GetPairingStatus(ctx, connect.NewRequest(&nodev1.GetPairingStatusRequest{
		RequestId: started.Msg.GetRequestId(), PairingSecret: started.Msg.GetPairingSecret(),
	}))
	if err != nil {
		return device{}, fmt.Errorf("pairing status: %w", err)
	}
	block, _ := pem.Decode([]byte(st.Msg.GetStatus().GetCertificatePem()))
	if block == nil {
		return device{}, fmt.Errorf("no certificate in the pairing status (state %s)", st.Msg.GetStatus().GetState())
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return device{}, err
	}
	return device{
		id:   st.Msg.GetStatus().GetDeviceId(),
		cert: tls.Certificate{Certificate: [][]byte{block.Bytes}, PrivateKey: key, Leaf: leaf},
	}, nil
}

// node is a fake node agent on one Attach stream over an HTTP/2 connection of its own.
// It sends heartbeats at the interval the welcome sets and, when it answers, replies
// to every dispatch at once with DispatchAccepted, one 128-byte output chunk and a
// succeeded DispatchResult.
type node struct {
	tr     *http.Transport
	stream *connect.BidiStreamForClient[nodev1.AttachRequest, nodev1.AttachResponse]
	cancel context.CancelFunc
	answer bool
	// done is closed when the stream ended; err says why (nil for io.EOF).
	done chan struct{}
	err  error

	mu sync.Mutex // guards sending on stream (one sender at a time)
}

// attach opens dev's Attach stream from the loopback address src (nil: any), sends
// the hello and returns once the welcome arrived.
func attach(d *daemon, dev *device, src net.IP, answer bool) (*node, error) {
	return attachWith(d, dev, src, answer, nil)
}

// attachWith is attach with configure, when not nil, applied to the connection's TLS
// configuration first.
func attachWith(d *daemon, dev *device, src net.IP, answer bool, configure func(*tls.Config)) (*node, error) {
	n := &node{tr: d.transport(src, &dev.cert), answer: answer, done: make(chan struct{})}
	if configure != nil {
		configure(n.tr.TLSClientConfig)
	}
	client := nodev1connect.NewNodeServiceClient(&http.Client{Transport: n.tr}, d.baseURL)
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	n.stream = client.Attach(ctx)
	hello := &nodev1.AttachRequest{Message: &nodev1.AttachRequest_Hello{Hello: &nodev1.Hello{
		DeviceId: dev.id, Platform: "linux/amd64", AgentVersion: "bench", ProtocolVersions: []uint32{1},
		Capabilities: []*nodev1.Capability{{Name: capability, Description: "answers at once", Available: true}},
	}}}
	if err := n.stream.Send(hello); err != nil && !errors.Is(err, io.EOF) {
		n.close()
		return nil, fmt.Errorf("hello: %w", err)
	}
	welcomed := time.AfterFunc(30*time.Second, cancel)
	first, err := n.stream.Receive()
	welcomed.Stop()
	if err != nil {
		n.close()
		return nil, fmt.Errorf("waiting for the welcome: %w", err)
	}
	w := first.GetWelcome()
	if w == nil {
		n.close()
		return nil, fmt.Errorf("the first message down is %T, not a welcome", first.GetMessage())
	}
	go n.receive()
	go n.heartbeat(w.GetHeartbeatInterval().AsDuration())
	return n, nil
}

// receive reads the stream until it ends, answering dispatches. It has its own
// goroutine.
func (n *node) receive() {
	defer close(n.done)
	for {
		m, err := n.stream.Receive()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				n.err = err
			}
			return
		}
		if d := m.GetDispatch(); d != nil && n.answer {
			if err := n.run(d.GetDispatchId()); err != nil {
				n.err = err
				return
			}
		}
	}
}

// run answers a dispatch the way a node running a quick command does.
func (n *node) run(id string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, m := range []*nodev1.AttachRequest{
		{Message: &nodev1.AttachRequest_Accepted{Accepted: &nodev1.DispatchAccepted{DispatchId: id}}},
		{Message: &nodev1.AttachRequest_Output{Output: &nodev1.DispatchOutput{
			DispatchId: id, Stream: nodev1.OutputStream_OUTPUT_STREAM_STDOUT, Data: outputChunk(),
		}}},
		{Message: &nodev1.AttachRequest_Result{Result: &nodev1.DispatchResult{
			DispatchId: id, Outcome: nodev1.DispatchOutcome_DISPATCH_OUTCOME_SUCCEEDED,
			OutputBytes: uint64(len(outputChunk())), FinishTime: timestamppb.Now(), ResultJson: `{"exit_code":0}`,
		}}},
	} {
		if err := n.stream.Send(m); err != nil {
			return fmt.Errorf("answer dispatch %s: %w", id, err)
		}
	}
	return nil
}

// heartbeat sends a heartbeat every interval until the stream ends. It has its own
// goroutine.
func (n *node) heartbeat(every time.Duration) {
	if every <= 0 {
		return
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-n.done:
			return
		case <-tick.C:
		}
		n.mu.Lock()
		err := n.stream.Send(&nodev1.AttachRequest{Message: &nodev1.AttachRequest_Heartbeat{Heartbeat: &nodev1.Heartbeat{}}})
		n.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// close ends the stream and the connection.
func (n *node) close() {
	n.cancel()
	_ = n.stream.CloseRequest()
	_ = n.stream.CloseResponse()
	n.tr.CloseIdleConnections()
}

// failed returns why the stream ended, if it did.
func (n *node) failed() error {
	select {
	case <-n.done:
		if n.err != nil {
			return n.err
		}
		return errors.New("the Attach stream ended")
	default:
		return nil
	}
}
