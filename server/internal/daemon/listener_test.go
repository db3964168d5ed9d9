package daemon_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/pflag"
	"google.golang.org/protobuf/proto"

	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	"github.com/palyra/palyra/gen/go/palyra/controlplane/v1/controlplanev1connect"
	nodev1 "github.com/palyra/palyra/gen/go/palyra/node/v1"
	"github.com/palyra/palyra/gen/go/palyra/node/v1/nodev1connect"
	"github.com/palyra/palyra/internal/eventually"
	"github.com/palyra/palyra/server/internal/config"
	"github.com/palyra/palyra/server/internal/daemon"
	"github.com/palyra/palyra/server/internal/store/storetest"
)

// The loopback addresses of the listener tests (Linux routes all of 127.0.0.0/8 to lo):
// the attacker holds connections from one, a legitimate caller comes from another.
var (
	attackerIP = net.IPv4(127, 0, 0, 9)
	callerIP   = net.IPv4(127, 0, 0, 2)
)

// slowWithin bounds every wait for the listener to close something: far above the
// timeouts the tests configure, so that a busy machine does not fail them.
const slowWithin = 90 * time.Second

// dialerFrom dials from the loopback address src.
func dialerFrom(src net.IP) *net.Dialer {
	return &net.Dialer{LocalAddr: &net.TCPAddr{IP: src}, Timeout: 10 * time.Second}
}

// tlsFrom completes a TLS handshake from src offering the ALPN protocol alpn.
func (td *testDaemon) tlsFrom(ctx context.Context, src net.IP, alpn string) (*tls.Conn, error) {
	d := &tls.Dialer{NetDialer: dialerFrom(src), Config: &tls.Config{RootCAs: td.roots, ServerName: "localhost", NextProtos: []string{alpn}}}
	c, err := d.DialContext(ctx, "tcp", td.Addr().String())
	if err != nil {
		return nil, err
	}
	return c.(*tls.Conn), nil
}

// keepAlive opens an HTTP/1.1 connection from src, makes one request on it and leaves
// it open and idle: a connection palyrad holds until its idle timeout.
func (td *testDaemon) keepAlive(ctx context.Context, src net.IP) (net.Conn, error) {
	c, err := td.tlsFrom(ctx, src, "http/1.1")
	if err != nil {
		return nil, err
	}
	if _, err := io.WriteString(c, "GET /nothing HTTP/1.1\r\nHost: localhost\r\n\r\n"); err != nil {
		c.Close()
		return nil, err
	}
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		c.Close()
		return nil, err
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return c, nil
}

// closedBy returns a channel closed once the peer has closed c (a read fails).
func closedBy(c net.Conn) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, c)
		close(done)
	}()
	return done
}

// watchedConn is the connection of an HTTP/2 transport that never closes idle
// connections by itself: ended is closed when its reader sees the server close it, or
// when the transport closes it after the server's close_notify or GOAWAY.
type watchedConn struct {
	net.Conn
	once  sync.Once
	ended chan struct{}
}

func (c *watchedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil {
		c.once.Do(func() { close(c.ended) })
	}
	return n, err
}

func (c *watchedConn) Close() error {
	c.once.Do(func() { close(c.ended) })
	return c.Conn.Close()
}

// statusFrom calls GetStatus with the owner's token on a connection of its own from src.
func (td *testDaemon) statusFrom(ctx context.Context, src net.IP) error {
	hc := &http.Client{Transport: &bearer{token: td.owner, next: td.clientFrom(src).Transport}}
	_, err := controlplanev1connect.NewStatusServiceClient(hc, td.baseURL).GetStatus(ctx, connect.NewRequest(&controlplanev1.GetStatusRequest{}))
	return err
}

// envelopePrefix is the prefix of an n-byte message of a Connect or gRPC stream.
func envelopePrefix(n int) []byte {
	return binary.BigEndian.AppendUint32([]byte{0}, uint32(n))
}

// slowThing is something an attacker holds open, and how to see that it ended.
type slowThing struct {
	name  string
	ended <-chan struct{}
}

