package nodes_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/palyra/palyra/cli/internal/cmd/cmdtest"
	"github.com/palyra/palyra/cli/internal/cmd/dispatches/dispatchtest"
	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	"github.com/palyra/palyra/gen/go/palyra/controlplane/v1/controlplanev1connect"
)

const (
	deviceID = "01JD5ZJ8Q0W1X2Y3Z4A5B6C7V1"
	certFP   = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	oldFP    = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
)

// fakeDevices is a DeviceService that records what it is asked and answers with one
// device.
type fakeDevices struct {
	controlplanev1connect.UnimplementedDeviceServiceHandler
	mu     sync.Mutex // guards the following
	calls  int
	revoke *controlplanev1.RevokeDeviceRequest
	rotate *controlplanev1.RotateDeviceCertificateRequest
}

var _ controlplanev1connect.DeviceServiceHandler = (*fakeDevices)(nil)

func device() *controlplanev1.Device {
	return &controlplanev1.Device{
		Id: deviceID, Name: "build-01", Platform: "linux/arm64", AgentVersion: "v0.3.0",
		Labels:     map[string]string{"site": "lab"},
		CreateTime: timestamppb.New(cmdtest.Now.Add(-48 * time.Hour)),
		Certificates: []*controlplanev1.DeviceCertificate{
			{Fingerprint: certFP, Serial: "0a1b", NotBefore: timestamppb.New(cmdtest.Now.Add(-time.Hour)), NotAfter: timestamppb.New(cmdtest.Now.Add(23 * time.Hour))},
			{Fingerprint: oldFP, Serial: "09ff", NotBefore: timestamppb.New(cmdtest.Now.Add(-25 * time.Hour)), NotAfter: timestamppb.New(cmdtest.Now.Add(-time.Hour)),
				RevokeTime: timestamppb.New(cmdtest.Now.Add(-2 * time.Hour)), RevokeReason: "renewed"},
		},
	}
}

// sent is what a fakeDevices was sent.
type sent struct {
	calls  int
	revoke *controlplanev1.RevokeDeviceRequest
	rotate *controlplanev1.RotateDeviceCertificateRequest
}

// sent returns what the fake was sent so far.
func (f *fakeDevices) sent() sent {
	f.mu.Lock()
	defer f.mu.Unlock()
	return sent{calls: f.calls, revoke: f.revoke, rotate: f.rotate}
}

func (f *fakeDevices) GetDevice(_ context.Context, req *connect.Request[controlplanev1.GetDeviceRequest]) (*connect.Response[controlplanev1.GetDeviceResponse], error) {
	f.mu.Lock()
	f.calls++
	f.mu.Unlock()
	if req.Msg.GetId() != deviceID {
		return nil, connect.NewError(connect.CodeNotFound, errors.New("no device "+req.Msg.GetId()))
	}
	return connect.NewResponse(&controlplanev1.GetDeviceResponse{Device: device()}), nil
}

func (f *fakeDevices) RevokeDevice(_ context.Context, req *connect.Request[controlplanev1.RevokeDeviceRequest]) (*connect.Response[controlplanev1.RevokeDeviceResponse], error) {
	f.mu.Lock()
	f.calls++
	f.revoke = req.Msg
	f.mu.Unlock()
	d := device()
	d.RevokeTime, d.RevokeReason = timestamppb.New(cmdtest.Now), req.Msg.GetReason()
	return connect.NewResponse(&controlplanev1.RevokeDeviceResponse{Device: d}), nil
}

func (f *fakeDevices) RotateDeviceCertificate(_ context.Context, req *connect.Request[controlplanev1.RotateDeviceCertificateRequest]) (*connect.Response[controlplanev1.RotateDeviceCertificateResponse], error) {
	f.mu.Lock()
	f.calls++
	f.rotate = req.Msg
	f.mu.Unlock()
	d := device()
	d.RotateTime = timestamppb.New(cmdtest.Now)
	d.Certificates[0].RevokeTime, d.Certificates[0].RevokeReason = timestamppb.New(cmdtest.Now.Add(time.Hour)), "rotated"
	return connect.NewResponse(&controlplanev1.RotateDeviceCertificateResponse{Device: d}), nil
}

// bench is a palyrad of fakes: DeviceService, NodeInventoryService and DispatchService.
type bench struct {
	devices *fakeDevices
	nodes   *fakeNodes
	disp    *dispatchtest.Fake
	env     map[string]string
}

func newBench(t *testing.T) *bench {
	t.Helper()
	b := &bench{devices: &fakeDevices{}, nodes: &fakeNodes{}, disp: &dispatchtest.Fake{Now: cmdtest.Now}}
	srv := cmdtest.NewServer(t, func(mux *http.ServeMux) {
		mux.Handle(controlplanev1connect.NewDeviceServiceHandler(b.devices))
		mux.Handle(controlplanev1connect.NewNodeInventoryServiceHandler(b.nodes))
		b.disp.Mount(mux)
	})
	b.env = srv.Env()
	return b
}

func setup(t *testing.T) (*fakeDevices, map[string]string) {
	t.Helper()
	b := newBench(t)
	return b.devices, b.env
}

