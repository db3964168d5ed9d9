package output_test

import (
	"bytes"
	"io"
	"testing"
	"time"

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
