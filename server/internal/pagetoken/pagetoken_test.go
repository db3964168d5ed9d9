package pagetoken

import (
	"errors"
	"testing"
	"time"
)

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	at := time.Date(2030, 5, 6, 7, 8, 9, 123456789, time.FixedZone("x", 3600))
	gotAt, gotID, err := Decode(Encode(at, "01JD5ZJ8Q0W1X2Y3Z4A5B6C7D8"))
	if err != nil || !gotAt.Equal(at) || gotID != "01JD5ZJ8Q0W1X2Y3Z4A5B6C7D8" {
		t.Errorf("round trip: %v, %q, %v", gotAt, gotID, err)
	}
	for _, bad := range []string{"", "!!!", "bm90IGEgdG9rZW4", Encode(at, "")} {
		if _, _, err := Decode(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("Decode(%q): %v", bad, err)
		}
	}
}
