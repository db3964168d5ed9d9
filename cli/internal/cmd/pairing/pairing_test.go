package pairing_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/palyra/palyra/cli/internal/cmd/cmdtest"
	"github.com/palyra/palyra/cli/internal/qrterm"
	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	"github.com/palyra/palyra/gen/go/palyra/controlplane/v1/controlplanev1connect"
	nodev1 "github.com/palyra/palyra/gen/go/palyra/node/v1"
)

const (
	previousID = "01JD5ZJ8Q0W1X2Y3Z4A5B6C7V0"
	requestID  = "01JD5ZJ8Q0W1X2Y3Z4A5B6C7R1"
	codeID     = "01JD5ZJ8Q0W1X2Y3Z4A5B6C7C1"
	deviceID   = "01JD5ZJ8Q0W1X2Y3Z4A5B6C7V1"
	keyFP      = "sha256:3f2a0c6b8f1e4d2a9b7c5e3f1a0d9c8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f9e8d"
	caFP       = "sha256:fabd539369598d55ccae908a97924477f9eca9b3cd0fba7275d7da5a67503870"
	pin        = "48213907"
	qrCode     = "Zm9vYmFyYmF6cXV4cXV1eHl6enk"
)

// fakePairing is a PairingService that records what it is asked and answers with
// canned codes and requests.
type fakePairing struct {
	controlplanev1connect.UnimplementedPairingServiceHandler
	mu         sync.Mutex // guards the following
	calls      int
	create     *controlplanev1.CreatePairingCodeRequest
	listCodes  []*controlplanev1.ListPairingCodesRequest
	listReqs   []*controlplanev1.ListPairingRequestsRequest
	approve    *controlplanev1.ApprovePairingRequestRequest
	reject     *controlplanev1.RejectPairingRequestRequest
	approveErr error
	claim      nodev1.DeviceClaim // of the requests it shows; unspecified: a new device
}

var _ controlplanev1connect.PairingServiceHandler = (*fakePairing)(nil)

func (f *fakePairing) record(do func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	do()
}

// sent is what a fakePairing was sent.
type sent struct {
	create    *controlplanev1.CreatePairingCodeRequest
	listCodes []*controlplanev1.ListPairingCodesRequest
	listReqs  []*controlplanev1.ListPairingRequestsRequest
	approve   *controlplanev1.ApprovePairingRequestRequest
	reject    *controlplanev1.RejectPairingRequestRequest
}

// sent returns what the fake was sent so far.
func (f *fakePairing) sent() sent {
	f.mu.Lock()
	defer f.mu.Unlock()
	return sent{create: f.create, listCodes: f.listCodes, listReqs: f.listReqs, approve: f.approve, reject: f.reject}
}

func (f *fakePairing) callCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

func pairingCode(method controlplanev1.PairingMethod) *controlplanev1.PairingCode {
	return &controlplanev1.PairingCode{
		Id: codeID, Method: method, Label: "build box", State: controlplanev1.PairingCodeState_PAIRING_CODE_STATE_ACTIVE,
		CreateTime: timestamppb.New(cmdtest.Now), ExpireTime: timestamppb.New(cmdtest.Now.Add(10 * time.Minute)),
		CreatedBy: "token:01JD5ZJ8Q0W1X2Y3Z4A5B6C7D8", FailedAttempts: 1,
	}
}

func pendingRequest() *controlplanev1.PairingRequest {
	return &controlplanev1.PairingRequest{
		Id: requestID, State: nodev1.PairingState_PAIRING_STATE_PENDING_APPROVAL, DeviceName: "build-01",
		Platform: "linux/amd64", AgentVersion: "v0.3.0", SourceAddress: "192.0.2.7", PublicKeyFingerprint: keyFP,
		CreateTime: timestamppb.New(cmdtest.Now.Add(-5 * time.Minute)), Age: durationpb.New(5*time.Minute + 3*time.Second),
		ExpireTime: timestamppb.New(cmdtest.Now.Add(5 * time.Minute)), CodeId: codeID,
	}
}

