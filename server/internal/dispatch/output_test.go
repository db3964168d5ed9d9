package dispatch

import "testing"

// TestCovers: a chunk sent again matches what is stored only with the same bytes of the
// same stream at each of its offsets, across chunk boundaries, all of it covered.
func TestCovers(t *testing.T) {
	t.Parallel()
	at := func(off int64, stream, data string) OutputChunk {
		return OutputChunk{DispatchID: "d", Offset: off, Stream: stream, Data: []byte(data)}
	}
	stored := []OutputChunk{at(0, "stdout", "hello "), at(6, "stderr", "world"), at(11, "stdout", "!\n")}
	for name, tc := range map[string]struct {
		o    OutputChunk
		want bool
	}{
		"the same chunk":         {at(6, "stderr", "world"), true},
		"a part of one":          {at(1, "stdout", "ell"), true},
		"across two, one stream": {at(4, "stdout", "o w"), false},
		"across two streams":     {at(6, "stderr", "world!"), false},
		"other bytes":            {at(0, "stdout", "jello"), false},
		"another stream":         {at(0, "stderr", "he"), false},
		"beyond what is stored":  {at(11, "stdout", "!\nmore"), false},
		"the last byte":          {at(12, "stdout", "\n"), true},
	} {
		if got := covers(stored, tc.o); got != tc.want {
			t.Errorf("%s: covers = %v, want %v", name, got, tc.want)
		}
	}
}