// TestSlowCallersAreCut holds, from one address, what costs palyrad a connection or a
// stream without ever finishing: unary calls over HTTP/2 and HTTP/1.1 whose headers are
// complete and whose body never comes, TLS connections that send nothing after the
// handshake, TCP connections that never start one, and an Attach stream whose message
// stops half-way. All of them are closed after the configured timeouts, while a caller
// from another address is served, and a node's Attach stream and a WatchDispatch stream
// that were opened before, and stay silent for longer than the body timeout, are not cut.
func TestSlowCallersAreCut(t *testing.T) {
	t.Parallel()
	dbURL := storetest.URL(t)
	b := &accessBundle{testDaemon: startDaemon(t, "--database-url", dbURL, "--data-dir", t.TempDir(),
		"--server-read-body-timeout", "5s", "--server-read-header-timeout", "5s", "--server-idle-timeout", "5s"), dbURL: dbURL}
	td := b.testDaemon
	ctx := t.Context()

	// A node with a dispatch it accepted, and a watch of that dispatch: both streams are
	// silent from here until the slow callers are gone.
	dev := b.enroll(t, time.Hour)
	node, _ := attachNode(t, td, dev)
	d := createDispatch(t, td, &controlplanev1.CreateDispatchRequest{NodeId: dev.deviceID, Capability: "system.info"})
	node.nextDispatch()
	node.send(accepted(d.GetId()))
	waitState(t, td, d.GetId(), controlplanev1.DispatchState_DISPATCH_STATE_RUNNING)
	watch, err := td.dispatchClient().WatchDispatch(ctx, connect.NewRequest(&controlplanev1.WatchDispatchRequest{Id: d.GetId()}))
	if err != nil {
		t.Fatal(err)
	}
	watched := make(chan *controlplanev1.WatchDispatchResponse, 16)
	go func() {
		defer close(watched)
		for watch.Receive() {
			watched <- watch.Msg()
		}
	}()
	if first := <-watched; first.GetDispatch().GetState() != controlplanev1.DispatchState_DISPATCH_STATE_RUNNING {
		t.Fatalf("the watch starts with %v, want the running dispatch", first)
	}

	var slow []slowThing

	// HTTP/2: twenty unary calls on one connection, their bodies never sent.
	h2conn := make(chan *watchedConn, 32)
	h2 := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: td.roots},
		ForceAttemptHTTP2: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dialerFrom(attackerIP).DialContext(ctx, network, addr)
			if err == nil {
				w := &watchedConn{Conn: c, ended: make(chan struct{})}
				h2conn <- w
				return w, nil
			}
			return c, err
		},
	}
	t.Cleanup(h2.CloseIdleConnections)
	// One request first, so that the calls share its connection.
	res, err := (&http.Client{Transport: h2}).Get(td.baseURL + "/nothing")
	if err != nil || res.ProtoMajor != 2 {
		t.Fatalf("HTTP/2 request: %v %v", res, err)
	}
	res.Body.Close()
	slow = append(slow, slowThing{"the HTTP/2 connection of the calls without their body", (<-h2conn).ended})
	answers := make(chan string, 23) // of the calls without their body
	for i := range 20 {
		never, _ := io.Pipe()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, td.baseURL+controlplanev1connect.StatusServiceGetStatusProcedure, never)
		req.Header.Set("Content-Type", "application/json")
		ended := make(chan struct{})
		slow = append(slow, slowThing{fmt.Sprintf("HTTP/2 call %d without its body", i), ended})
		go func() {
			defer close(ended)
			res, err := (&http.Client{Transport: h2}).Do(req)
			if err != nil {
				answers <- err.Error()
				return
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			answers <- fmt.Sprintf("%s %s", res.Proto, body)
		}()
	}

	// HTTP/1.1: three connections, each with a call whose body never comes.
	for i := range 3 {
		c, err := td.tlsFrom(ctx, attackerIP, "http/1.1")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 64\r\n\r\n",
			controlplanev1connect.StatusServiceGetStatusProcedure)
		ended := make(chan struct{})
		slow = append(slow, slowThing{fmt.Sprintf("HTTP/1.1 call %d without its body", i), ended})
		go func() {
			defer close(ended)
			all, _ := io.ReadAll(c)
			answers <- string(all)
		}()
	}
	// TLS connections that say nothing after the handshake, for either protocol.
	for _, alpn := range []string{"h2", "http/1.1"} {
		c, err := td.tlsFrom(ctx, attackerIP, alpn)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		slow = append(slow, slowThing{"an idle TLS connection (" + alpn + ")", closedBy(c)})
	}
	// TCP connections that never start the handshake.
	for i := range 2 {
		c, err := dialerFrom(attackerIP).DialContext(ctx, "tcp", td.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		slow = append(slow, slowThing{fmt.Sprintf("half-open TCP connection %d", i), closedBy(c)})
	}
	// Another device's Attach stream: a hello, then a message that stops half-way.
	other := b.enroll(t, time.Hour)
	hello, _ := proto.Marshal(helloFor(other))
	body, stream := io.Pipe()
	defer stream.Close()
	go func() {
		_, _ = stream.Write(append(envelopePrefix(len(hello)), hello...))
		_, _ = stream.Write(append(envelopePrefix(100), make([]byte, 10)...)) // 10 of 100 bytes
	}()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, td.baseURL+nodev1connect.NodeServiceAttachProcedure, body)
	req.Header.Set("Content-Type", "application/connect+proto")
	req.Header.Set("Connect-Protocol-Version", "1")
	attachEnd := make(chan []byte, 1)
	go func() {
		res, err := td.mtls(other.cert).Do(req)
		if err != nil {
			attachEnd <- []byte(err.Error())
			return
		}
		all, _ := io.ReadAll(res.Body)
		res.Body.Close()
		attachEnd <- all
	}()

	// While all that is held, a caller from another address is served.
	if err := td.statusFrom(ctx, callerIP); err != nil {
		t.Fatalf("a caller from %s while the slow ones are held: %v", callerIP, err)
	}

	timeout, expired := time.After(slowWithin), false
	for _, s := range slow {
		if !expired {
			select {
			case <-s.ended:
				continue
			case <-timeout:
				expired = true
			}
		}
		select {
		case <-s.ended:
		default:
			t.Errorf("%s is still open after %v", s.name, slowWithin)
		}
	}
	if expired {
		t.FailNow()
	}
	if n := len(h2conn); n != 0 {
		t.Errorf("the calls without their body dialled %d more connections", n)
	}
	// Each is answered DeadlineExceeded; over HTTP/1.1 the connection is closed with
	// the answer (the rest of the body would be read as the next request).
	for range 23 {
		a := <-answers
		if !strings.Contains(a, "deadline_exceeded") || !strings.Contains(a, "did not arrive within 5s") ||
			strings.HasPrefix(a, "HTTP/1.1") && !strings.Contains(a, "\r\nConnection: close\r\n") {
			t.Errorf("a call without its body was answered %q, want deadline_exceeded (and Connection: close over HTTP/1.1)", a)
		}
	}
	select {
	case all := <-attachEnd:
		if !bytes.Contains(all, []byte("deadline_exceeded")) || !bytes.Contains(all, []byte("did not arrive within 5s")) {
			t.Errorf("the Attach stream stalled in a message ended with %q, want deadline_exceeded", all)
		}
	case <-time.After(slowWithin):
		t.Fatalf("the Attach stream stalled in a message is still open after %v", slowWithin)
	}

	// The node's stream and the watch, silent for longer than the body timeout, still work.
	node.send(output(d.GetId(), 0, "hi"))
	node.send(result(d.GetId(), nodev1.DispatchOutcome_DISPATCH_OUTCOME_SUCCEEDED, 0, 2))
	if ack := node.next().GetResultAck(); ack.GetDispatchId() != d.GetId() {
		t.Fatalf("no ack for the result: %v", ack)
	}
	var out string
	var last *controlplanev1.Dispatch
	for m := range watched {
		out += string(m.GetOutput().GetData())
		if m.GetDispatch() != nil {
			last = m.GetDispatch()
		}
	}
	if err := watch.Err(); err != nil || out != "hi" || last.GetState() != controlplanev1.DispatchState_DISPATCH_STATE_SUCCEEDED {
		t.Errorf("the watch saw %q and %v, ending with %v; want the output and the success", out, last, err)
	}
	td.wantMetrics(t, `palyra_listener_body_timeouts_total 24`)
}

