package qrterm_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	"rsc.io/qr"

	"github.com/palyra/palyra/cli/internal/qrterm"
)

// TestQRDrawing checks the drawing of a known input: its size, the quiet zone, the
// finder patterns in the first rows of the code, and that every module drawn is the
// module encoded.
func TestQRDrawing(t *testing.T) {
	t.Parallel()
	lines, err := qrterm.Lines("HELLO") // version 1: 21 modules a side
	if err != nil {
		t.Fatal(err)
	}
	const full = 21 + 2*qrterm.QuietZone // 25 modules, so 13 lines
	if len(lines) != (full+1)/2 {
		t.Fatalf("%d lines, want %d", len(lines), (full+1)/2)
	}
	for i, l := range lines {
		if n := utf8.RuneCountInString(l); n != full {
			t.Errorf("line %d is %d characters wide, want %d", i, n, full)
		}
	}
	want := map[int]string{
		// Rows 0-1: the quiet zone, all light.
		0: strings.Repeat("█", full),
		// Rows 2-3, the code's rows 0-1: quiet zone, the top-left finder (a dark row,
		// then dark-light-dark), its light separator, ...
		1: "██ ▄▄▄▄▄ █",
		// Rows 4-5, the code's rows 2-3: the finder's dark core between light rings.
		2: "██ █   █ █",
		// Row 24 is the quiet zone's last row; nothing is drawn below it.
		12: strings.Repeat("▀", full),
	}
	for i, prefix := range want {
		if !strings.HasPrefix(lines[i], prefix) {
			t.Errorf("line %d = %q, want it to start with %q", i, lines[i], prefix)
		}
	}
	if !strings.HasSuffix(lines[1], "█ ▄▄▄▄▄ ██") {
		t.Errorf("line 1 = %q, want the top-right finder and the quiet zone at its end", lines[1])
	}
	// Rows 22-23: the bottom-left finder's dark last row over the quiet zone.
	if !strings.HasPrefix(lines[11], "██▄▄▄▄▄▄▄█") {
		t.Errorf("line 11 = %q, want the bottom-left finder's last row over the quiet zone", lines[11])
	}
	for i, l := range lines[1:12] {
		if !strings.HasPrefix(l, "██") || !strings.HasSuffix(l, "██") {
			t.Errorf("line %d = %q lacks the quiet zone at its sides", i+1, l)
		}
	}

	// Read the modules back from the glyphs and compare with the encoder's.
	code, err := qr.Encode("HELLO", qr.M)
	if err != nil {
		t.Fatal(err)
	}
	glyph := map[rune][2]bool{'█': {true, true}, '▀': {true, false}, '▄': {false, true}, ' ': {false, false}}
	for i, l := range lines {
		for x, r := range []rune(l) {
			g, ok := glyph[r]
			if !ok {
				t.Fatalf("line %d holds %q, not a half block", i, r)
			}
			for half, light := range g {
				y := 2*i + half
				if y >= full {
					if light {
						t.Errorf("line %d draws below the code", i)
					}
					continue
				}
				if wantLight := !code.Black(x-qrterm.QuietZone, y-qrterm.QuietZone); light != wantLight {
					t.Errorf("module (%d, %d) light=%v, want %v", x, y, light, wantLight)
				}
			}
		}
	}

	out, err := qrterm.Render("HELLO")
	if err != nil || out != strings.Join(lines, "\n")+"\n" {
		t.Errorf("Render = %q, %v", out, err)
	}
	if _, err := qrterm.Lines(strings.Repeat("x", 4000)); err == nil {
		t.Error("text too long for a QR code was drawn")
	}
}