// TestNodesArguments checks that malformed command lines exit 2 without calling
// palyrad.
func TestNodesArguments(t *testing.T) {
	t.Parallel()
	b := newBench(t)
	huge := strings.Repeat(" ", 1<<20) + "{}"
	bad := map[string][]string{
		"show without id":           {"nodes", "show"},
		"show bad id":               {"nodes", "show", "build-01"},
		"revoke without reason":     {"nodes", "revoke", deviceID},
		"revoke long reason":        {"nodes", "revoke", deviceID, "--reason", strings.Repeat("x", 257)},
		"revoke two ids":            {"nodes", "revoke", deviceID, deviceID, "--reason", "lost"},
		"rotate grace too long":     {"nodes", "rotate-cert", deviceID, "--grace", "8d"},
		"rotate grace zero":         {"nodes", "rotate-cert", deviceID, "--grace", "0s"},
		"rotate grace malformed":    {"nodes", "rotate-cert", deviceID, "--grace", "1 hour"},
		"rotate without id":         {"nodes", "rotate-cert"},
		"approve bad fingerprint":   {"nodes", "approve", deviceID, "--expect-fingerprint", "sha256:xyz"},
		"list bad presence":         {"nodes", "list", "--presence", "away"},
		"list bad label":            {"nodes", "list", "--label", "site"},
		"list bad label key":        {"nodes", "list", "--label", "Site=lab"},
		"list limit too large":      {"nodes", "list", "--limit", "501"},
		"list with argument":        {"nodes", "list", deviceID},
		"invoke without capability": {"nodes", "invoke", deviceID},
		"invoke bad node":           {"nodes", "invoke", "build-01", "shell.execute"},
		"invoke bad capability":     {"nodes", "invoke", deviceID, "Shell Execute"},
		"invoke invalid JSON":       {"nodes", "invoke", deviceID, "shell.execute", "--input", `{"argv":["echo",]}`},
		"invoke empty input":        {"nodes", "invoke", deviceID, "shell.execute", "--input", ""},
		"invoke input too long":     {"nodes", "invoke", deviceID, "shell.execute", "--input", huge},
		"invoke timeout too long":   {"nodes", "invoke", deviceID, "shell.execute", "--timeout", "25h"},
		"invoke timeout malformed":  {"nodes", "invoke", deviceID, "shell.execute", "--timeout", "30 s"},
		"invoke max output":         {"nodes", "invoke", deviceID, "shell.execute", "--max-output", "17M"},
		"invoke max output follow":  {"nodes", "invoke", deviceID, "shell.execute", "--max-output", "65M", "--follow"},
		"invoke max output unit":    {"nodes", "invoke", deviceID, "shell.execute", "--max-output", "4G"},
		"invoke bad key":            {"nodes", "invoke", deviceID, "shell.execute", "--idempotency-key", "a b"},
	}
	for name, args := range bad {
		if res := cmdtest.Run(t.Context(), b.env, args...); res.Code != 2 {
			t.Errorf("%s: exit %d, want 2; stderr:\n%s", name, res.Code, res.Stderr)
		}
	}
	if b.devices.sent().calls != 0 || len(b.nodes.requests()) != 0 {
		t.Errorf("palyrad was called %d times", b.devices.sent().calls+len(b.nodes.requests()))
	}
	if c := b.disp.Calls(); len(c.Creates)+len(c.Executes) != 0 {
		t.Errorf("a dispatch was created: %+v", c)
	}
}

// TestNodesCommands checks revoke and rotate-cert, in tables and JSON.
func TestNodesCommands(t *testing.T) {
	t.Parallel()
	f, env := setup(t)
	res := cmdtest.Run(t.Context(), env, "nodes", "revoke", deviceID, "--reason", "lost")
	if res.Code != 0 {
		t.Fatalf("revoke: exit %d: %s", res.Code, res.Stderr)
	}
	cmdtest.WantOutput(t, "revoke", res.Stdout, "ID             "+deviceID, "Name           build-01", "Platform       linux/arm64",
		"Labels         site=lab", "Paired         2025-05-30T12:00:00Z",
		"CERTIFICATE                                                              SERIAL  NOT BEFORE            NOT AFTER             REVOKED",
		certFP+"  0a1b    2025-06-01T11:00:00Z  2025-06-02T11:00:00Z  -",
		oldFP+"  09ff    2025-05-31T11:00:00Z  2025-06-01T11:00:00Z  2025-06-01T10:00:00Z (renewed)")

	if f.sent().revoke.GetId() != deviceID || f.sent().revoke.GetReason() != "lost" {
		t.Fatalf("revoke: exit %d, sent %v: %s", res.Code, f.sent().revoke, res.Stderr)
	}
	cmdtest.WantOutput(t, "revoke", res.Stdout, "Revoked        2025-06-01T12:00:00Z (lost)")

	res = cmdtest.Run(t.Context(), env, "nodes", "rotate-cert", deviceID)
	if res.Code != 0 || f.sent().rotate.GetGrace() != nil {
		t.Fatalf("rotate-cert: exit %d, sent %v: %s", res.Code, f.sent().rotate, res.Stderr)
	}
	res = cmdtest.Run(t.Context(), env, "nodes", "rotate-cert", deviceID, "--grace", "10m", "-o", "json")
	if res.Code != 0 || f.sent().rotate.GetGrace().AsDuration() != 10*time.Minute {
		t.Fatalf("rotate-cert --grace 10m: exit %d, sent %v: %s", res.Code, f.sent().rotate, res.Stderr)
	}
	var rotated controlplanev1.RotateDeviceCertificateResponse
	if err := protojson.Unmarshal([]byte(res.Stdout), &rotated); err != nil || rotated.GetDevice().GetRotateTime() == nil {
		t.Errorf("rotate-cert -o json: %v, %v", res.Stdout, err)
	}
	res = cmdtest.Run(t.Context(), env, "nodes", "rotate-cert", deviceID)
	cmdtest.WantOutput(t, "rotate-cert", res.Stdout, "Rotation asked  2025-06-01T12:00:00Z", "2025-06-01T13:00:00Z (rotated)")
}
