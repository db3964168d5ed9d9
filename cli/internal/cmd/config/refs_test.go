package config_test

import (
	"crypto/rand"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/palyra/palyra/cli/internal/cmd/cmdtest"
)

// TestSecretReferenceCommands runs issue 12's references with the real CLI against a
// real palyrad: config set of a provider's api_key takes secret:NAME once the secret
// exists, config get, history and export show the reference and never the value, and
// secrets delete is refused naming the key until --force, which prints it.
func TestSecretReferenceCommands(t *testing.T) {
	t.Parallel()
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	r := cmdtest.StartReplica(t, cmdtest.Database(t), base64.StdEncoding.EncodeToString(key))
	env := r.Env(r.Owner)
	const (
		apiKey = "compat.providers.openai.api_key"
		value  = "sk-test-91c3e0f2ab"
	)

	res := cmdtest.Expect(t, env, 1, "config", "set", apiKey, "secret:openai")
	cmdtest.WantOutput(t, "a missing secret", res.Stderr, apiKey, `secret "openai" does not exist`)
	res = cmdtest.Expect(t, env, 1, "config", "set", apiKey, value)
	cmdtest.WantOutput(t, "a plain key", res.Stderr, apiKey, "palyra secrets set")
	if strings.Contains(res.Stderr, value) {
		t.Errorf("the refusal repeats the key: %s", res.Stderr)
	}
	res = cmdtest.Expect(t, env, 1, "config", "set", apiKey, "secret:openai@0")
	cmdtest.WantOutput(t, "a malformed reference", res.Stderr, apiKey, "malformed secret reference")

	if res := cmdtest.Start(t.Context(), env, strings.NewReader(value), "secrets", "set", "openai").Wait(t); res.Code != 0 {
		t.Fatalf("secrets set: %d %s", res.Code, res.Stderr)
	}
	cmdtest.Expect(t, env, 0, "config", "set", apiKey, "secret:openai", "--reason", "openai")
	res = cmdtest.Expect(t, env, 0, "config", "get", apiKey)
	cmdtest.WantRow(t, "get", res.Stdout, apiKey, "secret:openai", "database", "(revision", "1)", "yes")
	history := cmdtest.Expect(t, env, 0, "config", "history", "1").Stdout
	cmdtest.WantOutput(t, "history", history, apiKey, "secret:openai")
	export := cmdtest.Expect(t, env, 0, "config", "export").Stdout
	cmdtest.WantOutput(t, "export", export, "[compat.providers.openai]", "api_key = 'secret:openai'")
	for what, out := range map[string]string{"get": res.Stdout, "history": history, "export": export} {
		if strings.Contains(out, value) {
			t.Errorf("%s shows the secret's value", what)
		}
	}

	res = cmdtest.Expect(t, env, 1, "secrets", "delete", "openai")
	cmdtest.WantOutput(t, "delete", res.Stderr, apiKey, "--force")
	res = cmdtest.Expect(t, env, 0, "secrets", "delete", "openai", "--force")
	cmdtest.WantRow(t, "delete --force", res.Stdout, "Referred", "by", apiKey)
	res = cmdtest.Expect(t, env, 0, "config", "get", apiKey)
	cmdtest.WantRow(t, "get after the delete", res.Stdout, apiKey, "secret:openai", "database")
}
