package output_test

import (
	"bytes"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/palyra/palyra/cli/internal/output"
	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
)

// TestJSONIsStable checks that -o json gives byte-identical output for the same
// message: protojson varies its whitespace at random, which scripts must not see.
func TestJSONIsStable(t *testing.T) {
	t.Parallel()
	msg := &controlplanev1.GetStatusResponse{ReplicaId: "r1", Database: &controlplanev1.DatabaseStatus{SchemaVersion: 3}}
	var first bytes.Buffer
	if err := output.Print(&first, output.JSON, msg, nil); err != nil {
		t.Fatal(err)
	}
	const want = "{\n  \"version\": \"\",\n  \"replicaId\": \"r1\","
	if !bytes.HasPrefix(first.Bytes(), []byte(want)) {
		t.Fatalf("output starts %q, want %q", first.String()[:min(len(want), first.Len())], want)
	}
	for range 20 {
		var again bytes.Buffer
		if err := output.Print(&again, output.JSON, msg, nil); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(first.Bytes(), again.Bytes()) {
			t.Fatalf("output changed between calls:\n%s\n%s", first.String(), again.String())
		}
	}
}

// TestTableAligns checks that table output aligns tab-separated columns.
func TestTableAligns(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	err := output.Print(&buf, output.Table, &controlplanev1.GetStatusResponse{}, func(w io.Writer) {
		io.WriteString(w, "Version\tdevel\nServer certificate\tsha256:00\n")
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := "Version             devel\nServer certificate  sha256:00\n"; buf.String() != want {
		t.Errorf("got %q, want %q", buf.String(), want)
	}
}

// TestCLITableCells checks the formatting of enum, time and list cells.
func TestCLITableCells(t *testing.T) {
	t.Parallel()
	if got := output.Enum(controlplanev1.DatabaseState_DATABASE_STATE_AVAILABLE); got != "available" {
		t.Errorf("Enum = %q, want available", got)
	}
	if got := output.Enum(controlplanev1.DatabaseState_DATABASE_STATE_UNSPECIFIED); got != "-" {
		t.Errorf("Enum(unspecified) = %q, want -", got)
	}
	if got := output.Time(nil, "never"); got != "never" {
		t.Errorf("Time(nil) = %q", got)
	}
	if got := output.Time(timestamppb.New(time.Date(2025, 1, 2, 3, 4, 5, 0, time.FixedZone("x", 3600))), "never"); got != "2025-01-02T02:04:05Z" {
		t.Errorf("Time = %q", got)
	}
	if got := output.List(nil); got != "-" {
		t.Errorf("List(nil) = %q", got)
	}
	if got := output.Cell("a\tb\nc"); got != "a b c" {
		t.Errorf("Cell = %q", got)
	}
}

// TestAgeAndFingerprint checks the compact cells of ages and key fingerprints.
func TestAgeAndFingerprint(t *testing.T) {
	t.Parallel()
	ages := map[time.Duration]string{
		-time.Second:                      "0s",
		0:                                 "0s",
		45*time.Second + time.Millisecond: "45s",
		12 * time.Minute:                  "12m",
		12*time.Minute + 5*time.Second:    "12m5s",
		3*time.Hour + 5*time.Minute + 9*time.Second: "3h5m",
		52 * time.Hour: "2d4h",
		48 * time.Hour: "2d",
	}
	for in, want := range ages {
		if got := output.Age(in); got != want {
			t.Errorf("Age(%v) = %q, want %q", in, got, want)
		}
	}
	fps := map[string]string{
		"sha256:fabd539369598d55ccae908a97924477f9eca9b3cd0fba7275d7da5a67503870": "sha256:fabd…3870",
		"":           "-",
		"md5:abc":    "md5:abc",
		"sha256:abc": "sha256:abc",
	}
	for in, want := range fps {
		if got := output.ShortFingerprint(in); got != want {
			t.Errorf("ShortFingerprint(%q) = %q, want %q", in, got, want)
		}
	}
}

// hostile holds what a node or a server could put in a name, a label or a reason to
// take over a terminal: an escape sequence that clears the screen and moves the cursor
// up, a carriage return, a C1 CSI (raw and as UTF-8), DEL, a bidi override, an
// isolate, a mark, and a byte that is not UTF-8.
const hostile = "web\x1b[2J\x1b[1Aok\rX\u009b31m\xc2\x9b\x7f\u202egnp.exe\u2066x\u2069\u200f\xff!"

// hostileEscaped is hostile as a table cell shows it.
const hostileEscaped = `web\x1b[2J\x1b[1Aok\x0dX\u009b31m\u009b\x7f\u202egnp.exe\u2066x\u2069\u200f\xff!`

// TestTableEscapesControls prints hostile strings through the table writer, also cut
// into writes that split UTF-8 sequences, and checks that no control, bidi character
// or stray byte reaches the terminal; tabs and line feeds keep their meaning.
func TestTableEscapesControls(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	err := output.Print(&buf, output.Table, &controlplanev1.GetStatusResponse{}, func(w io.Writer) {
		io.WriteString(w, "NAME\tLABEL\n")
		io.WriteString(w, "n1\t"+hostile+"\n")
		// The same, one byte at a time: sequences cut between writes.
		io.WriteString(w, "n2\t")
		for i := range len(hostile) {
			w.Write([]byte{hostile[i]})
		}
		io.WriteString(w, "\n")
	})
	if err != nil {
		t.Fatal(err)
	}
	assertTerminalSafe(t, buf.String())
	want := "NAME  LABEL\nn1    " + hostileEscaped + "\nn2    " + hostileEscaped + "\n"
	if buf.String() != want {
		t.Errorf("table\n%q\nwant\n%q", buf.String(), want)
	}
}

// TestJSONEscapesControls checks -o json: what JSON leaves raw (DEL, C1, bidi) is
// written as \u escapes, and the JSON still decodes to the same string.
func TestJSONEscapesControls(t *testing.T) {
	t.Parallel()
	valid := strings.ToValidUTF8(hostile, "\ufffd") // a proto string is UTF-8
	var buf bytes.Buffer
	if err := output.Print(&buf, output.JSON, &controlplanev1.GetStatusResponse{ReplicaId: valid}, nil); err != nil {
		t.Fatal(err)
	}
	assertTerminalSafe(t, buf.String())
	var got struct {
		ReplicaID string `json:"replicaId"`
	}
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil || got.ReplicaID != valid {
		t.Errorf("decoded %q, %v; want %q", got.ReplicaID, err, valid)
	}
	buf.Reset()
	if err := output.PrintValue(&buf, output.JSON, map[string]string{"name": valid}, nil); err != nil {
		t.Fatal(err)
	}
	assertTerminalSafe(t, buf.String())
}

// assertTerminalSafe fails t when out holds anything but printable text, tabs and
// line feeds.
func assertTerminalSafe(t *testing.T, out string) {
	t.Helper()
	if !utf8.ValidString(out) {
		t.Errorf("output is not UTF-8: %q", out)
	}
	for _, r := range out {
		if r != '\t' && r != '\n' && (r < 0x20 || r >= 0x7f && r <= 0x9f || r == 0x061c || r == 0x200e || r == 0x200f ||
			r >= 0x202a && r <= 0x202e || r >= 0x2066 && r <= 0x2069) {
			t.Errorf("output holds %U raw: %q", r, out)
			return
		}
	}
}

// TestEscape checks what Escape keeps and what it writes as escapes.
func TestEscape(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"":                         "",
		"plain text, 123":          "plain text, 123",
		"naïve café ☃ 日本語 ünïcödé": "naïve café ☃ 日本語 ünïcödé",
		"tab\tand\nline feed":      "tab\tand\nline feed",
		`a\x1b stays text`:         `a\x1b stays text`,
		"\x00\x07\x08\x1b\r\x7f":   `\x00\x07\x08\x1b\x0d\x7f`,
		"\u0080\u009b\u009f":       `\u0080\u009b\u009f`,
		"\u061c\u200e\u200f":       `\u061c\u200e\u200f`,
		"\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069": `\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069`,
		"\xff\xc2":           `\xff\xc2`,
		"\u00a0\u200b\u2028": "\u00a0\u200b\u2028",
	} {
		if got := output.Escape(in); got != want {
			t.Errorf("Escape(%q) = %q, want %q", in, got, want)
		}
	}
}
