package bench

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/palyra/palyra/bench/internal/relay"
)

// peerPoolSize is the pgx pool of the relay and of River: MinConns = MaxConns = 16,
// the size the floor's relay used. PERF-BASELINES.md's pool check at c=64 found 64
// connections no faster and its tail worse (p99.9 101 ms against 34 ms), and this
// run's check agreed (/work/notes/i17-peers.md); palyrad's own pool is 20.
const peerPoolSize = 16

// BenchmarkPeers measures, in the same run as BenchmarkDispatch and on the same
// PostgreSQL (durable under make bench: fsync and synchronous commit on), the systems a
// user would pick instead of Palyra for durable dispatch (PERF-BASELINES.md, "Durable-
// queue peers"), for the ratio table's targets (ratios_test.go). TLS is mutual, with
// certificates from a throwaway P-256 CA, on loopback, as for the baselines.
//
//	durable-relay/c=C    the naive durable relay (bench/internal/relay) in a process of
//	                     its own, as palyrad runs: a connect-go client on one HTTP/2
//	                     connection calls Dispatch with 128 bytes; the relay INSERTs
//	                     (a synchronous commit), sends it on the open bidi stream of its
//	                     one node (in this process, as BenchmarkDispatch's nodes), the
//	                     node answers, the relay UPDATEs (a second commit) and replies.
//	                     Against ExecuteCapability with one node. relay-cpu-µs/op is
//	                     the relay process's CPU.
//	jetstream/c=C        NATS JetStream in an embedded nats-server: file storage with
//	                     sync_always (an fsync per write), a work-queue stream, one
//	                     durable pull consumer on a connection of its own that replies
//	                     to the requester then acknowledges. A request publishes 128
//	                     bytes with a reply subject in a header, waits for the
//	                     stream's publish acknowledgement (the message is stored) and
//	                     for the consumer's reply. Against ExecuteCapability.
//	river-insert/c=C     River (riverpgxv5, its migrations in a database of its own, its
//	                     default configuration): Client.Insert of a job with 128 bytes
//	                     of JSON arguments, by an insert-only client (no queues, no
//	                     worker), so that the jobs stay available as CreateDispatch's
//	                     stay queued for a node that is not attached. Against
//	                     CreateDispatch.
//	river-roundtrip/c=C  River's round trip, for completeness: Insert, then wait until
//	                     the subscription reports the job completed (after the
//	                     completer committed it), by a client working the default
//	                     queue with 100 workers whose Work returns at once. River
//	                     batches completions (a 250 ms cycle unless enough are
//	                     pending), which bounds it: a job queue, not an RPC path.
//
// The relay and River use a pool of peerPoolSize connections. Each measured run takes
// a fresh client connection (River: the same client), makes three calls before the
// clock and, on PostgreSQL, runs after a CHECKPOINT. JetStream needs no PostgreSQL; the
// others skip without DATABASE_URL.
func BenchmarkPeers(b *testing.B) {
	ca := newThrowawayCA(b)
	b.Run("durable-relay", func(b *testing.B) {
		pg := openPostgres(b)
		baseURL, pid := startRelay(b, ca, pg)
		m := meter{palyrad: pid, name: "relay", pg: pg}
		for _, c := range concurrencies {
			b.Run(fmt.Sprintf("c=%d", c), func(b *testing.B) {
				op := relayDispatch(b, ca, baseURL)
				pg.checkpoint(b)
				warmUp(b, op)
				closedLoop(b, c, m, "dispatches/s", op)
			})
		}
	})
	b.Run("jetstream", func(b *testing.B) {
		url := startJetStream(b, ca)
		for _, c := range concurrencies {
			b.Run(fmt.Sprintf("c=%d", c), func(b *testing.B) {
				op := jetStreamRequest(b, ca, url)
				warmUp(b, op)
				closedLoop(b, c, meter{}, "requests/s", op)
			})
		}
	})
	b.Run("river-insert", func(b *testing.B) {
		pg := openPostgres(b)
		pool := riverPool(b, pg)
		client, err := river.NewClient(riverpgxv5.New(pool), &river.Config{})
		if err != nil {
			b.Fatal(err)
		}
		op := func(ctx context.Context) error {
			_, err := client.Insert(ctx, peerJobArgs{Payload: peerJobPayload}, nil)
			return err
		}
		for _, c := range concurrencies {
			b.Run(fmt.Sprintf("c=%d", c), func(b *testing.B) {
				pg.checkpoint(b)
				warmUp(b, op)
				closedLoop(b, c, meter{pg: pg}, "inserts/s", op)
			})
		}
	})
	b.Run("river-roundtrip", func(b *testing.B) {
		pg := openPostgres(b)
		op := riverRoundTrip(b, riverPool(b, pg))
		for _, c := range concurrencies {
			b.Run(fmt.Sprintf("c=%d", c), func(b *testing.B) {
				pg.checkpoint(b)
				warmUp(b, op)
				closedLoop(b, c, meter{pg: pg}, "jobs/s", op)
			})
		}
	})
}

