package apiserver

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/palyra/palyra/gen/go/palyra/node/v1/nodev1connect"
)

// heartbeatStreams are the client streams whose handler bounds the silence between
// messages itself (Attach: a hello within seconds, then heartbeats at the interval the
// welcome sets). Their body gets a deadline per message; every other body, including
// that of a gRPC reflection stream, must arrive whole.
var heartbeatStreams = map[string]bool{nodev1connect.NodeServiceAttachProcedure: true}

// bodyDeadlines bounds the arrival of request bodies, which http.Server leaves unbounded
// once the headers are read (its ReadTimeout would also end every long stream): a body
// must arrive within timeout of the headers, and a message of a heartbeat stream
// within timeout of its first byte. The deadline is the stream's (HTTP/2) or the
// connection's (HTTP/1.1) read deadline; a read past it fails with DeadlineExceeded,
// which ends the call. Once the body is complete the deadline is lifted, so that the
// calls it started (a server stream, say) run as long as they need.
func bodyDeadlines(next http.Handler, timeout time.Duration, m *Metrics) http.Handler {
	if timeout <= 0 {
		return next
	}
	ahead := &sync.Pool{New: func() any { return new([aheadSize]byte) }}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
			next.ServeHTTP(w, r)
			return
		}
		b := &deadlineBody{body: r.Body, w: w, rc: http.NewResponseController(w), timeout: timeout, metrics: m,
			http1: r.ProtoMajor == 1, framed: heartbeatStreams[r.URL.Path] && enveloped(r.Header.Get("Content-Type")),
			pool: ahead}
		if !b.framed {
			b.arm()
		}
		r.Body = b
		next.ServeHTTP(w, r)
	})
}

// enveloped reports whether a body of this content type is a sequence of messages,
// each with the 5-byte prefix of gRPC, gRPC-Web and Connect streams.
func enveloped(contentType string) bool {
	ct := strings.ToLower(contentType)
	return strings.HasPrefix(ct, "application/grpc") || strings.HasPrefix(ct, "application/connect+")
}

// aheadSize is the buffer a heartbeat stream's body reads ahead into, while a message
// arrives: one HTTP/2 frame of the default size.
const aheadSize = 16 << 10

// deadlineBody is a request body under a read deadline. It is read by one goroutine
// (Close may come from another). A heartbeat stream's body also reads ahead while a
// message arrives, so that its handler can tell whether the next message has begun
// (Buffered); between messages it holds no buffer, so an idle stream costs none.
type deadlineBody struct {
	body    io.ReadCloser
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	metrics *Metrics
	http1   bool
	// framed bodies have a deadline per message instead of one for the whole body.
	framed bool

	armed, late bool
	// The message being read, when framed: as much of its prefix (flags, then the
	// big-endian length) as has come, then how many of its bytes are still to come.
	prefix [5]byte
	got    int
	left   uint32

	// pool lends the buffers read ahead into; ahead is what was read ahead and not
	// read yet (in buf, nil when empty), aheadErr what the read that filled it returned.
	pool     *sync.Pool
	buf      *[aheadSize]byte
	ahead    []byte
	aheadErr error
}

func (b *deadlineBody) arm() {
	b.armed = true
	_ = b.rc.SetReadDeadline(time.Now().Add(b.timeout))
}

func (b *deadlineBody) disarm() {
	b.armed = false
	_ = b.rc.SetReadDeadline(time.Time{})
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	switch {
	case len(b.ahead) > 0:
		n := copy(p, b.ahead)
		b.ahead = b.ahead[n:]
		if len(b.ahead) > 0 {
			return n, nil
		}
		err := b.aheadErr
		b.pool.Put(b.buf)
		b.buf, b.ahead, b.aheadErr = nil, nil, nil
		return n, err
	case !b.framed || b.got == 0 && b.left == 0 || len(p) >= aheadSize:
		// Between messages (waiting for the next one), or a read as large as the
		// buffer: straight into p.
		return b.read(p)
	}
	b.buf = b.pool.Get().(*[aheadSize]byte)
	n, err := b.read(b.buf[:])
	k := copy(p, b.buf[:n])
	if k == n {
		b.pool.Put(b.buf)
		b.buf = nil
		return k, err
	}
	b.ahead, b.aheadErr = b.buf[k:n], err
	return k, nil
}

// Buffered returns how many bytes were read ahead and not read yet: when a message
// was just read whole, whether the next one has begun to arrive.
func (b *deadlineBody) Buffered() int { return len(b.ahead) }

// read reads the underlying body under the deadline.
func (b *deadlineBody) read(p []byte) (int, error) {
	n, err := b.body.Read(p)
	if b.framed {
		b.follow(p[:n])
		switch inMessage := b.got > 0 || b.left > 0; {
		case inMessage && !b.armed:
			b.arm()
		case !inMessage && b.armed:
			b.disarm()
		}
	}
	switch {
	case err == nil:
	case errors.Is(err, io.EOF):
		if b.armed {
			b.disarm()
		}
	case errors.Is(err, os.ErrDeadlineExceeded):
		if !b.late {
			b.late = true
			b.metrics.bodyTimeouts.Inc()
			if b.http1 && !b.framed {
				// Not a connection to reuse: the rest of the body would be read as the
				// next request. (Whole bodies are read before the response is written.)
				b.w.Header().Set("Connection", "close")
			}
		}
		if b.framed {
			return n, connect.NewError(connect.CodeDeadlineExceeded,
				fmt.Errorf("a message of the request stream did not arrive within %s of its first byte", b.timeout))
		}
		return n, connect.NewError(connect.CodeDeadlineExceeded, fmt.Errorf("the request body did not arrive within %s", b.timeout))
	}
	return n, err
}

// follow moves the message boundaries along the bytes p.
func (b *deadlineBody) follow(p []byte) {
	for len(p) > 0 {
		if b.left > 0 {
			k := len(p)
			if uint64(k) > uint64(b.left) {
				k = int(b.left)
			}
			b.left -= uint32(k)
			p = p[k:]
			continue
		}
		k := copy(b.prefix[b.got:], p)
		b.got += k
		p = p[k:]
		if b.got == len(b.prefix) {
			b.got, b.left = 0, binary.BigEndian.Uint32(b.prefix[1:])
		}
	}
}

func (b *deadlineBody) Close() error { return b.body.Close() }