func (f *fakePairing) CreatePairingCode(_ context.Context, req *connect.Request[controlplanev1.CreatePairingCodeRequest]) (*connect.Response[controlplanev1.CreatePairingCodeResponse], error) {
	f.record(func() { f.create = req.Msg })
	res := &controlplanev1.CreatePairingCodeResponse{PairingCode: pairingCode(req.Msg.GetMethod()), CaFingerprint: caFP}
	if req.Msg.GetMethod() == controlplanev1.PairingMethod_PAIRING_METHOD_QR {
		res.Code = qrCode
		res.PairingUri = "palyra://pair?url=https%3A%2F%2Fadmin-host%3A7443&code=" + qrCode + "&ca=" + caFP
	} else {
		res.Code = pin
	}
	return connect.NewResponse(res), nil
}

func (f *fakePairing) ListPairingCodes(_ context.Context, req *connect.Request[controlplanev1.ListPairingCodesRequest]) (*connect.Response[controlplanev1.ListPairingCodesResponse], error) {
	f.record(func() { f.listCodes = append(f.listCodes, req.Msg) })
	used := pairingCode(controlplanev1.PairingMethod_PAIRING_METHOD_PIN)
	used.Id, used.State, used.RequestId, used.Label = "01JD5ZJ8Q0W1X2Y3Z4A5B6C7C2", controlplanev1.PairingCodeState_PAIRING_CODE_STATE_USED, requestID, ""
	if req.Msg.GetPageToken() == "" {
		return connect.NewResponse(&controlplanev1.ListPairingCodesResponse{
			PairingCodes: []*controlplanev1.PairingCode{pairingCode(controlplanev1.PairingMethod_PAIRING_METHOD_QR)}, NextPageToken: "p2",
		}), nil
	}
	return connect.NewResponse(&controlplanev1.ListPairingCodesResponse{PairingCodes: []*controlplanev1.PairingCode{used}}), nil
}

func (f *fakePairing) DeletePairingCode(_ context.Context, req *connect.Request[controlplanev1.DeletePairingCodeRequest]) (*connect.Response[controlplanev1.DeletePairingCodeResponse], error) {
	f.record(func() {})
	c := pairingCode(controlplanev1.PairingMethod_PAIRING_METHOD_PIN)
	c.Id, c.State = req.Msg.GetId(), controlplanev1.PairingCodeState_PAIRING_CODE_STATE_DELETED
	return connect.NewResponse(&controlplanev1.DeletePairingCodeResponse{PairingCode: c}), nil
}

// request is the pending request the fake shows, naming a device as its claim says.
func (f *fakePairing) request() *controlplanev1.PairingRequest {
	r := pendingRequest()
	f.mu.Lock()
	defer f.mu.Unlock()
	r.DeviceClaim = f.claim
	if f.claim != nodev1.DeviceClaim_DEVICE_CLAIM_UNSPECIFIED && f.claim != nodev1.DeviceClaim_DEVICE_CLAIM_NEW {
		r.PreviousDeviceId = previousID
	}
	if f.claim == nodev1.DeviceClaim_DEVICE_CLAIM_PROVEN {
		r.PossessionCertificateFingerprint = caFP
	}
	return r
}

func (f *fakePairing) ListPairingRequests(_ context.Context, req *connect.Request[controlplanev1.ListPairingRequestsRequest]) (*connect.Response[controlplanev1.ListPairingRequestsResponse], error) {
	f.record(func() { f.listReqs = append(f.listReqs, req.Msg) })
	return connect.NewResponse(&controlplanev1.ListPairingRequestsResponse{PairingRequests: []*controlplanev1.PairingRequest{f.request()}}), nil
}

func (f *fakePairing) GetPairingRequest(_ context.Context, req *connect.Request[controlplanev1.GetPairingRequestRequest]) (*connect.Response[controlplanev1.GetPairingRequestResponse], error) {
	f.record(func() {})
	if req.Msg.GetId() != requestID {
		return nil, connect.NewError(connect.CodeNotFound, errors.New("no pairing request "+req.Msg.GetId()))
	}
	r := f.request()
	r.Labels = map[string]string{"site": "lab", "role": "builder"}
	return connect.NewResponse(&controlplanev1.GetPairingRequestResponse{PairingRequest: r}), nil
}