// warmUp makes three calls before the clock: they open the connection and fill the
// caches (prepared statements).
func warmUp(b *testing.B, op func(context.Context) error) {
	b.Helper()
	for range 3 {
		if err := op(context.Background()); err != nil {
			b.Fatalf("warm-up: %v", err)
		}
	}
}

// startRelay starts bench/cmd/durablerelay on a database of its own on pg with ca's
// server certificate, attaches its node (relay.RunNode, in this process, on an HTTP/2
// connection of its own with the client certificate) and returns the relay's base URL
// and process id. Both are stopped when b ends.
func startRelay(b *testing.B, ca *throwawayCA, pg *postgres) (string, int) {
	b.Helper()
	bin := goBinary(b, ".", "./cmd/durablerelay", "durablerelay")
	dir := b.TempDir()
	certFile, keyFile, caFile := ca.writeServerPEM(b, dir)
	dbURL := pg.newDatabase(b)
	logPath := filepath.Join(dir, "durablerelay.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		b.Fatal(err)
	}
	defer logFile.Close()
	cmd := exec.Command(bin, "-database-url", dbURL, "-pool", strconv.Itoa(peerPoolSize),
		"-cert", certFile, "-key", keyFile, "-ca", caFile)
	cmd.Stderr = logFile
	// A bench killed by its timeout leaves no relay behind (one once kept a flock of
	// its parent's held for half an hour).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, w, err := os.Pipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stdout = w
	err = cmd.Start()
	w.Close()
	if err != nil {
		out.Close()
		b.Fatalf("start durablerelay: %v", err)
	}
	exited := make(chan struct{})
	lines := make(chan string, 8)
	go func() {
		// Reads the relay's standard output until it exits.
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
		out.Close()
		_ = cmd.Wait()
		close(exited)
	}()
	stop := func() {
		if !stopProcess(cmd.Process, exited, syscall.SIGTERM, 30*time.Second) {
			b.Errorf("durablerelay did not stop within 30 s of SIGTERM; killed. Its log is %s", logPath)
		}
	}
	b.Cleanup(stop)
	wait := func(prefix string) string {
		b.Helper()
		deadline := time.After(60 * time.Second)
		for {
			select {
			case line := <-lines:
				if rest, ok := strings.CutPrefix(line, prefix); ok {
					return strings.TrimSpace(rest)
				}
			case <-exited:
				b.Fatalf("durablerelay exited; its log is %s:\n%s", logPath, tail(logPath))
			case <-deadline:
				b.Fatalf("durablerelay: no %q within 60 s; its log is %s:\n%s", prefix, logPath, tail(logPath))
			}
		}
	}
	baseURL := "https://" + wait("listening")
	tr := h2Transport(ca)
	ctx, cancel := context.WithCancel(context.Background())
	nodeDone := make(chan error, 1)
	go func() { nodeDone <- relay.RunNode(ctx, &http.Client{Transport: tr}, baseURL) }()
	b.Cleanup(func() {
		// The node's Receive did not return on the cancel alone in this harness (it
		// hung until the test's timeout); the relay's exit ends it.
		cancel()
		stop()
		<-nodeDone
		tr.CloseIdleConnections()
	})
	wait("node attached")
	return baseURL, cmd.Process.Pid
}

