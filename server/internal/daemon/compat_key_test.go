package daemon_test

import (
	"net/http"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"github.com/openai/openai-go/v3"

	accessv1 "github.com/palyra/palyra/gen/go/palyra/access/v1"
	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
)

// TestCompatUpstreamKeyFollowsTheSecret: the provider's api_key is resolved at each
// call, from memory while the secret is unchanged: a new version of the secret is the
// key of the very next call, and once the secret is deleted no call reaches the
// provider.
func TestCompatUpstreamKeyFollowsTheSecret(t *testing.T) {
	t.Parallel()
	b := startCompat(t)
	ctx := t.Context()
	b.setFlag(t, "compat_api", true)
	_, operator := b.createToken(t, &accessv1.CreateTokenRequest{Label: "sdk", Role: accessv1.Role_ROLE_OPERATOR})
	c := b.sdk(operator)
	params := openai.ChatCompletionNewParams{
		Model:    "fake-model",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("one two")},
	}
	call := func(what, wantKey string) {
		t.Helper()
		if _, err := c.Chat.Completions.New(ctx, params); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if _, auth := b.fake.lastRequest(); auth != "Bearer "+wantKey {
			t.Errorf("%s: the provider got %q, want the key %q", what, auth, wantKey)
		}
	}
	call("the first call", upstreamKey)
	call("a second call", upstreamKey)
	b.putSecret(t, b.owner, "fake", "sk-fake-rotated")
	call("the call after a new version", "sk-fake-rotated")

	secrets := b.secretsClient(b.owner)
	if _, err := secrets.DeleteSecret(ctx, connect.NewRequest(&controlplanev1.DeleteSecretRequest{Name: "fake", Force: true})); err != nil {
		t.Fatal(err)
	}
	b.fake.mu.Lock()
	before := len(b.fake.requests)
	b.fake.mu.Unlock()
	_, err := c.Chat.Completions.New(ctx, params)
	if e := apiError(t, "a call after the secret's delete", err, http.StatusBadGateway, "provider_error", ""); !strings.Contains(e.Message, "api_key") {
		t.Errorf("a call after the secret's delete: %q does not name the api_key", e.Message)
	}
	b.fake.mu.Lock()
	after := len(b.fake.requests)
	b.fake.mu.Unlock()
	if after != before {
		t.Error("a call reached the provider after its key's secret was deleted")
	}
}
