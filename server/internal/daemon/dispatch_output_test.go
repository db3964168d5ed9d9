package daemon_test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	nodev1 "github.com/palyra/palyra/gen/go/palyra/node/v1"
	"github.com/palyra/palyra/internal/eventually"
	"github.com/palyra/palyra/server/internal/store/storetest"
)

// pattern returns n bytes that differ from any shift of themselves (a counter written
// in decimal), so that a chunk stored at the wrong offset is seen.
func pattern(n int) []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < n; i++ {
		b.WriteString(strings.Repeat(" ", i%7))
		b.WriteString(time.Duration(i).String())
	}
	return b.Bytes()[:n]
}

// storedOutput returns how many bytes and rows of output the database holds for a
// dispatch.
func storedOutput(t *testing.T, b *accessBundle, id string) (bytes, rows int64) {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), b.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(t.Context())
	if err := conn.QueryRow(t.Context(), "select coalesce(sum(octet_length(data)), 0), count(*) from dispatch_output where dispatch_id = $1", id).
		Scan(&bytes, &rows); err != nil {
		t.Fatal(err)
	}
	return bytes, rows
}

// TestCompromisedNodeCannotMultiplyOutput: a node speaking the Attach protocol by hand,
// over mutual TLS with its real device certificate, sends its output as overlapping
// 64 KiB chunks, each twice, well beyond the dispatch's cap. palyrad stores the output
// once, contiguous and cut at the cap, and serves it back.
func TestCompromisedNodeCannotMultiplyOutput(t *testing.T) {
	t.Parallel()
	b := startAccess(t)
	dev := b.enroll(t, time.Hour)
	node, _ := attachNode(t, b.testDaemon, dev)

	const maxOutput = 1 << 20
	d := createDispatch(t, b.testDaemon, &controlplanev1.CreateDispatchRequest{
		NodeId: dev.deviceID, Capability: "shell.execute", InputJson: `{"argv":["cat","big"]}`, MaxOutputBytes: maxOutput,
	})
	id := node.nextDispatch().GetDispatchId()
	node.send(accepted(id))
	text := pattern(maxOutput + maxOutput/4 + 64<<10)
	sent := 0
	for off := 0; off+64<<10 <= len(text); off += 8 << 10 {
		chunk := string(text[off : off+64<<10])
		node.send(output(id, uint64(off), chunk))
		node.send(output(id, uint64(off), chunk)) // and again
		sent += 2 * len(chunk)
	}
	node.send(result(id, nodev1.DispatchOutcome_DISPATCH_OUTCOME_SUCCEEDED, 0, uint64(len(text))))
	if ack := node.next().GetResultAck(); ack.GetDispatchId() != id {
		t.Fatalf("no ack for the result: %v", ack)
	}
	stored, rows := storedOutput(t, b, d.GetId())
	t.Logf("the node sent %d bytes of output for a dispatch capped at %d; palyrad stored %d bytes in %d rows", sent, maxOutput, stored, rows)
	if stored != maxOutput {
		t.Errorf("palyrad stored %d bytes of output, want the cap, %d", stored, maxOutput)
	}
	got, _ := getDispatch(t, b.testDaemon, d.GetId())
	if got.GetState() != controlplanev1.DispatchState_DISPATCH_STATE_SUCCEEDED || !got.GetOutputTruncated() ||
		got.GetOutputBytes() != uint64(len(text)) {
		t.Errorf("dispatch: %v", got)
	}
	// Read back with a watch (which reads it in pages of its own), whole, and in pages
	// of 100 KiB.
	watch, err := b.dispatchClient().WatchDispatch(t.Context(), connect.NewRequest(&controlplanev1.WatchDispatchRequest{Id: d.GetId()}))
	if err != nil {
		t.Fatal(err)
	}
	var watched bytes.Buffer
	for watch.Receive() {
		if o := watch.Msg().GetOutput(); o != nil {
			if o.GetOffset() != uint64(watched.Len()) {
				t.Fatalf("the watch sent a chunk at offset %d after %d bytes", o.GetOffset(), watched.Len())
			}
			watched.Write(o.GetData())
		}
	}
	if err := watch.Err(); err != nil || !bytes.Equal(watched.Bytes(), text[:maxOutput]) {
		t.Errorf("the watch read %d bytes (%v), not the first %d bytes the node sent", watched.Len(), err, maxOutput)
	}
	for _, page := range []uint32{0, 100 << 10} {
		out, pages := readAllOutput(t, b.testDaemon, d.GetId(), page)
		if out != string(text[:maxOutput]) {
			t.Errorf("the output read back in pages of %d (%d bytes) is not the first %d bytes the node sent", page, len(out), maxOutput)
		}
		if want := 1 + maxOutput/(100<<10); page > 0 && pages != want {
			t.Errorf("%d pages of 100 KiB, want %d", pages, want)
		}
	}
}

