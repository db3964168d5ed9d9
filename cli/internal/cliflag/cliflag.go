// Package cliflag parses the values that palyra commands take on their command lines:
// durations with a day suffix ("30d"), points in time given as RFC 3339 or as a
// duration ago ("1h"), on/off switches and closed sets of names. The parsers are pure
// functions; the pflag.Value types wrap them, so that a bad value is a flag error and
// palyra exits with the usage code 2.
package cliflag

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/palyra/palyra/internal/cliusage"
)

// durationUnits are the units ParseDuration accepts, with their lengths.
var durationUnits = map[string]time.Duration{
	"w": 7 * 24 * time.Hour,
	"d": 24 * time.Hour,
	"h": time.Hour,
	"m": time.Minute,
	"s": time.Second,
}

var durationPart = regexp.MustCompile(`^([0-9]+)(w|d|h|m|s)`)

// ParseDuration parses a positive duration written as a sequence of whole numbers with
// units: w (weeks), d (days of 24 hours), h, m and s, e.g. "30d", "24h", "1d12h",
// "90m". It refuses zero, signs, fractions and unknown units.
func ParseDuration(s string) (time.Duration, error) {
	if s == "" {
		return 0, errors.New("empty duration: give e.g. 30d, 24h or 90m")
	}
	var total time.Duration
	for rest := s; rest != ""; {
		m := durationPart.FindStringSubmatch(rest)
		if m == nil {
			return 0, fmt.Errorf("invalid duration %q: use whole numbers with the units w, d, h, m or s, e.g. 30d, 24h or 1d12h", s)
		}
		n, err := strconv.ParseInt(m[1], 10, 64)
		unit := durationUnits[m[2]]
		if err != nil || n > math.MaxInt64/int64(unit) || total > math.MaxInt64-time.Duration(n)*unit {
			return 0, fmt.Errorf("duration %q is too long", s)
		}
		total += time.Duration(n) * unit
		rest = rest[len(m[0]):]
	}
	if total <= 0 {
		return 0, fmt.Errorf("duration %q must be longer than zero", s)
	}
	return total, nil
}

// ParseTime parses a point in time: an RFC 3339 time ("2025-01-02T15:04:05Z"), or a
// duration as ParseDuration takes it, meaning that long before now ("1h", "7d").
func ParseTime(s string, now time.Time) (time.Time, error) {
	abs, ago, err := parseTime(s)
	if err != nil {
		return time.Time{}, err
	}
	if ago != 0 {
		return now.Add(-ago), nil
	}
	return abs, nil
}

// parseTime returns either an absolute time or a positive duration ago.
func parseTime(s string) (abs time.Time, ago time.Duration, err error) {
	if abs, err := time.Parse(time.RFC3339, s); err == nil {
		return abs, 0, nil
	}
	ago, err = ParseDuration(s)
	if err != nil {
		return time.Time{}, 0, fmt.Errorf("invalid time %q: give an RFC 3339 time (2025-01-02T15:04:05Z) or a duration ago (1h, 7d)", s)
	}
	return time.Time{}, ago, nil
}

var idPattern = regexp.MustCompile(`^[0-9A-HJKMNP-TV-Z]{26}$`)

// ParseID parses an id argument: one of the 26-character ids (ULIDs) that palyra lists,
// in either case. A malformed id is a usage error that names what it should identify
// ("pairing request") and the command that lists them ("palyra pairing requests list").
func ParseID(arg, what, list string) (string, error) {
	id := strings.ToUpper(arg)
	if !idPattern.MatchString(id) {
		return "", cliusage.Wrap(fmt.Errorf("invalid %s id %q: give the 26-character id that `%s` shows", what, arg, list))
	}
	return id, nil
}

// MaxReasonBytes is the longest --reason palyrad records.
const MaxReasonBytes = 256

// CheckReason checks a required --reason value (why a request is rejected, a device
// revoked): 1 to MaxReasonBytes bytes, not only white space. A bad one is a usage error.
func CheckReason(reason string) error {
	if strings.TrimSpace(reason) == "" {
		return cliusage.Wrap(errors.New("--reason is required: say why, in at most 256 bytes"))
	}
	return CheckReasonLength(reason)
}

// CheckReasonLength checks an optional --reason value: at most MaxReasonBytes bytes.
// A longer one is a usage error.
func CheckReasonLength(reason string) error {
	if len(reason) > MaxReasonBytes {
		return cliusage.Wrap(fmt.Errorf("--reason is %d bytes long; at most %d", len(reason), MaxReasonBytes))
	}
	return nil
}

// MaxPageSize is the largest --limit that palyrad's list calls take.
const MaxPageSize = 500