// h2Transport returns an HTTP/2-only transport with connections of its own that
// presents ca's client certificate.
func h2Transport(ca *throwawayCA) *http.Transport {
	tr := &http.Transport{TLSClientConfig: ca.clientConfig(), TLSHandshakeTimeout: 10 * time.Second}
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetHTTP2(true)
	return tr
}

// relayDispatch returns a Dispatch call to the relay at baseURL: a connect-go client,
// Connect protocol, on one HTTP/2 connection of its own.
func relayDispatch(b *testing.B, ca *throwawayCA, baseURL string) func(context.Context) error {
	b.Helper()
	tr := h2Transport(ca)
	b.Cleanup(tr.CloseIdleConnections)
	client := connect.NewClient[wrapperspb.BytesValue, wrapperspb.BytesValue](&http.Client{Transport: tr}, baseURL+relay.DispatchProcedure)
	return func(ctx context.Context) error {
		res, err := client.CallUnary(ctx, connect.NewRequest(wrapperspb.Bytes(echoPayload)))
		if err != nil {
			return err
		}
		return checkEcho(res.Msg.GetValue())
	}
}

// JetStream's names: the stream, its subject, the consumer, and the header that
// carries a request's reply subject (a message's own reply subject is taken by the
// stream's publish acknowledgement).
const (
	jsStream   = "PERF"
	jsSubject  = "perf.jobs"
	jsConsumer = "workers"
	jsReplyHdr = "Perf-Reply"
)

// startJetStream starts a nats-server with JetStream in this process (mutual TLS as
// startNATS; file storage in a temporary directory with sync_always), creates the
// work-queue stream and its durable consumer, and starts the worker: on a connection
// of its own, it publishes each message's data to the message's reply header, then
// acknowledges it (which removes it from the stream). It returns the client URL.
func startJetStream(b *testing.B, ca *throwawayCA) string {
	b.Helper()
	url := runNATSServer(b, ca, func(o *server.Options) {
		o.JetStream, o.StoreDir, o.SyncAlways = true, b.TempDir(), true
	})
	nc, js := connectJetStream(b, ca, url, "bench-jetstream-worker")
	ctx := context.Background()
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: jsStream, Subjects: []string{jsSubject}, Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage,
	})
	if err != nil {
		b.Fatal(err)
	}
	cons, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: jsConsumer, AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		b.Fatal(err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		if err := nc.Publish(m.Headers().Get(jsReplyHdr), m.Data()); err != nil {
			b.Errorf("jetstream worker: reply: %v", err)
			return
		}
		if err := m.Ack(); err != nil {
			b.Errorf("jetstream worker: ack: %v", err)
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(cc.Stop)
	return url
}

// jetStreamRequest returns a request through the work-queue stream, on a connection of
// its own with the client certificate: it publishes echoPayload with a reply subject of
// its own in jsReplyHdr, waits for the publish acknowledgement and for the worker's
// reply (5 s at most, as natsRequest), and checks the reply.
func jetStreamRequest(b *testing.B, ca *throwawayCA, url string) func(context.Context) error {
	b.Helper()
	nc, js := connectJetStream(b, ca, url, "bench-jetstream-requester")
	prefix := nats.NewInbox() + "."
	var pending sync.Map // reply subject → chan []byte (buffer 1)
	sub, err := nc.Subscribe(prefix+"*", func(m *nats.Msg) {
		if ch, ok := pending.Load(m.Subject); ok {
			ch.(chan []byte) <- m.Data
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		b.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		b.Fatal(err)
	}
	var next atomic.Uint64
	return func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		reply := prefix + strconv.FormatUint(next.Add(1), 10)
		ch := make(chan []byte, 1)
		pending.Store(reply, ch)
		defer pending.Delete(reply)
		msg := &nats.Msg{Subject: jsSubject, Header: nats.Header{jsReplyHdr: []string{reply}}, Data: echoPayload}
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			return fmt.Errorf("publish: %w", err)
		}
		select {
		case data := <-ch:
			return checkEcho(data)
		case <-ctx.Done():
			return fmt.Errorf("reply: %w", ctx.Err())
		}
	}
}

// connectJetStream opens a connection named name to the nats-server at url with the
// client certificate (connectNATS) and its JetStream context.
func connectJetStream(b *testing.B, ca *throwawayCA, url, name string) (*nats.Conn, jetstream.JetStream) {
	b.Helper()
	nc := connectNATS(b, ca, url, name)
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	return nc, js
}

// peerJobArgs is River's job: 128 bytes of JSON arguments, as a dispatch's input.
type peerJobArgs struct {
	Payload string `json:"payload"`
}

// peerJobPayload makes peerJobArgs encode to 128 bytes.
var peerJobPayload = strings.Repeat("x", 128-len(`{"payload":""}`))

// Kind names the job for River.
func (peerJobArgs) Kind() string { return "bench_peer" }

// peerWorker works a peerJobArgs by doing nothing.
type peerWorker struct {
	river.WorkerDefaults[peerJobArgs]
}

// Work returns at once.
func (peerWorker) Work(context.Context, *river.Job[peerJobArgs]) error { return nil }

// riverPool creates a database of its own on pg, returns a pool of peerPoolSize
// connections to it, and runs River's migrations into it.
func riverPool(b *testing.B, pg *postgres) *pgxpool.Pool {
	b.Helper()
	cfg, err := pgxpool.ParseConfig(pg.newDatabase(b))
	if err != nil {
		b.Fatal(err)
	}
	cfg.MaxConns, cfg.MinConns = peerPoolSize, peerPoolSize
	ctx := context.Background()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pool.Close)
	migrator, err := rivermigrate.New(riverpgxv5.New(pool), nil)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := migrator.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		b.Fatalf("River's migrations: %v", err)
	}
	return pool
}

