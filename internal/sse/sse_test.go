package sse_test

import (
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/palyra/palyra/internal/sse"
)

// all reads every event of stream and the error that ended it.
func all(stream string, max int) ([]sse.Event, error) {
	r := sse.NewReader(iotest.OneByteReader(strings.NewReader(stream)), max)
	var evs []sse.Event
	for {
		ev, err := r.Next()
		if err != nil {
			return evs, err
		}
		evs = append(evs, ev)
	}
}

func TestReaderFollowsTheEventStreamFormat(t *testing.T) {
	for _, tc := range []struct {
		name, stream string
		want         []sse.Event
		err          error
	}{
		{"data lines", "data: {\"a\":1}\n\ndata: [DONE]\n\n", []sse.Event{{Data: []byte(`{"a":1}`)}, {Data: []byte("[DONE]")}}, io.EOF},
		{"CRLF and no space", "data:x\r\n\r\n", []sse.Event{{Data: []byte("x")}}, io.EOF},
		{"multi-line data joined by newlines", "data: a\ndata:  b\ndata\n\n", []sse.Event{{Data: []byte("a\n b\n")}}, io.EOF},
		{"event type, comments, id and retry", ": keep-alive\nevent: error\nid: 7\nretry: 10\ndata: {}\n\n", []sse.Event{{Type: "error", Data: []byte("{}")}}, io.EOF},
		{"events without data are not dispatched", "event: ping\n\n: only a comment\n\ndata: x\n\n", []sse.Event{{Data: []byte("x")}}, io.EOF},
		{"the type does not outlive its event", "event: error\n\ndata: x\n\n", []sse.Event{{Data: []byte("x")}}, io.EOF},
		{"an event without its blank line is dropped", "data: a\n\ndata: b\n", []sse.Event{{Data: []byte("a")}}, io.EOF},
		{"a stream cut within a line", "data: a\n\ndata: b", []sse.Event{{Data: []byte("a")}}, io.ErrUnexpectedEOF},
		{"an event at the limit", "data: 0123456789\n\n", []sse.Event{{Data: []byte("0123456789")}}, io.EOF},
		{"an event over the limit", "data: 0123456789A\n\n", nil, sse.ErrTooLong},
		{"data lines over the limit together", "data: 01234\ndata: 56789\n\n", nil, sse.ErrTooLong},
		{"a line over the limit", ": " + strings.Repeat("x", 200) + "\n\n", nil, sse.ErrTooLong},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := all(tc.stream, 10)
			if !errors.Is(err, tc.err) {
				t.Errorf("ended with %v, want %v", err, tc.err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("events %q, want %q", got, tc.want)
			}
			for i := range got {
				if got[i].Type != tc.want[i].Type || string(got[i].Data) != string(tc.want[i].Data) {
					t.Errorf("event %d: %q, want %q", i, got[i], tc.want[i])
				}
			}
		})
	}
}

func TestReaderKeepsEventsApart(t *testing.T) {
	r := sse.NewReader(strings.NewReader("data: first\n\ndata: second\n\n"), 1<<10)
	a, err := r.Next()
	if err != nil {
		t.Fatal(err)
	}
	b, err := r.Next()
	if err != nil {
		t.Fatal(err)
	}
	if string(a.Data) != "first" || string(b.Data) != "second" {
		t.Errorf("events %q and %q: an event's data changed when the next was read", a.Data, b.Data)
	}
}