func (f *fakePairing) ApprovePairingRequest(_ context.Context, req *connect.Request[controlplanev1.ApprovePairingRequestRequest]) (*connect.Response[controlplanev1.ApprovePairingRequestResponse], error) {
	var err error
	f.record(func() { f.approve, err = req.Msg, f.approveErr })
	if err != nil {
		return nil, err
	}
	r := f.request()
	r.State, r.DeviceId, r.Labels, r.DecidedBy = nodev1.PairingState_PAIRING_STATE_APPROVED, deviceID, req.Msg.GetLabels(), "user:owner"
	if req.Msg.GetReplaceDeviceId() != "" || r.GetDeviceClaim() == nodev1.DeviceClaim_DEVICE_CLAIM_PROVEN {
		r.DeviceId = r.GetPreviousDeviceId()
	}
	return connect.NewResponse(&controlplanev1.ApprovePairingRequestResponse{PairingRequest: r}), nil
}

func (f *fakePairing) RejectPairingRequest(_ context.Context, req *connect.Request[controlplanev1.RejectPairingRequestRequest]) (*connect.Response[controlplanev1.RejectPairingRequestResponse], error) {
	f.record(func() { f.reject = req.Msg })
	r := pendingRequest()
	r.State, r.Reason = nodev1.PairingState_PAIRING_STATE_REJECTED, req.Msg.GetReason()
	return connect.NewResponse(&controlplanev1.RejectPairingRequestResponse{PairingRequest: r}), nil
}

// setup serves a fake PairingService and returns it with the CLI's environment.
func setup(t *testing.T) (*fakePairing, map[string]string) {
	t.Helper()
	f := &fakePairing{}
	srv := cmdtest.NewServer(t, func(mux *http.ServeMux) { mux.Handle(controlplanev1connect.NewPairingServiceHandler(f)) })
	return f, srv.Env()
}

// lastList returns the last ListPairingRequests request.
func lastList(f *fakePairing) *controlplanev1.ListPairingRequestsRequest {
	l := f.sent().listReqs
	return l[len(l)-1]
}

// TestPairingArguments checks that malformed command lines exit 2 without calling
// palyrad.
func TestPairingArguments(t *testing.T) {
	t.Parallel()
	f, env := setup(t)
	bad := map[string][]string{
		"unknown method":           {"pairing", "codes", "create", "--method", "sms"},
		"ttl too short":            {"pairing", "codes", "create", "--ttl", "10s"},
		"ttl too long":             {"pairing", "codes", "create", "--ttl", "25h"},
		"ttl malformed":            {"pairing", "codes", "create", "--ttl", "ten"},
		"pin digits too few":       {"pairing", "codes", "create", "--pin-digits", "5"},
		"pin digits too many":      {"pairing", "codes", "create", "--pin-digits", "13"},
		"pin digits with qr":       {"pairing", "codes", "create", "--method", "qr", "--pin-digits", "8"},
		"label too long":           {"pairing", "codes", "create", "--label", strings.Repeat("x", 65)},
		"create takes no argument": {"pairing", "codes", "create", "pin"},
		"list limit":               {"pairing", "codes", "list", "--limit", "0"},
		"delete without id":        {"pairing", "codes", "delete"},
		"delete bad id":            {"pairing", "codes", "delete", "42"},
		"unknown state":            {"pairing", "requests", "list", "--state", "waiting"},
		"show bad id":              {"pairing", "requests", "show", "01JD5ZJ8Q0W1X2Y3Z4A5B6C7RU"},
		"approve two ids":          {"pairing", "requests", "approve", requestID, requestID},
		"approve bad fingerprint":  {"pairing", "requests", "approve", requestID, "--expect-fingerprint", "3f2a0c"},
		"approve upper-case fp":    {"pairing", "requests", "approve", requestID, "--expect-fingerprint", strings.ToUpper(keyFP)},
		"approve label no value":   {"pairing", "requests", "approve", requestID, "--label", "site"},
		"approve label bad key":    {"pairing", "requests", "approve", requestID, "--label", "Site=lab"},
		"approve label twice":      {"pairing", "requests", "approve", requestID, "--label", "a=1", "--label", "a=2"},
		"approve replace and new":  {"pairing", "requests", "approve", requestID, "--replace-device", previousID, "--new-device"},
		"approve replace bad id":   {"pairing", "requests", "approve", requestID, "--replace-device", "db-1"},
		"reject without reason":    {"pairing", "requests", "reject", requestID},
		"reject blank reason":      {"pairing", "requests", "reject", requestID, "--reason", "  "},
		"reject long reason":       {"pairing", "requests", "reject", requestID, "--reason", strings.Repeat("x", 257)},
		"alias reject no reason":   {"nodes", "reject", requestID},
		"alias pending state":      {"nodes", "pending", "--state", "approved"},
		"unknown subcommand":       {"pairing", "tokens"},
	}
	for name, args := range bad {
		res := cmdtest.Run(t.Context(), env, args...)
		if res.Code != 2 {
			t.Errorf("%s: exit %d, want 2; stderr:\n%s", name, res.Code, res.Stderr)
		}
	}
	if n := f.callCount(); n != 0 {
		t.Errorf("palyrad was called %d times", n)
	}
}

