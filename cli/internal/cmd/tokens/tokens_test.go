package tokens_test

import (
	"testing"

	"github.com/palyra/palyra/cli/internal/cmd/tokens"
	"github.com/palyra/palyra/internal/cliusage"
)

// TestTokenIDArgument checks the ID argument of get, rotate and revoke.
func TestTokenIDArgument(t *testing.T) {
	t.Parallel()
	const id = "01JD5ZJ8Q0W1X2Y3Z4A5B6C7D8"
	for _, in := range []string{id, "01jd5zj8q0w1x2y3z4a5b6c7d8", "token:" + id} {
		if got, err := tokens.ParseID(in); err != nil || got != id {
			t.Errorf("ParseID(%q) = %q, %v; want %q", in, got, err, id)
		}
	}
	for _, in := range []string{"", "01JD5ZJ8Q0W1X2Y3Z4A5B6C7D", id + "9", "01JD5ZJ8Q0W1X2Y3Z4A5B6C7DU", "plr_" + id + "_secret", "user:" + id} {
		if _, err := tokens.ParseID(in); !cliusage.Is(err) {
			t.Errorf("ParseID(%q) = %v, want a usage error", in, err)
		}
	}
}
