package apiserver

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/palyra/palyra/gen/go/palyra/node/v1/nodev1connect"
)

// envelope frames payload as a message of a Connect or gRPC stream.
func envelope(payload []byte) []byte {
	m := make([]byte, 5, 5+len(payload))
	binary.BigEndian.PutUint32(m[1:], uint32(len(payload)))
	return append(m, payload...)
}

// readMessage reads one message as Connect does: the prefix whole, then the payload
// into a buffer, through a reader limited to it.
func readMessage(r io.Reader) ([]byte, error) {
	var prefix [5]byte
	if _, err := io.ReadFull(r, prefix[:]); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	n := int64(binary.BigEndian.Uint32(prefix[1:]))
	if _, err := io.CopyN(&buf, r, n); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// TestHeartbeatStreamBodyReadsAhead checks, over real HTTP/2, that the body of a
// heartbeat stream tells after a message whether the next one has begun to arrive
// (Buffered), hands every byte on in order whatever the reads look like, and holds no
// buffer between messages.
func TestHeartbeatStreamBodyReadsAhead(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 3000) // larger than aheadSize
	type step struct {
		got      []byte
		buffered int
		holding  bool
		err      error
	}
	steps := make(chan step, 16)
	next := make(chan struct{})
	h := bodyDeadlines(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b := r.Body.(*deadlineBody)
		for i := 0; ; i++ {
			if i == 2 {
				next <- struct{}{} // the client sends the rest only now
			}
			m, err := readMessage(b)
			steps <- step{got: m, buffered: b.Buffered(), holding: b.buf != nil, err: err}
			if err != nil {
				return
			}
		}
	}), 5*time.Minute, NewMetrics("test", "test"))
	srv := httptest.NewUnstartedServer(h)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()

	pr, pw := io.Pipe()
	req, err := http.NewRequest(http.MethodPost, srv.URL+nodev1connect.NodeServiceAttachProcedure, pr)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/connect+proto")
	done := make(chan error, 1)
	go func() {
		resp, err := srv.Client().Do(req)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	// Two messages in one write: the second has arrived once the first is read.
	if _, err := pw.Write(append(envelope([]byte("first")), envelope([]byte("second"))...)); err != nil {
		t.Fatal(err)
	}
	want := []step{{got: []byte("first"), buffered: len(envelope([]byte("second")))}, {got: []byte("second")}}
	for i, w := range want {
		s := <-steps
		if s.err != nil || !bytes.Equal(s.got, w.got) || s.buffered != w.buffered || s.holding != (w.buffered > 0) {
			t.Fatalf("message %d: read %q (err %v), %d bytes ahead, holding a buffer %v; want %q, %d ahead",
				i, s.got, s.err, s.buffered, s.holding, w.got, w.buffered)
		}
	}
	<-next
	// A message larger than the buffer, then one split before its prefix ends.
	third := envelope([]byte("third"))
	if _, err := pw.Write(append(envelope(big), third[:3]...)); err != nil {
		t.Fatal(err)
	}
	go func() {
		if _, err := pw.Write(third[3:]); err == nil {
			pw.Close()
		}
	}()
	for i, w := range [][]byte{big, []byte("third")} {
		s := <-steps
		if s.err != nil || !bytes.Equal(s.got, w) {
			t.Fatalf("message %d after the pause: read %d bytes (err %v), want %d", i, len(s.got), s.err, len(w))
		}
	}
	if s := <-steps; s.err != io.EOF || s.holding {
		t.Fatalf("after the last message: err %v, holding a buffer %v; want EOF and none", s.err, s.holding)
	}
	if err := <-done; err != nil {
		t.Fatal(fmt.Errorf("client: %w", err))
	}
}