// TestPairingCodesCreate checks the printed PIN and QR codes, the command for the
// node's operator, and -o json.
func TestPairingCodesCreate(t *testing.T) {
	t.Parallel()
	f, env := setup(t)

	res := cmdtest.Run(t.Context(), env, "pairing", "codes", "create", "--method", "pin", "--ttl", "15m", "--label", "build box", "--pin-digits", "8")
	if res.Code != 0 {
		t.Fatalf("exit %d: %s", res.Code, res.Stderr)
	}
	if f.sent().create.GetMethod() != controlplanev1.PairingMethod_PAIRING_METHOD_PIN || f.sent().create.GetTtl().AsDuration() != 15*time.Minute ||
		f.sent().create.GetLabel() != "build box" || f.sent().create.GetPinDigits() != 8 {
		t.Errorf("request %v", f.sent().create)
	}
	cmdtest.WantOutput(t, "stdout", res.Stdout, "ID              "+codeID, "Method          pin", "Code            "+pin,
		"CA fingerprint  "+caFP, "Expires         2025-06-01T12:10:00Z", "Label           build box",
		"palyra node run --url "+env["PALYRA_URL"]+" --pin "+pin+" --ca-fingerprint "+caFP)
	cmdtest.WantOutput(t, "stderr", res.Stderr, "shown once", "this machine's own address")
	if strings.ContainsAny(res.Stdout, "▀▄█") {
		t.Errorf("a PIN code was drawn as a QR code:\n%s", res.Stdout)
	}

	res = cmdtest.Run(t.Context(), env, "pairing", "codes", "create", "--method", "qr")
	if res.Code != 0 {
		t.Fatalf("exit %d: %s", res.Code, res.Stderr)
	}
	if f.sent().create.GetTtl() != nil || f.sent().create.GetPinDigits() != 0 {
		t.Errorf("defaults sent as %v", f.sent().create)
	}
	uri := "palyra://pair?url=https%3A%2F%2Fadmin-host%3A7443&code=" + qrCode + "&ca=" + caFP
	cmdtest.WantOutput(t, "stdout", res.Stdout, "Method          qr", "URI             "+uri, "\n██ ▄▄▄▄▄ █",
		"palyra node run --qr-uri '"+uri+"'")
	if strings.Contains(res.Stderr, "own address") {
		t.Errorf("the QR URI carries the server's public URL, yet the loopback warning was printed")
	}
	if qr, err := qrterm.Render(uri); err != nil || !strings.Contains(res.Stdout, "\n\n"+qr+"\n") {
		t.Errorf("the QR code of the URI is not drawn on lines of its own (%v):\n%s", err, res.Stdout)
	}

	res = cmdtest.Run(t.Context(), env, "pairing", "codes", "create", "--method", "qr", "-o", "json")
	if res.Code != 0 {
		t.Fatalf("exit %d: %s", res.Code, res.Stderr)
	}
	var got controlplanev1.CreatePairingCodeResponse
	if err := protojson.Unmarshal([]byte(res.Stdout), &got); err != nil {
		t.Fatalf("-o json printed %q: %v", res.Stdout, err)
	}
	if got.GetCode() != qrCode || got.GetPairingUri() != uri || got.GetCaFingerprint() != caFP || got.GetPairingCode().GetId() != codeID {
		t.Errorf("-o json = %v", &got)
	}
}

