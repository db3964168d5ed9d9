package node

import (
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/proto"

	nodev1 "github.com/palyra/palyra/gen/go/palyra/node/v1"
)

// TestSpool keeps a result with the output sent before it, reads a result an older
// agent kept alone (<id>.json), leaves an unreadable file in place, and forgets both
// kinds.
func TestSpool(t *testing.T) {
	t.Parallel()
	dir := NewStateDir(t.TempDir())
	sp := newSpool(dir)
	chunk := func(off uint64, data string) *nodev1.AttachRequest {
		return &nodev1.AttachRequest{Message: &nodev1.AttachRequest_Output{Output: &nodev1.DispatchOutput{
			DispatchId: dispatch1, Stream: nodev1.OutputStream_OUTPUT_STREAM_STDOUT, Offset: off, Data: []byte(data),
		}}}
	}
	output := []*nodev1.AttachRequest{chunk(0, "hello "), chunk(6, "world\n")}
	r1 := &nodev1.DispatchResult{DispatchId: dispatch1, Outcome: succeeded, OutputBytes: 12}
	if err := sp.put(r1, output); err != nil {
		t.Fatal(err)
	}
	// An older agent's spool: the result alone, as protojson.
	if err := os.WriteFile(filepath.Join(dir.File(ResultsDir), dispatch2+".json"),
		[]byte(`{"dispatchId":"`+dispatch2+`","outcome":"DISPATCH_OUTCOME_FAILED","outputBytes":"7"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	// A file that is not a spool's.
	if err := os.WriteFile(filepath.Join(dir.File(ResultsDir), dispatch3+".pb"), []byte("\x05junk"), 0o600); err != nil {
		t.Fatal(err)
	}

	got, ok, err := sp.get(dispatch1)
	if err != nil || !ok || !proto.Equal(got.result, r1) || len(got.output) != 2 ||
		!proto.Equal(got.output[0], output[0]) || !proto.Equal(got.output[1], output[1]) {
		t.Fatalf("get %s: %v %v %v", dispatch1, got, ok, err)
	}
	got, ok, err = sp.get(dispatch2)
	if err != nil || !ok || got.result.GetOutputBytes() != 7 || len(got.output) != 0 {
		t.Fatalf("get %s (an older agent's): %v %v %v", dispatch2, got, ok, err)
	}
	all, bad, err := sp.all()
	if err != nil || len(all) != 2 || len(bad) != 1 {
		t.Fatalf("all: %d results, bad %v, %v", len(all), bad, err)
	}
	if n, err := dir.SpooledResults(); n != 3 || err != nil {
		t.Errorf("SpooledResults = %d, %v; want 3 (the unreadable one counts)", n, err)
	}
	for _, id := range []string{dispatch1, dispatch2} {
		if err := sp.remove(id); err != nil {
			t.Fatal(err)
		}
		if _, ok, err := sp.get(id); ok || err != nil {
			t.Errorf("%s after remove: %v %v", id, ok, err)
		}
	}
	if ids, err := sp.ids(); err != nil || len(ids) != 1 || ids[0] != dispatch3 {
		t.Errorf("ids after remove: %v %v", ids, err)
	}
}
