package client_test

import (
	"context"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"connectrpc.com/connect"

	"github.com/palyra/palyra/cli/internal/client"
	accessv1 "github.com/palyra/palyra/gen/go/palyra/access/v1"
	"github.com/palyra/palyra/gen/go/palyra/access/v1/accessv1connect"
)

// recordingAccess answers WhoAmI with the Authorization header it received as the
// principal id, and refuses a call without one as palyrad does.
type recordingAccess struct {
	accessv1connect.UnimplementedAccessServiceHandler
}

func (recordingAccess) WhoAmI(_ context.Context, req *connect.Request[accessv1.WhoAmIRequest]) (*connect.Response[accessv1.WhoAmIResponse], error) {
	auth := req.Header().Get("Authorization")
	if auth == "" {
		return nil, connect.NewError(connect.CodeUnauthenticated, errors.New("missing or invalid credentials"))
	}
	return connect.NewResponse(&accessv1.WhoAmIResponse{Principal: &accessv1.Principal{Id: auth}}), nil
}

// TestAuthBearerHeader checks that the client sends the token as a bearer token with
// every call, and nothing without one.
func TestAuthBearerHeader(t *testing.T) {
	t.Parallel()
	mux := http.NewServeMux()
	mux.Handle(accessv1connect.NewAccessServiceHandler(recordingAccess{}))
	srv := httptest.NewUnstartedServer(mux)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}

	const token = "plr_01JD5ZJ8Q0W1X2Y3Z4A5B6C7D8_secret"
	c, err := client.New(client.Options{URL: srv.URL, CAFile: caFile, Token: token, TokenSource: "PALYRA_TOKEN"})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		res, err := c.Access.WhoAmI(t.Context(), connect.NewRequest(&accessv1.WhoAmIRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		if got := res.Msg.GetPrincipal().GetId(); got != "Bearer "+token {
			t.Errorf("Authorization = %q, want Bearer and the token", got)
		}
	}

	anonymous, err := client.New(client.Options{URL: srv.URL, CAFile: caFile})
	if err != nil {
		t.Fatal(err)
	}
	_, err = anonymous.Access.WhoAmI(t.Context(), connect.NewRequest(&accessv1.WhoAmIRequest{}))
	if err == nil || !strings.Contains(err.Error(), "no API token was given") {
		t.Errorf("WhoAmI without a token: %v, want the login advice", err)
	}
}

// TestTrustCACertificate checks the CA option: a node trusts the CA certificate it
// checked, and nothing else, and gives no other trust setting with it.
func TestTrustCACertificate(t *testing.T) {
	t.Parallel()
	mux := http.NewServeMux()
	mux.Handle(accessv1connect.NewAccessServiceHandler(recordingAccess{}))
	srv := httptest.NewUnstartedServer(mux)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)

	c, err := client.New(client.Options{URL: srv.URL, CA: srv.Certificate(), Token: "plr_x_secret"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Access.WhoAmI(t.Context(), connect.NewRequest(&accessv1.WhoAmIRequest{})); err != nil {
		t.Errorf("WhoAmI trusting the server's CA: %v", err)
	}
	other, _ := certificate(t, "Other CA", true, nil, nil)
	c, err = client.New(client.Options{URL: srv.URL, CA: other, Token: "plr_x_secret"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Access.WhoAmI(t.Context(), connect.NewRequest(&accessv1.WhoAmIRequest{})); err == nil ||
		!strings.Contains(err.Error(), "not signed by a CA you trust") {
		t.Errorf("WhoAmI trusting another CA: %v", err)
	}
	if _, err := client.New(client.Options{URL: srv.URL, CA: srv.Certificate(), CAFingerprint: client.Fingerprint(srv.Certificate())}); err == nil {
		t.Error("a CA certificate and a fingerprint were both taken")
	}
}
