// Package output prints API responses for the palyra CLI: a human table by default, or
// the protojson form of the response with -o json, for scripts.
package output

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Format is the value of the -o flag.
type Format string

// The formats.
const (
	Table Format = "table"
	JSON  Format = "json"
)

// String implements pflag.Value.
func (f *Format) String() string { return string(*f) }

// Set implements pflag.Value.
func (f *Format) Set(v string) error {
	switch Format(v) {
	case Table, JSON:
		*f = Format(v)
		return nil
	}
	return fmt.Errorf("must be table or json")
}

// Type implements pflag.Value.
func (f *Format) Type() string { return "table|json" }

// Print writes msg as JSON, or as the table that table writes. Table columns are
// separated by tabs; Print aligns them.
func Print(w io.Writer, f Format, msg proto.Message, table func(w io.Writer)) error {
	if f == JSON {
		b, err := protojson.MarshalOptions{EmitUnpopulated: true}.Marshal(msg)
		if err != nil {
			return fmt.Errorf("encode JSON: %w", err)
		}
		// protojson varies its whitespace on purpose; scripts diff and grep this
		// output, so it is re-indented into one stable form.
		var out bytes.Buffer
		if err := json.Indent(&out, b, "", "  "); err != nil {
			return fmt.Errorf("encode JSON: %w", err)
		}
		out.WriteByte('\n')
		_, err = out.WriteTo(w)
		return err
	}
	return printTable(w, table)
}

// PrintValue is Print for results that are not API responses (the CLI's own state,
// such as its profiles): with -o json it writes v as indented encoding/json, whose
// output is stable; otherwise the table that table writes.
func PrintValue(w io.Writer, f Format, v any, table func(w io.Writer)) error {
	if f == JSON {
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return fmt.Errorf("encode JSON: %w", err)
		}
		_, err = w.Write(append(b, '\n'))
		return err
	}
	return printTable(w, table)
}

// printTable writes what table writes, with its tab-separated columns aligned.
func printTable(w io.Writer, table func(w io.Writer)) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	table(tw)
	return tw.Flush()
}

// Time formats a timestamp for a table cell, in RFC 3339 and UTC like the JSON output;
// unset is written when ts is not set (e.g. "never").
func Time(ts *timestamppb.Timestamp, unset string) string {
	if ts == nil {
		return unset
	}
	return ts.AsTime().UTC().Format(time.RFC3339)
}

// Enum formats an enum value for a table cell: its name without the type's prefix, in
// lower case, e.g. ROLE_OPERATOR as "operator" and TOKEN_STATE_ACTIVE as "active".
// The zero value is written as "-".
func Enum(e protoreflect.Enum) string {
	if e.Number() == 0 {
		return "-"
	}
	v := e.Descriptor().Values().ByNumber(e.Number())
	if v == nil {
		return fmt.Sprintf("unknown(%d)", e.Number())
	}
	name := string(v.Name())
	// The prefix is the name of the zero value without its UNSPECIFIED.
	if zero := e.Descriptor().Values().ByNumber(0); zero != nil {
		name = strings.TrimPrefix(name, strings.TrimSuffix(string(zero.Name()), "UNSPECIFIED"))
	}
	return strings.ToLower(name)
}

// List formats a list for a table cell: its items joined by commas, or "-" when empty.
func List(items []string) string {
	if len(items) == 0 {
		return "-"
	}
	return strings.Join(items, ",")
}

// Cell makes s safe for a table cell: empty becomes "-", and tabs and line breaks
// (which would break the columns) become spaces.
func Cell(s string) string {
	if s == "" {
		return "-"
	}
	return strings.Map(func(r rune) rune {
		if r == '\t' || r == '\n' || r == '\r' {
			return ' '
		}
		return r
	}, s)
}

// Age formats how long ago something happened for a table cell, in its two largest
// units: "45s", "12m", "3h5m", "2d4h". Negative ages (clock skew) are "0s".
func Age(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	d = d.Truncate(time.Second)
	days, hours := int64(d/(24*time.Hour)), int64(d/time.Hour)%24
	minutes, seconds := int64(d/time.Minute)%60, int64(d/time.Second)%60
	two := func(a int64, ua string, b int64, ub string) string {
		if b == 0 {
			return fmt.Sprintf("%d%s", a, ua)
		}
		return fmt.Sprintf("%d%s%d%s", a, ua, b, ub)
	}
	switch {
	case days > 0:
		return two(days, "d", hours, "h")
	case hours > 0:
		return two(hours, "h", minutes, "m")
	case minutes > 0:
		return two(minutes, "m", seconds, "s")
	}
	return fmt.Sprintf("%ds", seconds)
}

// ShortFingerprint shortens a "sha256:<hex>" fingerprint for a table cell to its first
// and last four hex digits, "sha256:abcd…wxyz"; other values are returned as Cell
// returns them. Show and JSON output keep the whole fingerprint.
func ShortFingerprint(fp string) string {
	hex, ok := strings.CutPrefix(fp, "sha256:")
	if !ok || len(hex) <= 8 {
		return Cell(fp)
	}
	return "sha256:" + hex[:4] + "…" + hex[len(hex)-4:]
}

// ShellQuote quotes s for a POSIX shell, for the commands that palyra prints for people
// to run: s as it is when it holds only characters that need no quoting, else s in
// single quotes.
func ShellQuote(s string) string {
	const safe = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:@%+=,"
	if s != "" && strings.Trim(s, safe) == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