// riverRoundTrip starts a River client on pool that works the default queue with 100
// workers (peerWorker), and returns a call that inserts a job and waits until River
// reports it completed (30 s at most). The client stops when b ends.
func riverRoundTrip(b *testing.B, pool *pgxpool.Pool) func(context.Context) error {
	b.Helper()
	workers := river.NewWorkers()
	river.AddWorker(workers, &peerWorker{})
	client, err := river.NewClient(riverpgxv5.New(pool), &river.Config{
		Queues:  map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: 100}},
		Workers: workers,
	})
	if err != nil {
		b.Fatal(err)
	}
	events, unsubscribe := client.Subscribe(river.EventKindJobCompleted)
	done := newCompletions()
	routed := make(chan struct{})
	go func() {
		// Routes completion events to the calls waiting for them, until unsubscribed.
		defer close(routed)
		for ev := range events {
			done.of(ev.Job.ID).complete()
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	if err := client.Start(ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		stopCtx, stop := context.WithTimeout(context.Background(), 30*time.Second)
		defer stop()
		if err := client.Stop(stopCtx); err != nil {
			b.Errorf("stop River's client: %v", err)
		}
		cancel()
		unsubscribe()
		<-routed
	})
	return func(ctx context.Context) error {
		res, err := client.Insert(ctx, peerJobArgs{Payload: peerJobPayload}, nil)
		if err != nil {
			return err
		}
		c := done.of(res.Job.ID)
		defer done.forget(res.Job.ID)
		select {
		case <-c.ch:
			return nil
		case <-time.After(30 * time.Second):
			return fmt.Errorf("River job %d not completed within 30 s", res.Job.ID)
		}
	}
}

// completions pairs River's completion events with the calls waiting for them, in
// whichever order the event and the call's look-up come.
type completions struct {
	mu sync.Mutex // guards the following
	by map[int64]*completion
}

// completion is one job's: ch is closed when its event came.
type completion struct {
	once sync.Once
	ch   chan struct{}
}

func newCompletions() *completions { return &completions{by: map[int64]*completion{}} }

// of returns job id's completion, creating it if it is the first look-up.
func (cs *completions) of(id int64) *completion {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	c, ok := cs.by[id]
	if !ok {
		c = &completion{ch: make(chan struct{})}
		cs.by[id] = c
	}
	return c
}

// forget drops job id's completion once its call is done with it.
func (cs *completions) forget(id int64) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	delete(cs.by, id)
}

// complete closes c's channel, once.
func (c *completion) complete() { c.once.Do(func() { close(c.ch) }) }
