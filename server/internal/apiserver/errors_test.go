package apiserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"

	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	"github.com/palyra/palyra/gen/go/palyra/controlplane/v1/controlplanev1connect"
	"github.com/palyra/palyra/server/internal/errdefs"
	"github.com/palyra/palyra/server/internal/store"
)

// capture returns a logger writing to the returned buffer.
func capture() (*slog.Logger, *bytes.Buffer) {
	var buf bytes.Buffer
	return slog.New(slog.NewTextHandler(&buf, nil)), &buf
}

// asConnect returns err as a Connect error, failing the test when it is not one.
func asConnect(t *testing.T, err error) *connect.Error {
	t.Helper()
	var ce *connect.Error
	if !errors.As(err, &ce) {
		t.Fatalf("%v (%T) is not a Connect error", err, err)
	}
	return ce
}

// fields returns the BadRequest field violations of ce as "field: description".
func fields(t *testing.T, ce *connect.Error) []string {
	t.Helper()
	var out []string
	for _, d := range ce.Details() {
		v, err := d.Value()
		if err != nil {
			t.Fatalf("detail %s: %v", d.Type(), err)
		}
		br, ok := v.(*errdetails.BadRequest)
		if !ok {
			t.Fatalf("unexpected detail %T", v)
		}
		for _, f := range br.GetFieldViolations() {
			out = append(out, f.GetField()+": "+f.GetDescription())
		}
	}
	return out
}

// TestConnectErrorKinds checks that every kind becomes its code with its message, and
// that nothing is logged for them.
func TestConnectErrorKinds(t *testing.T) {
	// The expected codes by kind, in order, written independently of kindCodes.
	want := []connect.Code{
		errdefs.Internal: connect.CodeInternal, connect.CodeInvalidArgument, connect.CodeNotFound,
		connect.CodeAlreadyExists, connect.CodeFailedPrecondition, connect.CodePermissionDenied,
		connect.CodeUnauthenticated, connect.CodeResourceExhausted, connect.CodeAborted,
		connect.CodeDeadlineExceeded, connect.CodeUnavailable, connect.CodeDataLoss,
	}
	for k := errdefs.Invalid; k <= errdefs.DataLoss; k++ {
		code := want[k]
		log, buf := capture()
		// Wrapped with context, and with a cause that must not show.
		err := fmt.Errorf("pkg: op: %w", errdefs.Wrap(errors.New("secret cause"), k, "the %s message", k))
		ce := asConnect(t, connectError(log, "/p.S/M", err))
		if ce.Code() != code || ce.Message() != fmt.Sprintf("the %s message", k) {
			t.Errorf("kind %s: got %v %q, want %v %q", k, ce.Code(), ce.Message(), code, fmt.Sprintf("the %s message", k))
		}
		if len(ce.Details()) != 0 || ce.Meta().Get("Retry-After") != "" {
			t.Errorf("kind %s: unexpected details %v or Retry-After %q", k, ce.Details(), ce.Meta().Get("Retry-After"))
		}
		if buf.Len() != 0 {
			t.Errorf("kind %s: logged %q", k, buf.String())
		}
	}
}

// TestConnectErrorFields checks that the fields at fault become one BadRequest detail.
func TestConnectErrorFields(t *testing.T) {
	log, _ := capture()
	ce := asConnect(t, connectError(log, "/p.S/M", errdefs.InvalidField("name", "must not be empty")))
	if ce.Code() != connect.CodeInvalidArgument || ce.Message() != "name: must not be empty" {
		t.Errorf("one field: got %v %q", ce.Code(), ce.Message())
	}
	if got := fields(t, ce); len(got) != 1 || got[0] != "name: must not be empty" {
		t.Errorf("one field: violations %q", got)
	}

	ce = asConnect(t, connectError(log, "/p.S/M", errdefs.InvalidFields(
		errdefs.Violation{Field: "scopes[0]", Description: "unknown"},
		errdefs.Violation{Field: "scopes[2]", Description: "not of the role"},
	)))
	if ce.Code() != connect.CodeInvalidArgument || ce.Message() != "scopes[0]: unknown" {
		t.Errorf("two fields: got %v %q, want the first field's message", ce.Code(), ce.Message())
	}
	if got := fields(t, ce); strings.Join(got, "; ") != "scopes[0]: unknown; scopes[2]: not of the role" {
		t.Errorf("two fields: violations %q", got)
	}
}

