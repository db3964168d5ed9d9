// Package pagetoken makes the page tokens of palyrad's lists, which are sorted newest
// first by (creation time, id): a token is the position of the last item of a page,
// opaque to clients (base64 of the time in RFC 3339 with nanoseconds, "|", the id).
package pagetoken

import (
	"encoding/base64"
	"strings"
	"time"

	"github.com/palyra/palyra/server/internal/errdefs"
)

// ErrMalformed refuses a token that Encode did not make (Invalid).
var ErrMalformed = errdefs.New(errdefs.Invalid, "malformed page token")

// Encode returns the token of the position (at, id).
func Encode(at time.Time, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(at.UTC().Format(time.RFC3339Nano) + "|" + id))
}

// Decode returns the position a token encodes.
func Decode(s string) (time.Time, string, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return time.Time{}, "", ErrMalformed
	}
	ts, id, ok := strings.Cut(string(b), "|")
	at, err := time.Parse(time.RFC3339Nano, ts)
	if !ok || err != nil || id == "" {
		return time.Time{}, "", ErrMalformed
	}
	return at, id, nil
}

// Page cuts rows, fetched with a limit of limit+1, to a page of at most limit rows and
// returns the token of the next page: empty when rows held no more than limit. pos
// returns a row's position (creation time, id).
func Page[R any](rows []R, limit int, pos func(R) (time.Time, string)) ([]R, string) {
	if len(rows) <= limit {
		return rows, ""
	}
	rows = rows[:limit]
	return rows, Encode(pos(rows[len(rows)-1]))
}