// TestConnectionCaps fills the per-address cap on calls from one address, then the
// per-address cap on connections from another, then the total cap from several: a call
// over its cap is refused at once, a connection over either cap is closed before the
// TLS handshake, a caller from another address is served while only the per-address
// caps are full, a node attached before is served while all are, and closing
// connections makes room again.
func TestConnectionCaps(t *testing.T) {
	t.Parallel()
	dbURL := storetest.URL(t)
	b := &accessBundle{testDaemon: startDaemon(t, "--database-url", dbURL, "--data-dir", t.TempDir(),
		"--server-max-calls-per-address", "6", "--server-read-body-timeout", "10m",
		"--server-max-connections-per-address", "4", "--server-max-connections", "12"), dbURL: dbURL}
	td := b.testDaemon
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()

	// Seven calls at once from 127.0.0.4 on one HTTP/2 connection, their bodies never
	// sent: one is refused with ResourceExhausted, the others wait for their body.
	calls := &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: td.roots}, ForceAttemptHTTP2: true,
		DialContext: dialerFrom(net.IPv4(127, 0, 0, 4)).DialContext,
	}}
	if res, err := calls.Get(td.baseURL + "/nothing"); err != nil || res.ProtoMajor != 2 {
		t.Fatalf("HTTP/2 request: %v %v", res, err)
	} else {
		res.Body.Close()
	}
	answered := make(chan string, 7)
	for range 7 {
		never, _ := io.Pipe()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, td.baseURL+controlplanev1connect.StatusServiceGetStatusProcedure, never)
		req.Header.Set("Content-Type", "application/json")
		go func() {
			res, err := calls.Do(req)
			if err != nil {
				answered <- err.Error()
				return
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			answered <- string(body)
		}()
	}
	select {
	case a := <-answered:
		if !strings.Contains(a, "resource_exhausted") {
			t.Fatalf("the first of seven calls answered got %q, want resource_exhausted", a)
		}
	case <-time.After(slowWithin):
		t.Fatalf("none of seven calls from one address was refused within %v", slowWithin)
	}

	// Two connections from 127.0.0.1: the node's and the owner's client; 127.0.0.4 has one.
	dev := b.enroll(t, time.Hour)
	node, _ := attachNode(t, td, dev)
	if _, err := td.dispatchClient().ListDispatches(ctx, connect.NewRequest(&controlplanev1.ListDispatchesRequest{})); err != nil {
		t.Fatal(err)
	}
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for range 4 {
		c, err := td.keepAlive(ctx, attackerIP)
		if err != nil {
			t.Fatalf("connection within the per-address cap: %v", err)
		}
		held = append(held, c)
	}
	if c, err := td.tlsFrom(ctx, attackerIP, "http/1.1"); err == nil {
		c.Close()
		t.Fatal("a fifth connection from one address completed its handshake; want it closed at once")
	}
	// 127.0.0.2 has a cap of its own; its client keeps its connection.
	hc := &http.Client{Transport: &bearer{token: td.owner, next: td.clientFrom(callerIP).Transport}}
	status := controlplanev1connect.NewStatusServiceClient(hc, td.baseURL)
	if _, err := status.GetStatus(ctx, connect.NewRequest(&controlplanev1.GetStatusRequest{})); err != nil {
		t.Fatalf("a caller from %s while %s is at its cap: %v", callerIP, attackerIP, err)
	}

	// 2 + 1 + 4 + 1 are open: four more from other addresses reach the total cap of 12.
	opened := 0
	for i := range 12 {
		c, err := td.keepAlive(ctx, net.IPv4(127, 0, 1, byte(10+i/4)))
		if err != nil {
			break
		}
		held = append(held, c)
		opened++
	}
	if opened != 4 {
		t.Fatalf("%d connections opened before the total cap refused one, want 4", opened)
	}
	if c, err := td.tlsFrom(ctx, net.IPv4(127, 0, 0, 3), "http/1.1"); err == nil {
		c.Close()
		t.Fatal("a connection over the total cap completed its handshake; want it closed at once")
	}
	// Connections already open are served: a dispatch goes to the node and back, and the
	// caller of 127.0.0.2 is answered.
	d := createDispatch(t, td, &controlplanev1.CreateDispatchRequest{NodeId: dev.deviceID, Capability: "system.info"})
	if got := node.nextDispatch(); got.GetDispatchId() != d.GetId() {
		t.Fatalf("the node got %v, want %s", got, d.GetId())
	}
	node.send(result(d.GetId(), nodev1.DispatchOutcome_DISPATCH_OUTCOME_SUCCEEDED, 0, 0))
	if ack := node.next().GetResultAck(); ack.GetDispatchId() != d.GetId() {
		t.Fatalf("no ack for the result: %v", ack)
	}
	if _, err := status.GetStatus(ctx, connect.NewRequest(&controlplanev1.GetStatusRequest{})); err != nil {
		t.Fatalf("the open connection of %s at the total cap: %v", callerIP, err)
	}

	// Closing two of the attacker's connections makes room for a newcomer.
	held[0].Close()
	held[1].Close()
	eventually.NoError(t, "room for a new connection after two were closed", func() error {
		c, err := td.tlsFrom(ctx, net.IPv4(127, 0, 0, 3), "http/1.1")
		if err == nil {
			c.Close()
		}
		return err
	})
	td.wantMetrics(t, `palyra_listener_calls_refused_total 1`, `palyra_listener_refused_total{reason="per_address"} 1`,
		`palyra_listener_refused_total{reason="total"} `)
}

// TestMaxConnectionsBeyondTheFileLimit refuses to start with a total cap on connections
// that the open-file limit cannot hold, naming the setting and the limit.
func TestMaxConnectionsBeyondTheFileLimit(t *testing.T) {
	t.Parallel()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur > 10_000_000 {
		t.Skipf("the open-file limit (%d) is above the highest server.max_connections", lim.Cur)
	}
	fs := pflag.NewFlagSet("palyrad", pflag.ContinueOnError)
	getenv := func(string) string { return "" }
	config.RegisterFlags(fs, getenv)
	if err := fs.Parse([]string{"--data-dir", t.TempDir(), "--server-max-connections", strconv.FormatUint(lim.Cur, 10)}); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(fs, getenv)
	if err != nil {
		t.Fatal(err)
	}
	_, err = daemon.Start(t.Context(), cfg, slogDiscard())
	want := fmt.Sprintf("server.max_connections is %d, but the open-file limit (%d) leaves", lim.Cur, lim.Cur)
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("start with server.max_connections at the open-file limit: %v, want an error saying %q", err, want)
	}
}