// Paging is the --limit and --all flags that every list command takes.
type Paging struct {
	// Limit is the page size; zero (the flag not given) leaves it to palyrad.
	Limit uint32
	// All follows the pages to the end of the list.
	All bool
}

// Bind adds --limit and --all to fs. plural names what is listed in the help of
// --limit ("tokens"); every names it in the help of --all ("every token").
func (p *Paging) Bind(fs *pflag.FlagSet, plural, every string) {
	fs.Uint32Var(&p.Limit, "limit", 0, fmt.Sprintf("the most %s to list (per call with --all), 1 to %d (default 100)", plural, MaxPageSize))
	fs.BoolVar(&p.All, "all", false, "follow the pages to list "+every)
}

// Check checks a --limit that was given: 1 to MaxPageSize. A bad one is a usage error.
func (p *Paging) Check(fs *pflag.FlagSet) error {
	if fs.Changed("limit") && (p.Limit < 1 || p.Limit > MaxPageSize) {
		return cliusage.Wrap(fmt.Errorf("--limit must be between 1 and %d, got %d", MaxPageSize, p.Limit))
	}
	return nil
}

// ParseSwitch parses the state of a switch: on, true or enable turn it on; off, false or
// disable turn it off. Case does not matter.
func ParseSwitch(s string) (bool, error) {
	switch strings.ToLower(s) {
	case "on", "true", "enable":
		return true, nil
	case "off", "false", "disable":
		return false, nil
	}
	return false, fmt.Errorf("invalid state %q: use on or off (also true/false, enable/disable)", s)
}

// Duration is a pflag.Value parsed with ParseDuration.
type Duration struct {
	// Value is the duration; zero when the flag was not given.
	Value time.Duration
}

var _ pflag.Value = (*Duration)(nil)

// String implements pflag.Value.
func (d *Duration) String() string {
	if d.Value == 0 {
		return ""
	}
	return d.Value.String()
}

// Set implements pflag.Value.
func (d *Duration) Set(s string) error {
	v, err := ParseDuration(s)
	if err != nil {
		return err
	}
	d.Value = v
	return nil
}

// Type implements pflag.Value.
func (d *Duration) Type() string { return "duration" }

// Time is a pflag.Value holding a time as ParseTime takes it. A relative time is
// resolved by At, so that the clock stays with the caller.
type Time struct {
	set bool
	abs time.Time     // an absolute time, when ago is zero
	ago time.Duration // how long before now, for a relative time
	raw string
}

var _ pflag.Value = (*Time)(nil)

// String implements pflag.Value.
func (t *Time) String() string { return t.raw }

// Set implements pflag.Value.
func (t *Time) Set(s string) error {
	abs, ago, err := parseTime(s)
	if err != nil {
		return err
	}
	*t = Time{set: true, abs: abs, ago: ago, raw: s}
	return nil
}

// Type implements pflag.Value.
func (t *Time) Type() string { return "time" }

// At returns the time, resolving a relative one against now; ok is false when the flag
// was not given.
func (t *Time) At(now time.Time) (at time.Time, ok bool) {
	switch {
	case !t.set:
		return time.Time{}, false
	case t.ago != 0:
		return now.Add(-t.ago), true
	}
	return t.abs, true
}

// Window resolves a --since and an --until flag against now into the bounds of a time
// filter, nil for a flag not given; both given, --since must come before --until, or
// it is a usage error.
func Window(since, until *Time, now time.Time) (from, to *timestamppb.Timestamp, err error) {
	if at, ok := since.At(now); ok {
		from = timestamppb.New(at)
	}
	if at, ok := until.At(now); ok {
		to = timestamppb.New(at)
	}
	if from != nil && to != nil && !from.AsTime().Before(to.AsTime()) {
		return nil, nil, cliusage.Wrap(fmt.Errorf("--since (%s) must be before --until (%s)",
			from.AsTime().Format(time.RFC3339), to.AsTime().Format(time.RFC3339)))
	}
	return from, to, nil
}

// Choice is a pflag.Value that takes one of a closed set of names.
type Choice struct {
	// Value is the chosen name; empty when the flag was not given.
	Value   string
	allowed []string
}

var _ pflag.Value = (*Choice)(nil)

// NewChoice returns a Choice among allowed.
func NewChoice(allowed ...string) *Choice { return &Choice{allowed: allowed} }

// String implements pflag.Value.
func (c *Choice) String() string { return c.Value }

// Set implements pflag.Value.
func (c *Choice) Set(s string) error {
	if !slices.Contains(c.allowed, s) {
		return fmt.Errorf("must be one of %s, got %q", strings.Join(c.allowed, ", "), s)
	}
	c.Value = s
	return nil
}

// Type implements pflag.Value.
func (c *Choice) Type() string { return strings.Join(c.allowed, "|") }
