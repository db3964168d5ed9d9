// Package output prints API responses for the palyra CLI: a human table by default, or
// the protojson form of the response with -o json, for scripts.
//
// Whatever it prints is safe for a terminal: names, labels, reasons and messages come
// from palyrad and from nodes, and a control sequence in one could rewrite what the
// terminal shows. Table output escapes every C0 control but tab and line feed, DEL,
// every C1 control, the bidirectional formatting characters and bytes that are not
// UTF-8 (Escape); JSON output writes the ones JSON itself leaves raw as \u escapes.
// Commands print other server-supplied text through Escape too. A dispatch's output is
// the exception: it is the remote program's, written as it came, as ssh does.
package output

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

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
		_, err = w.Write(escapeJSON(out.Bytes()))
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
		_, err = w.Write(escapeJSON(append(b, '\n')))
		return err
	}
	return printTable(w, table)
}

// printTable writes what table writes, with its tab-separated columns aligned and
// everything but tabs and line feeds escaped for a terminal.
func printTable(w io.Writer, table func(w io.Writer)) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	e := &escaper{w: tw}
	table(e)
	if err := e.flush(); err != nil {
		return err
	}
	return tw.Flush()
}

// Escape makes s safe to print on a terminal: every C0 control but tab and line feed,
// DEL and each byte that is not UTF-8 become \xNN; every C1 control and the
// bidirectional formatting characters (U+061C, U+200E, U+200F, U+202A–U+202E,
// U+2066–U+2069), which can reorder what a line shows, become \uNNNN. The rest is kept.
func Escape(s string) string {
	if !needsEscape(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		writeEscaped(&b, r, s[i:i+n])
		i += n
	}
	return b.String()
}

// Fprintf is fmt.Fprintf with the text escaped by Escape, for messages that hold
// server-supplied text (names, reasons, errors).
func Fprintf(w io.Writer, format string, args ...any) {
	io.WriteString(w, Escape(fmt.Sprintf(format, args...)))
}

// Safe reports whether s is safe to print on a terminal as it is: whether Escape would
// leave it unchanged.
func Safe(s string) bool { return !needsEscape(s) }

// needsEscape reports whether Escape would change s.
func needsEscape(s string) bool {
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 || unsafeRune(r) {
			return true
		}
		i += n
	}
	return false
}

// unsafeRune reports whether a terminal may act on r rather than show it.
func unsafeRune(r rune) bool {
	switch {
	case r == '\t' || r == '\n':
		return false
	case r < 0x20 || r == 0x7f || r >= 0x80 && r <= 0x9f:
		return true
	case r == 0x061c || r == 0x200e || r == 0x200f || r >= 0x202a && r <= 0x202e || r >= 0x2066 && r <= 0x2069:
		return true
	}
	return false
}

// writeEscaped writes the rune r, whose encoding in the input is raw, escaped as
// Escape says.
func writeEscaped(b *strings.Builder, r rune, raw string) {
	switch {
	case r == utf8.RuneError && len(raw) == 1:
		fmt.Fprintf(b, `\x%02x`, raw[0])
	case !unsafeRune(r):
		b.WriteString(raw)
	case r < 0x80:
		fmt.Fprintf(b, `\x%02x`, r)
	default:
		fmt.Fprintf(b, `\u%04x`, r)
	}
}

// escaper is a writer that applies Escape to what it is given. A UTF-8 sequence cut by
// the end of a write waits for the next one, or for flush. It is used by one goroutine.
type escaper struct {
	w       io.Writer
	pending []byte // the start of an incomplete UTF-8 sequence
}

// Write implements io.Writer.
func (e *escaper) Write(p []byte) (int, error) {
	buf := append(e.pending, p...)
	// Hold back the start of a sequence that the next write may complete.
	cut := len(buf)
	for i := len(buf) - 1; i >= 0 && i >= len(buf)-utf8.UTFMax+1; i-- {
		if utf8.RuneStart(buf[i]) {
			if !utf8.FullRune(buf[i:]) {
				cut = i
			}
			break
		}
	}
	e.pending = append([]byte(nil), buf[cut:]...)
	if _, err := io.WriteString(e.w, Escape(string(buf[:cut]))); err != nil {
		return 0, err
	}
	return len(p), nil
}

// flush writes what is held back, escaped.
func (e *escaper) flush() error {
	if len(e.pending) == 0 {
		return nil
	}
	_, err := io.WriteString(e.w, Escape(string(e.pending)))
	e.pending = nil
	return err
}

// escapeJSON writes the characters of JSON text that JSON encoders leave raw but a
// terminal may act on (DEL, C1 controls, bidirectional formatting characters) as \u
// escapes. They can only appear inside strings, where the escape means the same.
func escapeJSON(b []byte) []byte {
	s := string(b)
	if !needsEscape(s) {
		return b
	}
	var out bytes.Buffer
	for _, r := range s {
		if unsafeRune(r) {
			fmt.Fprintf(&out, `\u%04x`, r)
			continue
		}
		out.WriteRune(r)
	}
	return out.Bytes()
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
