// Package sse reads server-sent events (the text/event-stream format of the HTML
// standard) as OpenAI-compatible servers send them: the upstream providers palyrad calls
// and the local model servers a node's llm.chat fronts.
package sse

import (
	"bufio"
	"bytes"
	"errors"
	"io"
)

// ErrTooLong reports an event, or a line, longer than the Reader allows.
var ErrTooLong = errors.New("sse: event too long")

// Event is one event of a stream.
type Event struct {
	// Type is the event's type (its "event:" field), "" when it has none.
	Type string
	// Data is the event's data: its "data:" lines, joined by "\n".
	Data []byte
}

// Reader reads the events of a stream.
type Reader struct {
	r   *bufio.Reader
	max int
}

// NewReader returns a Reader of r that refuses events (and lines) of more than max
// bytes of data.
func NewReader(r io.Reader, max int) *Reader {
	return &Reader{r: bufio.NewReaderSize(r, 64<<10), max: max}
}

// Next returns the next event that has data, as the standard dispatches them: lines up to
// a blank line, "event:" naming its type, "data:" lines its data, comments (":") and the
// other fields (id, retry) skipped, one space after the colon dropped. It returns io.EOF
// when the stream ends between events (an event left without its blank line is
// dropped, as the standard says), io.ErrUnexpectedEOF when it ends within a line,
// ErrTooLong for an event over the limit, and the stream's own read errors.
func (r *Reader) Next() (Event, error) {
	var ev Event
	var data []byte
	hasData := false
	for {
		line, err := r.line()
		if err != nil {
			return Event{}, err
		}
		if len(line) == 0 {
			if hasData {
				ev.Data = data
				return ev, nil
			}
			ev = Event{}
			continue
		}
		name, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimPrefix(value, []byte(" "))
		switch string(name) {
		case "data":
			if hasData {
				data = append(data, '\n')
			}
			if len(data)+len(value) > r.max {
				return Event{}, ErrTooLong
			}
			data = append(data, value...)
			hasData = true
		case "event":
			ev.Type = string(value)
		}
	}
}

// line reads one line without its "\n" or "\r\n", of at most max bytes (plus a field
// name's worth).
func (r *Reader) line() ([]byte, error) {
	var line []byte
	for {
		part, err := r.r.ReadSlice('\n')
		if len(line)+len(part) > r.max+64 {
			return nil, ErrTooLong
		}
		line = append(line, part...)
		switch {
		case err == nil:
			return bytes.TrimSuffix(line[:len(line)-1], []byte("\r")), nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(line) > 0:
			return nil, io.ErrUnexpectedEOF
		default:
			return nil, err
		}
	}
}
