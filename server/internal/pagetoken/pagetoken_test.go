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

func TestPage(t *testing.T) {
	t.Parallel()
	type row struct {
		at time.Time
		id string
	}
	base := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	rows := []row{{base, "c"}, {base.Add(-time.Second), "b"}, {base.Add(-2 * time.Second), "a"}}
	pos := func(r row) (time.Time, string) { return r.at, r.id }
	for _, tc := range []struct {
		limit    int
		wantLen  int
		wantNext string
	}{
		{limit: 3, wantLen: 3, wantNext: ""},
		{limit: 5, wantLen: 3, wantNext: ""},
		{limit: 2, wantLen: 2, wantNext: Encode(rows[1].at, "b")},
		{limit: 1, wantLen: 1, wantNext: Encode(rows[0].at, "c")},
	} {
		page, next := Page(rows, tc.limit, pos)
		if len(page) != tc.wantLen || next != tc.wantNext {
			t.Errorf("Page(3 rows, %d) = %d rows, %q; want %d, %q", tc.limit, len(page), next, tc.wantLen, tc.wantNext)
		}
	}
}