// readAllOutput reads a dispatch's output with GetDispatch, pages of at most page bytes
// (0: as much as fits one response), and returns it and the number of pages.
func readAllOutput(t *testing.T, td *testDaemon, id string, page uint32) (string, int) {
	t.Helper()
	var out strings.Builder
	pages := 0
	for from, more := uint64(0), true; more; pages++ {
		res, err := td.dispatchClient().GetDispatch(t.Context(), connect.NewRequest(&controlplanev1.GetDispatchRequest{
			Id: id, IncludeOutput: true, OutputOffset: from, OutputPageBytes: page,
		}))
		if err != nil {
			t.Fatalf("page %d of dispatch %s from %d: %v", pages, id, from, err)
		}
		for _, c := range res.Msg.GetOutput() {
			if c.GetOffset() != uint64(out.Len()) {
				t.Fatalf("page %d: a chunk at offset %d after %d bytes", pages, c.GetOffset(), out.Len())
			}
			out.Write(c.GetData())
		}
		if size := proto.Size(res.Msg); page > 0 && size > int(page)+proto.Size(res.Msg.GetDispatch())+64 {
			t.Errorf("page %d: a response of %d bytes for pages of %d", pages, size, page)
		}
		if res.Msg.GetNextOutputOffset() != uint64(out.Len()) {
			t.Fatalf("page %d: next_output_offset %d after %d bytes", pages, res.Msg.GetNextOutputOffset(), out.Len())
		}
		from, more = res.Msg.GetNextOutputOffset(), res.Msg.GetMoreOutput()
	}
	return out.String(), pages
}

