package dispatch

import (
	"strings"
	"testing"

	"github.com/palyra/palyra/gen/dbsqlc"
)

// TestKeptOutput: a session hands a local waiter the output it stored only when that is
// all that is stored, from offset 0 without a gap.
func TestKeptOutput(t *testing.T) {
	t.Parallel()
	chunk := func(off int64, data string) dbsqlc.DispatchOutput {
		return dbsqlc.DispatchOutput{DispatchID: "d", Offset: off, Stream: "stdout", Data: []byte(data)}
	}
	big := strings.Repeat("x", keptOutput)
	for name, tc := range map[string]struct {
		fresh    bool // handed to the session at its creation
		chunks   []dbsqlc.DispatchOutput
		stored   int64 // output_stored of the ended dispatch
		want     string
		complete bool
	}{
		"in order":                 {true, []dbsqlc.DispatchOutput{chunk(0, "hello "), chunk(6, "world")}, 11, "hello world", true},
		"no output":                {true, nil, 0, "", true},
		"a repeat is ignored":      {true, []dbsqlc.DispatchOutput{chunk(0, "ab"), chunk(0, "ab"), chunk(2, "c")}, 3, "abc", true},
		"a gap":                    {true, []dbsqlc.DispatchOutput{chunk(0, "ab"), chunk(5, "c")}, 6, "", false},
		"less than is stored":      {true, []dbsqlc.DispatchOutput{chunk(0, "ab")}, 5, "ab", false},
		"more than kept in memory": {true, []dbsqlc.DispatchOutput{chunk(0, big), chunk(int64(len(big)), "y")}, int64(len(big)) + 1, "", false},
		"claimed, not fresh":       {false, []dbsqlc.DispatchOutput{chunk(0, "ab")}, 2, "", false},
	} {
		tr := &tracked{outputGap: !tc.fresh}
		for _, c := range tc.chunks {
			tr.keep(c)
		}
		end := tr.outcome(dbsqlc.Dispatch{ID: "d", OutputStored: tc.stored})
		var got strings.Builder
		for _, o := range end.output {
			got.Write(o.Data)
		}
		if end.outputComplete != tc.complete || (tc.complete && got.String() != tc.want) {
			t.Errorf("%s: complete %v, output %q; want %v, %q", name, end.outputComplete, got.String(), tc.complete, tc.want)
		}
	}
}

// TestCovers: a chunk sent again matches what is stored only with the same bytes of the
// same stream at each of its offsets, across chunk boundaries, all of it covered.
func TestCovers(t *testing.T) {
	t.Parallel()
	at := func(off int64, stream, data string) dbsqlc.DispatchOutput {
		return dbsqlc.DispatchOutput{DispatchID: "d", Offset: off, Stream: stream, Data: []byte(data)}
	}
	stored := []dbsqlc.DispatchOutput{at(0, "stdout", "hello "), at(6, "stderr", "world"), at(11, "stdout", "!\n")}
	for name, tc := range map[string]struct {
		o    dbsqlc.DispatchOutput
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