// TestConnectErrorInfo checks that a reason and its metadata become one ErrorInfo detail.
func TestConnectErrorInfo(t *testing.T) {
	log, _ := capture()
	ce := asConnect(t, connectError(log, "/p.S/M", fmt.Errorf("op: %w", &errdefs.Error{
		Kind: errdefs.Aborted, Message: "stale", Reason: "STALE_REVISION", Metadata: map[string]string{"current_revision": "7"},
	})))
	if ce.Code() != connect.CodeAborted || ce.Message() != "stale" || len(ce.Details()) != 1 {
		t.Fatalf("got %v %q with %d details", ce.Code(), ce.Message(), len(ce.Details()))
	}
	v, err := ce.Details()[0].Value()
	info, ok := v.(*errdetails.ErrorInfo)
	if err != nil || !ok || info.GetReason() != "STALE_REVISION" || info.GetDomain() != ErrorDomain || info.GetMetadata()["current_revision"] != "7" {
		t.Errorf("detail %v (%v)", v, err)
	}
}

// TestConnectErrorRetryAfter checks that a retry delay becomes Retry-After in whole
// seconds, rounded up.
func TestConnectErrorRetryAfter(t *testing.T) {
	log, _ := capture()
	for wait, want := range map[time.Duration]string{
		1500 * time.Millisecond: "2",
		10 * time.Millisecond:   "1",
		time.Minute:             "60",
	} {
		ce := asConnect(t, connectError(log, "/p.S/M", errdefs.Exhausted(wait, "slow down")))
		if ce.Code() != connect.CodeResourceExhausted || ce.Message() != "slow down" {
			t.Errorf("%s: got %v %q", wait, ce.Code(), ce.Message())
		}
		if got := ce.Meta().Get("Retry-After"); got != want {
			t.Errorf("%s: Retry-After %q, want %q", wait, got, want)
		}
	}
}

// typedError is a package's own error type implementing errdefs.Kinded.
type typedError struct{ Key string }

func (e *typedError) Error() string           { return "cannot change " + e.Key }
func (e *typedError) ErrorKind() errdefs.Kind { return errdefs.FailedPrecondition }

// TestConnectErrorTyped checks that a Kinded error that is not an *errdefs.Error is
// answered with its kind and its Error(), and that a sentinel kinded error matches with
// errors.Is through the wrapping that names it.
func TestConnectErrorTyped(t *testing.T) {
	log, _ := capture()
	ce := asConnect(t, connectError(log, "/p.S/M", fmt.Errorf("flags: set: %w", &typedError{Key: "a"})))
	if ce.Code() != connect.CodeFailedPrecondition || ce.Message() != "cannot change a" || len(ce.Details()) != 0 {
		t.Errorf("typed: got %v %q %v", ce.Code(), ce.Message(), ce.Details())
	}

	sentinel := errdefs.New(errdefs.NotFound, "no such thing")
	named := errdefs.Wrap(fmt.Errorf("pkg: get x: %w", sentinel), errdefs.NotFound, "there is no thing x")
	if !errors.Is(named, sentinel) {
		t.Errorf("errors.Is(%v, sentinel) is false", named)
	}
	ce = asConnect(t, connectError(log, "/p.S/M", named))
	if ce.Code() != connect.CodeNotFound || ce.Message() != "there is no thing x" {
		t.Errorf("named sentinel: got %v %q, want the outer message", ce.Code(), ce.Message())
	}
}