// TestOutputMustBeContiguous: a chunk that leaves a gap after the stored output, or that
// repeats part of it with other bytes, breaks the protocol and ends the stream; a chunk
// that repeats the stored output and goes on adds only what is new.
func TestOutputMustBeContiguous(t *testing.T) {
	t.Parallel()
	b := startAccess(t)
	dev := b.enroll(t, time.Hour)
	node, _ := attachNode(t, b.testDaemon, dev)
	d := createDispatch(t, b.testDaemon, &controlplanev1.CreateDispatchRequest{NodeId: dev.deviceID, Capability: "system.info"})
	id := node.nextDispatch().GetDispatchId()
	node.send(accepted(id))
	node.send(output(id, 0, "hello"))
	node.send(output(id, 0, "hel")) // a repeat, in the same round or the next
	waitState(t, b.testDaemon, id, controlplanev1.DispatchState_DISPATCH_STATE_RUNNING)
	eventually.NoError(t, "the output stored", func() error {
		if out, _ := readAllOutput(t, b.testDaemon, id, 0); out != "hello" {
			return fmt.Errorf("the output is %q", out)
		}
		return nil
	})
	for _, tc := range []struct {
		name string
		bad  *nodev1.AttachRequest
	}{
		{"a gap", output(id, 7, "world")},
		{"other bytes", output(id, 2, "LLo world")},
		{"another stream", &nodev1.AttachRequest{Message: &nodev1.AttachRequest_Output{Output: &nodev1.DispatchOutput{
			DispatchId: id, Stream: nodev1.OutputStream_OUTPUT_STREAM_STDERR, Offset: 0, Data: []byte("he"),
		}}}},
		{"the last byte", output(id, 4, "x")},
	} {
		name := tc.name
		node.send(tc.bad)
		err := node.ended()
		wantCode(t, name, err, connect.CodeInvalidArgument)
		if err != nil && !strings.Contains(err.Error(), "dispatch "+id) {
			t.Errorf("%s: %v does not name the dispatch", name, err)
		}
		if got, _ := getDispatch(t, b.testDaemon, d.GetId()); got.GetState() != controlplanev1.DispatchState_DISPATCH_STATE_RUNNING {
			t.Errorf("%s: the dispatch is %v", name, got.GetState())
		}
		if out, _ := readAllOutput(t, b.testDaemon, id, 0); out != "hello" {
			t.Errorf("%s: output %q, want %q", name, out, "hello")
		}
		node, _ = attachNode(t, b.testDaemon, dev)
		if got := node.nextDispatch().GetDispatchId(); got != id {
			t.Fatalf("redelivered %s, want %s", got, id)
		}
	}
	// The node sends everything again, with more after it.
	node.send(output(id, 0, "hello"))
	node.send(output(id, 0, "hello world\n"))
	node.send(output(id, 12, "bye\n"))
	node.send(result(id, nodev1.DispatchOutcome_DISPATCH_OUTCOME_SUCCEEDED, 0, 16))
	if ack := node.next().GetResultAck(); ack.GetDispatchId() != id {
		t.Fatalf("no ack for the result: %v", ack)
	}
	got, _ := getDispatch(t, b.testDaemon, id)
	out, _ := readAllOutput(t, b.testDaemon, id, 0)
	if got.GetState() != controlplanev1.DispatchState_DISPATCH_STATE_SUCCEEDED || got.GetOutputBytes() != 16 || out != "hello world\nbye\n" {
		t.Errorf("dispatch %v, output_bytes %d, output %q", got.GetState(), got.GetOutputBytes(), out)
	}
	if stored, rows := storedOutput(t, b, id); stored != 16 || rows != 3 {
		t.Errorf("stored %d bytes in %d rows, want 16 in 3", stored, rows)
	}
}

// TestExecuteCapabilityPagesLargeOutput: output that does not fit one response (here,
// many small chunks under a small message limit) comes back in part, and the rest page
// by page with GetDispatch.
func TestExecuteCapabilityPagesLargeOutput(t *testing.T) {
	t.Parallel()
	dbURL := storetest.URL(t)
	b := &accessBundle{testDaemon: startDaemon(t, "--database-url", dbURL, "--data-dir", t.TempDir(), "--server-max-message-bytes", "64KiB"), dbURL: dbURL}
	dev := b.enroll(t, time.Hour)
	node, _ := attachNode(t, b.testDaemon, dev)
	text := pattern(32 << 10)
	go func() {
		id := node.nextDispatch().GetDispatchId()
		node.send(accepted(id))
		for off := 0; off < len(text); off += 16 {
			node.send(output(id, uint64(off), string(text[off:off+16])))
		}
		node.send(result(id, nodev1.DispatchOutcome_DISPATCH_OUTCOME_SUCCEEDED, 0, uint64(len(text))))
	}()
	res, err := b.dispatchClient().ExecuteCapability(t.Context(), connect.NewRequest(&controlplanev1.ExecuteCapabilityRequest{
		NodeId: dev.deviceID, Capability: "system.info", MaxOutputBytes: 32 << 10, Timeout: durationpb.New(time.Minute),
	}))
	if err != nil {
		t.Fatal(err)
	}
	first := joined(res.Msg.GetOutput())
	if !res.Msg.GetMoreOutput() || res.Msg.GetNextOutputOffset() != uint64(len(first)) || first != string(text[:len(first)]) {
		t.Fatalf("ExecuteCapability: %d bytes, more %v, next %d", len(first), res.Msg.GetMoreOutput(), res.Msg.GetNextOutputOffset())
	}
	all, pages := readAllOutput(t, b.testDaemon, res.Msg.GetDispatch().GetId(), 0)
	t.Logf("ExecuteCapability returned %d of %d bytes in %d chunks; GetDispatch read it all in %d pages", len(first), len(text), len(res.Msg.GetOutput()), pages)
	if all != string(text) || pages < 2 {
		t.Errorf("read %d bytes in %d pages, want the %d the node sent, in more than one page", len(all), pages, len(text))
	}
}
