package cliflag_test

import (
	"strings"
	"testing"
	"time"

	"github.com/palyra/palyra/cli/internal/cliflag"
	"github.com/palyra/palyra/internal/cliusage"
)

// TestFlagDurationParsing checks durations with day and week suffixes.
func TestFlagDurationParsing(t *testing.T) {
	t.Parallel()
	const day = 24 * time.Hour
	good := map[string]time.Duration{
		"30d":   30 * day,
		"1d":    day,
		"24h":   24 * time.Hour,
		"90m":   90 * time.Minute,
		"45s":   45 * time.Second,
		"1d12h": 36 * time.Hour,
		"2w":    14 * day,
		"1h30m": 90 * time.Minute,
		"365d":  365 * day,
		"0d1s":  time.Second,
	}
	for in, want := range good {
		got, err := cliflag.ParseDuration(in)
		if err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	bad := []string{"", "0d", "0", "30", "d", "-1d", "+1d", "1.5d", "1y", "1 d", " 1d", "1d ", "1D", "1dd", "1ms",
		"99999999999999999999d", "300000w"}
	for _, in := range bad {
		if got, err := cliflag.ParseDuration(in); err == nil {
			t.Errorf("ParseDuration(%q) = %v, want an error", in, got)
		}
	}
}

// TestFlagTimeParsing checks points in time: RFC 3339, or a duration ago.
func TestFlagTimeParsing(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	good := map[string]time.Time{
		"1h":                        now.Add(-time.Hour),
		"7d":                        now.Add(-7 * 24 * time.Hour),
		"2025-01-02T15:04:05Z":      time.Date(2025, 1, 2, 15, 4, 5, 0, time.UTC),
		"2025-01-02T15:04:05+02:00": time.Date(2025, 1, 2, 13, 4, 5, 0, time.UTC),
	}
	for in, want := range good {
		got, err := cliflag.ParseTime(in, now)
		if err != nil || !got.Equal(want) {
			t.Errorf("ParseTime(%q) = %v, %v; want %v", in, got, err, want)
		}
		var v cliflag.Time
		if err := v.Set(in); err != nil {
			t.Errorf("Time.Set(%q) = %v", in, err)
			continue
		}
		if at, ok := v.At(now); !ok || !at.Equal(want) {
			t.Errorf("Time(%q).At = %v, %v; want %v", in, at, ok, want)
		}
	}
	for _, in := range []string{"", "yesterday", "2025-01-02", "2025-01-02 15:04:05", "-1h"} {
		if _, err := cliflag.ParseTime(in, now); err == nil {
			t.Errorf("ParseTime(%q) succeeded, want an error", in)
		}
		var v cliflag.Time
		if err := v.Set(in); err == nil {
			t.Errorf("Time.Set(%q) succeeded, want an error", in)
		}
	}
	var unset cliflag.Time
	if _, ok := unset.At(now); ok {
		t.Error("an unset Time reports a time")
	}
}

// TestWindow checks --since/--until resolved into a filter's bounds.
func TestWindow(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	set := func(s string) *cliflag.Time {
		var v cliflag.Time
		if s != "" {
			if err := v.Set(s); err != nil {
				t.Fatalf("Set(%q): %v", s, err)
			}
		}
		return &v
	}
	from, to, err := cliflag.Window(set("2h"), set("2025-06-01T11:30:00Z"), now)
	if err != nil || !from.AsTime().Equal(now.Add(-2*time.Hour)) || !to.AsTime().Equal(now.Add(-30*time.Minute)) {
		t.Errorf("Window(2h, 11:30) = %v, %v, %v", from, to, err)
	}
	if from, to, err := cliflag.Window(set(""), set(""), now); from != nil || to != nil || err != nil {
		t.Errorf("Window of unset flags = %v, %v, %v", from, to, err)
	}
	if from, to, err := cliflag.Window(set("1h"), set(""), now); err != nil || to != nil || !from.AsTime().Equal(now.Add(-time.Hour)) {
		t.Errorf("Window(1h, unset) = %v, %v, %v", from, to, err)
	}
	for _, tc := range [][2]string{{"1h", "1h"}, {"1h", "2h"}, {"2025-06-01T12:00:00Z", "2025-06-01T11:00:00Z"}} {
		if _, _, err := cliflag.Window(set(tc[0]), set(tc[1]), now); !cliusage.Is(err) || !strings.Contains(err.Error(), "--since") {
			t.Errorf("Window(%s, %s) = %v, want a usage error naming --since", tc[0], tc[1], err)
		}
	}
}

// TestFlagSwitchParsing checks the on/off values of `palyra flags set`.
func TestFlagSwitchParsing(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]bool{
		"on": true, "true": true, "enable": true, "ON": true, "Enable": true,
		"off": false, "false": false, "disable": false, "OFF": false,
	} {
		got, err := cliflag.ParseSwitch(in)
		if err != nil || got != want {
			t.Errorf("ParseSwitch(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "yes", "no", "1", "0", "enabled", "o", "onn"} {
		if _, err := cliflag.ParseSwitch(in); err == nil {
			t.Errorf("ParseSwitch(%q) succeeded, want an error", in)
		}
	}
}

// TestFlagChoice checks closed sets of names such as --role.
func TestFlagChoice(t *testing.T) {
	t.Parallel()
	c := cliflag.NewChoice("owner", "admin", "operator")
	if c.Type() != "owner|admin|operator" {
		t.Errorf("Type() = %q", c.Type())
	}
	if err := c.Set("Owner"); err == nil {
		t.Error("Set(Owner) succeeded: choices are exact")
	}
	if err := c.Set("operator"); err != nil || c.Value != "operator" {
		t.Errorf("Set(operator) = %v, value %q", err, c.Value)
	}
	var d cliflag.Duration
	if err := d.Set("2d"); err != nil || d.Value != 48*time.Hour {
		t.Errorf("Duration.Set(2d) = %v, value %v", err, d.Value)
	}
}

// TestIDAndReason checks id arguments and required reasons: malformed ones are usage
// errors.
func TestIDAndReason(t *testing.T) {
	t.Parallel()
	const id = "01JD5ZJ8Q0W1X2Y3Z4A5B6C7R1"
	for _, in := range []string{id, strings.ToLower(id)} {
		if got, err := cliflag.ParseID(in, "pairing request", "palyra pairing requests list"); err != nil || got != id {
			t.Errorf("ParseID(%q) = %q, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "01JD5ZJ8Q0W1X2Y3Z4A5B6C7R", id + "1", "01JD5ZJ8Q0W1X2Y3Z4A5B6C7RU", "build-01"} {
		_, err := cliflag.ParseID(in, "pairing request", "palyra pairing requests list")
		if !cliusage.Is(err) || !strings.Contains(err.Error(), "invalid pairing request id") || !strings.Contains(err.Error(), "palyra pairing requests list") {
			t.Errorf("ParseID(%q) = %v, want a usage error naming the list", in, err)
		}
	}
	for _, ok := range []string{"lost", strings.Repeat("x", 256), "laptop stolen 🙁"} {
		if err := cliflag.CheckReason(ok); err != nil {
			t.Errorf("CheckReason(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", " \t", strings.Repeat("x", 257)} {
		if err := cliflag.CheckReason(bad); !cliusage.Is(err) {
			t.Errorf("CheckReason(%q) = %v, want a usage error", bad, err)
		}
	}
}
