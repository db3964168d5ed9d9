// Package termtest checks, in tests, that output is safe to print on a terminal.
package termtest

import (
	"testing"
	"unicode/utf8"
)

// AssertSafe fails tb when out holds anything a terminal would act on: a control
// character but tab and line feed, DEL, a C1 control, a bidi formatting character, or
// bytes that are not UTF-8. what names the output in the failure.
func AssertSafe(tb testing.TB, what, out string) {
	tb.Helper()
	if !utf8.ValidString(out) {
		tb.Errorf("%s: output is not UTF-8: %q", what, out)
	}
	for _, r := range out {
		if r != '\t' && r != '\n' && (r < 0x20 || r >= 0x7f && r <= 0x9f || r == 0x061c || r == 0x200e || r == 0x200f ||
			r >= 0x202a && r <= 0x202e || r >= 0x2066 && r <= 0x2069) {
			tb.Errorf("%s: output holds %U raw: %q", what, r, out)
			return
		}
	}
}
