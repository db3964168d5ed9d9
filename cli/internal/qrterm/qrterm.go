// Package qrterm draws QR codes in a terminal with Unicode half blocks, so that a
// person can scan a pairing URI off the screen of the admin machine.
//
// Each text line holds two rows of modules: the upper half of a character cell is one
// module, the lower half the next. Light modules are drawn and dark modules are left
// blank, so that the code reads right on the usual dark terminal, whose background
// shows through as the dark modules:
//
//	upper light, lower light: █    upper light, lower dark: ▀
//	upper dark,  lower light: ▄    upper dark,  lower dark: (space)
//
// A quiet zone of QuietZone light modules surrounds the code; scanners need it to find
// the code's edges. Below the last row of an odd-sized drawing is nothing (blank).
package qrterm

import (
	"fmt"
	"strings"

	"rsc.io/qr"
)

// QuietZone is the width, in modules, of the light border drawn around the code.
const QuietZone = 2

// The glyphs of a character cell by its upper and lower module: light is drawn.
const (
	bothLight  = "█"
	upperLight = "▀"
	lowerLight = "▄"
	bothDark   = " "
)

// Lines encodes text as a QR code (error correction level M) and returns its drawing,
// one string per text line, each (size+2*QuietZone) characters wide, where size is the
// code's modules per side. Text too long for a QR code is an error.
func Lines(text string) ([]string, error) {
	code, err := qr.Encode(text, qr.M)
	if err != nil {
		return nil, fmt.Errorf("draw the QR code: %w", err)
	}
	return draw(code.Size, code.Black), nil
}

// Render is Lines joined into one string, each line ending in a newline.
func Render(text string) (string, error) {
	lines, err := Lines(text)
	if err != nil {
		return "", err
	}
	return strings.Join(lines, "\n") + "\n", nil
}

// draw draws a code of size modules per side, where dark reports the dark modules
// (coordinates outside the code are light: the quiet zone).
func draw(size int, dark func(x, y int) bool) []string {
	full := size + 2*QuietZone
	// light reports whether the module at (x, y) of the drawing, quiet zone included,
	// is light; rows past the drawing's end are not light (nothing is drawn there).
	light := func(x, y int) bool {
		if y >= full {
			return false
		}
		return !dark(x-QuietZone, y-QuietZone)
	}
	lines := make([]string, 0, (full+1)/2)
	for y := 0; y < full; y += 2 {
		var b strings.Builder
		for x := range full {
			switch upper, lower := light(x, y), light(x, y+1); {
			case upper && lower:
				b.WriteString(bothLight)
			case upper:
				b.WriteString(upperLight)
			case lower:
				b.WriteString(lowerLight)
			default:
				b.WriteString(bothDark)
			}
		}
		lines = append(lines, b.String())
	}
	return lines
}