// TestPairingCodesListDelete checks the list of codes, paging with --all and
// --active, and delete.
func TestPairingCodesListDelete(t *testing.T) {
	t.Parallel()
	f, env := setup(t)
	res := cmdtest.Run(t.Context(), env, "pairing", "codes", "list", "--active")
	if res.Code != 0 {
		t.Fatalf("exit %d: %s", res.Code, res.Stderr)
	}
	cmdtest.WantOutput(t, "stdout", res.Stdout, "ID                          METHOD  STATE   LABEL      EXPIRES               FAILED  CREATED BY                        REQUEST",
		codeID+"  qr      active  build box  2025-06-01T12:10:00Z  1       token:01JD5ZJ8Q0W1X2Y3Z4A5B6C7D8  -")
	cmdtest.WantOutput(t, "stderr", res.Stderr, "pass --all")
	if !f.sent().listCodes[0].GetActiveOnly() {
		t.Error("--active was not sent")
	}

	res = cmdtest.Run(t.Context(), env, "pairing", "codes", "list", "--all", "-o", "json")
	if res.Code != 0 {
		t.Fatalf("exit %d: %s", res.Code, res.Stderr)
	}
	var list controlplanev1.ListPairingCodesResponse
	if err := protojson.Unmarshal([]byte(res.Stdout), &list); err != nil {
		t.Fatal(err)
	}
	if len(list.GetPairingCodes()) != 2 || list.GetPairingCodes()[1].GetRequestId() != requestID || list.GetNextPageToken() != "" {
		t.Errorf("--all listed %v", &list)
	}

	res = cmdtest.Run(t.Context(), env, "pairing", "codes", "delete", strings.ToLower(codeID))
	if res.Code != 0 {
		t.Fatalf("exit %d: %s", res.Code, res.Stderr)
	}
	cmdtest.WantOutput(t, "stdout", res.Stdout, "ID               "+codeID, "State            deleted")
}

