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

// TestWholeOutput: the output a round gathered is handed with the ended row only when
// it is all of the stored output, from offset 0 without a gap; the copy is paged as
// a read would be.
func TestWholeOutput(t *testing.T) {
	t.Parallel()
	at := func(off int64, stream, data string) OutputChunk {
		return OutputChunk{DispatchID: "d", Offset: off, Stream: stream, Data: []byte(data)}
	}
	gathered := []OutputChunk{at(0, "stdout", "hello "), at(6, "stderr", "world")}
	for name, tc := range map[string]struct {
		chunks []OutputChunk
		stored int64
		known  bool
	}{
		"all of it":                 {gathered, 11, true},
		"no output":                 {nil, 0, true},
		"some stored before":        {gathered[1:], 11, false},
		"more stored than gathered": {gathered, 12, false},
		"less stored than gathered": {gathered, 10, false},
		"a gap":                     {[]OutputChunk{gathered[0], at(7, "stdout", "x")}, 8, false},
		"too much to hand":          {[]OutputChunk{{Data: make([]byte, maxHandedOutput+1)}}, maxHandedOutput + 1, false},
	} {
		got := whole(tc.chunks, tc.stored)
		if (got != nil) != tc.known {
			t.Errorf("%s: handed %v, want %v", name, got != nil, tc.known)
		}
	}
	d := Dispatch{OutputStored: 11, output: whole(gathered, 11)}
	gathered[0].Data[0] = 'j' // the session's buffers may be reused: the hand-off is a copy
	out, next, ok := knownOutput(d, minPage)
	if !ok || next != 11 || len(out) != 2 || string(out[0].Data) != "hello " || out[1].Stream != "stderr" || string(out[1].Data) != "world" {
		t.Errorf("knownOutput = %+v, %d, %v", out, next, ok)
	}
	if _, _, ok := knownOutput(Dispatch{OutputStored: 11}, minPage); ok {
		t.Error("knownOutput of a dispatch read from the database: known")
	}
}
