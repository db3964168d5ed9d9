package pairing

import (
	"context"
	"time"

	"github.com/palyra/palyra/server/internal/ratelimit"
)

// Exported for the tests of package pairing_test only.

// CodeRefusal is the message of every refused pairing code.
const CodeRefusal = codeRefusal

// StatusRefusal is the message of every refused status or watch.
const StatusRefusal = statusRefusal

// RandomPIN draws a PIN of n digits.
var RandomPIN = randomPIN

// SetWatchPoll changes how often watches re-read their request without a notification.
// Call it before the Service serves anything.
func (s *Service) SetWatchPoll(d time.Duration) { s.poll = d }

// SetStartLimit replaces the rate limit of starts. Call it before the Service serves
// anything.
func (s *Service) SetStartLimit(burst int, perMinute float64) {
	s.starts = ratelimit.NewKeyed(ratelimit.Options{Burst: burst, PerMinute: perMinute, Now: s.opts.Now})
}

// Sweep runs what Run does every 15 s: expiries, and forgetting old wrong PINs.
func (s *Service) Sweep(ctx context.Context) { s.sweep(ctx) }