// TestPairingRequests checks list (and its alias nodes pending), show, approve and
// reject (and their aliases), the shortened and whole fingerprints, and the server's
// refusal.
func TestPairingRequests(t *testing.T) {
	t.Parallel()
	f, env := setup(t)
	for _, args := range [][]string{
		{"pairing", "requests", "list", "--state", "pending"},
		{"pairing", "requests", "list", "--state", "pending_approval"},
		{"nodes", "pending"},
	} {
		res := cmdtest.Run(t.Context(), env, args...)
		if res.Code != 0 {
			t.Fatalf("%v: exit %d: %s", args, res.Code, res.Stderr)
		}
		cmdtest.WantOutput(t, strings.Join(args, " "), res.Stdout,
			"ID                          STATE             DEVICE NAME  PLATFORM     SOURCE     KEY FINGERPRINT   REPLACES  AGE",
			requestID+"  pending_approval  build-01     linux/amd64  192.0.2.7  sha256:3f2a…9e8d  -         5m3s")
		if got := lastList(f).GetState(); got != nodev1.PairingState_PAIRING_STATE_PENDING_APPROVAL {
			t.Errorf("%v asked for state %v", args, got)
		}
	}
	res := cmdtest.Run(t.Context(), env, "pairing", "requests", "list")
	if res.Code != 0 || lastList(f).GetState() != nodev1.PairingState_PAIRING_STATE_UNSPECIFIED {
		t.Errorf("list without --state: exit %d, state %v", res.Code, lastList(f).GetState())
	}
	res = cmdtest.Run(t.Context(), env, "pairing", "requests", "list", "-o", "json")
	var list controlplanev1.ListPairingRequestsResponse
	if err := protojson.Unmarshal([]byte(res.Stdout), &list); err != nil || list.GetPairingRequests()[0].GetPublicKeyFingerprint() != keyFP {
		t.Errorf("-o json: %v, %v", &list, err)
	}

	res = cmdtest.Run(t.Context(), env, "pairing", "requests", "show", requestID)
	if res.Code != 0 {
		t.Fatalf("show: exit %d: %s", res.Code, res.Stderr)
	}
	cmdtest.WantOutput(t, "show", res.Stdout, "Key fingerprint  "+keyFP, "Device name      build-01", "Agent version    v0.3.0",
		"Labels           role=builder,site=lab", "Created          2025-06-01T11:55:00Z (5m3s ago)", "Code             "+codeID,
		"Replaces         none: a new device")
	res = cmdtest.Run(t.Context(), env, "pairing", "requests", "show", "01JD5ZJ8Q0W1X2Y3Z4A5B6C7R2")
	if res.Code != 1 || !strings.Contains(res.Stderr, "not found: no pairing request 01JD5ZJ8Q0W1X2Y3Z4A5B6C7R2") {
		t.Errorf("show of an unknown request: exit %d, %s", res.Code, res.Stderr)
	}

	for _, cmd := range [][]string{{"pairing", "requests"}, {"nodes"}} {
		args := append(cmd, "approve", strings.ToLower(requestID), "--expect-fingerprint", keyFP, "--label", "site=lab", "--label", "role=builder", "--reinstate")
		res = cmdtest.Run(t.Context(), env, args...)
		if res.Code != 0 {
			t.Fatalf("%v: exit %d: %s", args, res.Code, res.Stderr)
		}
		if a := f.sent().approve; a.GetId() != requestID || a.GetExpectedKeyFingerprint() != keyFP || !a.GetReinstateRevokedDevice() ||
			len(a.GetLabels()) != 2 || a.GetLabels()["site"] != "lab" {
			t.Errorf("%v sent %v", args, a)
		}
		cmdtest.WantOutput(t, "approve", res.Stdout, "State            approved", "Device           "+deviceID)

		args = append(cmd, "reject", requestID, "--reason", "unknown machine")
		res = cmdtest.Run(t.Context(), env, args...)
		if res.Code != 0 || f.sent().reject.GetReason() != "unknown machine" || f.sent().reject.GetId() != requestID {
			t.Errorf("%v: exit %d, sent %v: %s", args, res.Code, f.sent().reject, res.Stderr)
		}
		cmdtest.WantOutput(t, "reject", res.Stdout, "State            rejected", "Reason           unknown machine")
	}

	f.mu.Lock()
	f.approveErr = connect.NewError(connect.CodeFailedPrecondition, errors.New("pairing request "+requestID+" is rejected, not pending"))
	f.mu.Unlock()
	res = cmdtest.Run(t.Context(), env, "nodes", "approve", requestID)
	if res.Code != 1 || !strings.Contains(res.Stderr, "palyra: pairing request "+requestID+" is rejected, not pending") {
		t.Errorf("approving a decided request: exit %d, stderr %s", res.Code, res.Stderr)
	}
	res = cmdtest.Run(t.Context(), env, "pairing", "requests", "approve", requestID, "-o", "json")
	var approved map[string]any
	if res.Code != 1 || json.Unmarshal([]byte(res.Stdout), &approved) == nil {
		t.Errorf("a refused approval with -o json: exit %d, stdout %q", res.Code, res.Stdout)
	}
}

