package dispatch

import (
	"strings"
	"testing"

	"github.com/palyra/palyra/gen/dbsqlc"
)

// TestKeptOutput: a session hands a local waiter the output it stored only when that is
// all of it, from offset 0 without a gap, as the node reported it.
func TestKeptOutput(t *testing.T) {
	t.Parallel()
	chunk := func(off int64, data string) dbsqlc.DispatchOutput {
		return dbsqlc.DispatchOutput{DispatchID: "d", Offset: off, Stream: "stdout", Data: []byte(data)}
	}
	big := strings.Repeat("x", keptOutput)
	for name, tc := range map[string]struct {
		fresh    bool // handed to the session at its creation
		chunks   []dbsqlc.DispatchOutput
		reported int64 // output_bytes of the result
		max      int64 // max_output_bytes
		want     string
		complete bool
	}{
		"in order":                 {true, []dbsqlc.DispatchOutput{chunk(0, "hello "), chunk(6, "world")}, 11, 100, "hello world", true},
		"no output":                {true, nil, 0, 100, "", true},
		"a repeat is ignored":      {true, []dbsqlc.DispatchOutput{chunk(0, "ab"), chunk(0, "ab"), chunk(2, "c")}, 3, 100, "abc", true},
		"a gap":                    {true, []dbsqlc.DispatchOutput{chunk(0, "ab"), chunk(5, "c")}, 6, 100, "", false},
		"cut at the cap":           {true, []dbsqlc.DispatchOutput{chunk(0, "abcd")}, 10, 4, "abcd", true},
		"less than the node says":  {true, []dbsqlc.DispatchOutput{chunk(0, "ab")}, 5, 100, "ab", false},
		"more than kept in memory": {true, []dbsqlc.DispatchOutput{chunk(0, big), chunk(int64(len(big)), "y")}, int64(len(big)) + 1, 1 << 20, "", false},
		"claimed, not fresh":       {false, []dbsqlc.DispatchOutput{chunk(0, "ab")}, 2, 100, "", false},
	} {
		tr := &tracked{outputGap: !tc.fresh}
		for _, c := range tc.chunks {
			tr.keep(c)
		}
		end := tr.outcome(dbsqlc.Dispatch{ID: "d", OutputBytes: tc.reported, MaxOutputBytes: tc.max})
		var got strings.Builder
		for _, o := range end.output {
			got.Write(o.Data)
		}
		if end.outputComplete != tc.complete || (tc.complete && got.String() != tc.want) {
			t.Errorf("%s: complete %v, output %q; want %v, %q", name, end.outputComplete, got.String(), tc.complete, tc.want)
		}
	}
}