// TestConnectErrorSentinels checks the store's sentinels, the context's errors and
// Connect errors that pass unchanged.
func TestConnectErrorSentinels(t *testing.T) {
	log, buf := capture()
	for _, tc := range []struct {
		err  error
		code connect.Code
		msg  string
	}{
		{fmt.Errorf("x: %w", store.ErrNotFound), connect.CodeNotFound, "not found"},
		{fmt.Errorf("x: %w", store.ErrConflict), connect.CodeAlreadyExists, "already exists"},
		{fmt.Errorf("x: %w", store.ErrUnavailable), connect.CodeUnavailable, "the database is unavailable; retry later"},
		{fmt.Errorf("x: %w", context.Canceled), connect.CodeCanceled, "the call was canceled"},
		{connect.NewError(connect.CodeInvalidArgument, errors.New("validation: bad")), connect.CodeInvalidArgument, "validation: bad"},
	} {
		ce := asConnect(t, connectError(log, "/p.S/M", tc.err))
		if ce.Code() != tc.code || ce.Message() != tc.msg {
			t.Errorf("%v: got %v %q, want %v %q", tc.err, ce.Code(), ce.Message(), tc.code, tc.msg)
		}
	}
	if buf.Len() != 0 {
		t.Errorf("logged %q", buf.String())
	}
	if connectError(log, "/p.S/M", nil) != nil {
		t.Error("nil became an error")
	}
}

// TestConnectErrorInternal checks that an unclassified error, and an errdefs error of
// kind Internal, are answered Internal without a word of their text, and logged once
// in full.
func TestConnectErrorInternal(t *testing.T) {
	for name, err := range map[string]error{
		"plain":    fmt.Errorf("pkg: query: %w", errors.New("password=hunter2 rejected")),
		"internal": errdefs.Wrap(errors.New("password=hunter2 rejected"), errdefs.Internal, "pkg: broken"),
	} {
		log, buf := capture()
		ce := asConnect(t, connectError(log, "/p.S/M", err))
		if ce.Code() != connect.CodeInternal || strings.Contains(ce.Error(), "hunter2") || strings.Contains(ce.Error(), "pkg") {
			t.Errorf("%s: got %v %q", name, ce.Code(), ce.Message())
		}
		if len(ce.Details()) != 0 || len(ce.Meta()) != 0 {
			t.Errorf("%s: details %v, meta %v", name, ce.Details(), ce.Meta())
		}
		lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
		if len(lines) != 1 || !strings.Contains(lines[0], "hunter2") || !strings.Contains(lines[0], "/p.S/M") {
			t.Errorf("%s: logged %q, want one line with the error and the procedure", name, buf.String())
		}
	}
}

// deviceStub answers GetDevice with its error, unary, for TestErrorInterceptor.
type deviceStub struct {
	controlplanev1connect.UnimplementedDeviceServiceHandler
	err error
}

func (s deviceStub) GetDevice(context.Context, *connect.Request[controlplanev1.GetDeviceRequest]) (*connect.Response[controlplanev1.GetDeviceResponse], error) {
	return nil, s.err
}

// TestErrorInterceptor checks, through a real client and server, that the interceptor
// applies the translation: the code, the message, the details and Retry-After reach
// the client.
func TestErrorInterceptor(t *testing.T) {
	log, _ := capture()
	stub := &deviceStub{}
	mux := http.NewServeMux()
	mux.Handle(controlplanev1connect.NewDeviceServiceHandler(stub, connect.WithInterceptors(ErrorInterceptor(log))))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	for _, protocol := range []connect.ClientOption{connect.WithGRPC(), connect.WithHTTPGet()} {
		client := controlplanev1connect.NewDeviceServiceClient(http.DefaultClient, srv.URL, protocol)

		stub.err = fmt.Errorf("devices: %w", errdefs.Exhausted(2*time.Second, "too many calls"))
		_, err := client.GetDevice(t.Context(), connect.NewRequest(&controlplanev1.GetDeviceRequest{Id: "x"}))
		ce := asConnect(t, err)
		if ce.Code() != connect.CodeResourceExhausted || ce.Message() != "too many calls" || ce.Meta().Get("Retry-After") != "2" {
			t.Errorf("exhausted: got %v %q, Retry-After %q", ce.Code(), ce.Message(), ce.Meta().Get("Retry-After"))
		}

		stub.err = errdefs.InvalidField("id", "not a device id")
		_, err = client.GetDevice(t.Context(), connect.NewRequest(&controlplanev1.GetDeviceRequest{Id: "x"}))
		ce = asConnect(t, err)
		if got := fields(t, ce); ce.Code() != connect.CodeInvalidArgument || len(got) != 1 || got[0] != "id: not a device id" {
			t.Errorf("invalid field: got %v %q, violations %q", ce.Code(), ce.Message(), got)
		}
	}
}