// TestApprovingARequestThatNamesADevice: a request that names a device without proof
// is flagged in list and show; approve shows it, asks a person on a terminal whether to
// pair a new device instead, and sends the approver's choice (--replace-device,
// --new-device); a proven one re-pairs the device without a question.
func TestApprovingARequestThatNamesADevice(t *testing.T) {
	t.Parallel()
	f, env := setup(t)
	f.claim = nodev1.DeviceClaim_DEVICE_CLAIM_UNPROVEN

	res := cmdtest.Run(t.Context(), env, "pairing", "requests", "list")
	cmdtest.WantOutput(t, "list", res.Stdout, "REPLACES", "sha256:3f2a…9e8d  "+previousID+" UNPROVEN  5m3s")
	res = cmdtest.Run(t.Context(), env, "pairing", "requests", "show", requestID)
	cmdtest.WantOutput(t, "show", res.Stdout, "Previous device  "+previousID,
		"Replaces         NOT PROVEN: the node names device "+previousID+" but did not prove it holds that device's key; "+
			"approve with --replace-device "+previousID+" to replace that device")

	// Without a terminal: shown, and sent without a choice (palyrad refuses it).
	res = cmdtest.Run(t.Context(), env, "nodes", "approve", requestID)
	cmdtest.WantOutput(t, "stderr", res.Stderr, "Pairing request "+requestID+" (build-01, key "+keyFP+", from 192.0.2.7): NOT PROVEN")
	if a := f.sent().approve; a.GetNewDevice() || a.GetReplaceDeviceId() != "" {
		t.Errorf("approve without a choice sent %v", a)
	}
	// On a terminal: asked; no answer approves nothing.
	f.mu.Lock()
	f.approve = nil
	f.mu.Unlock()
	res = cmdtest.RunTerminal(t.Context(), env, "\n", "nodes", "approve", requestID)
	if res.Code != 1 || f.sent().approve != nil || !strings.Contains(res.Stderr, "Pair it as a NEW device instead (device "+previousID+" is left as it is)? [y/N]") ||
		!strings.Contains(res.Stderr, "was not approved; to replace device "+previousID+" with its node, pass --replace-device "+previousID) {
		t.Errorf("declined: exit %d, sent %v, stderr:\n%s", res.Code, f.sent().approve, res.Stderr)
	}
	res = cmdtest.RunTerminal(t.Context(), env, "y\n", "nodes", "approve", requestID)
	if res.Code != 0 || !f.sent().approve.GetNewDevice() {
		t.Errorf("answered yes: exit %d, sent %v: %s", res.Code, f.sent().approve, res.Stderr)
	}
	// The approver's explicit choices.
	res = cmdtest.RunTerminal(t.Context(), env, "", "pairing", "requests", "approve", requestID, "--replace-device", strings.ToLower(previousID))
	if res.Code != 0 || f.sent().approve.GetReplaceDeviceId() != previousID || f.sent().approve.GetNewDevice() {
		t.Errorf("--replace-device: exit %d, sent %v: %s", res.Code, f.sent().approve, res.Stderr)
	}
	cmdtest.WantOutput(t, "stderr", res.Stderr, "--replace-device gives it that device's identity",
		"Approved: the node replaces device "+previousID)
	res = cmdtest.Run(t.Context(), env, "pairing", "requests", "approve", requestID, "--new-device")
	if res.Code != 0 || !f.sent().approve.GetNewDevice() || strings.Contains(res.Stderr, "NOT PROVEN") {
		t.Errorf("--new-device: exit %d, sent %v: %s", res.Code, f.sent().approve, res.Stderr)
	}

	// A proven claim: re-paired without a question.
	f.mu.Lock()
	f.claim = nodev1.DeviceClaim_DEVICE_CLAIM_PROVEN
	f.mu.Unlock()
	res = cmdtest.Run(t.Context(), env, "pairing", "requests", "list")
	cmdtest.WantOutput(t, "list", res.Stdout, previousID+" proven")
	res = cmdtest.RunTerminal(t.Context(), env, "", "nodes", "approve", requestID)
	if res.Code != 0 || strings.Contains(res.Stderr, "?") {
		t.Errorf("proven: exit %d: %s", res.Code, res.Stderr)
	}
	cmdtest.WantOutput(t, "stderr", res.Stderr, "Approved: device "+previousID+" is re-paired")
	// A revoked device: the way back needs --reinstate.
	f.mu.Lock()
	f.claim = nodev1.DeviceClaim_DEVICE_CLAIM_REVOKED
	f.mu.Unlock()
	res = cmdtest.Run(t.Context(), env, "pairing", "requests", "show", requestID)
	cmdtest.WantOutput(t, "show", res.Stdout, "REVOKED: the node names device "+previousID+", which is revoked; approve with --replace-device "+
		previousID+" --reinstate")
}
