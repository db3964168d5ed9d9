package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/oklog/ulid/v2"
	"google.golang.org/protobuf/types/known/durationpb"

	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	"github.com/palyra/palyra/gen/go/palyra/controlplane/v1/controlplanev1connect"
)

// The fault suite's callers: how long one call may take, and how long a caller keeps
// retrying a dispatch before it gives up.
const (
	callTimeout = 20 * time.Second
	giveUpAfter = 3 * time.Minute
)

// caller creates dispatches at a steady pace, each with an idempotency key of its own,
// through its home replica; a call that fails in transit (or with a code that says
// "try again") is retried with the same key, alternating replicas, as a client behind
// a load balancer does. Each caller has a token of its own.
type caller struct {
	s       *faultSuite
	n       int
	home    int
	rng     *rand.Rand // used by the caller's goroutine only
	clients []controlplanev1connect.DispatchServiceClient

	mu      sync.Mutex // guards the following
	intents []*intent
}

// intent is a dispatch a caller asked for: its key and what it runs, and every call
// made for it.
type intent struct {
	key     string
	node    int // index of the agent
	size    int // the output the program prints
	delayMS int // the program's pause halfway through its output

	// Written by the caller's goroutine while it asks, read once it is done.
	attempts []attempt
	done     bool
	refused  error // a final, non-retryable answer
}

// attempt is one CreateDispatch call.
type attempt struct {
	replica   int
	requestID string // the X-Request-Id sent
	echoedID  string // the X-Request-Id palyrad answered with, if an answer came
	err       error
	created   bool   // the answer's created
	id        string // the answer's dispatch id
}

func newCaller(t *testing.T, s *faultSuite, n int) *caller {
	t.Helper()
	c := &caller{s: s, n: n, home: n % len(s.reps), rng: rand.New(rand.NewPCG(s.cfg.seed, 100+uint64(n)))}
	token := s.reps[0].d.newToken(t, fmt.Sprintf("faults-caller-%d", n))
	for i, hc := range s.apiClients(token) {
		c.clients = append(c.clients, controlplanev1connect.NewDispatchServiceClient(hc, s.reps[i].d.baseURL))
	}
	return c
}

// run creates dispatches until ctx ends, at the caller's share of the rate; a
// dispatch being retried holds the next one back, and its retries go on after ctx
// ended, until abort ends. It has its own goroutine.
func (c *caller) run(ctx, abort context.Context) {
	every := time.Duration(float64(len(c.s.callers)) / c.s.cfg.rate * float64(time.Second))
	tick := time.NewTicker(every)
	defer tick.Stop()
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		in := &intent{
			key:  fmt.Sprintf("faults-%d-c%d-%06d", c.s.cfg.seed, c.n, n),
			node: c.rng.IntN(len(c.s.agents)),
			// From a few bytes to 48 KiB: more than one chunk of the agent's output
			// (32 KiB) for some.
			size:    8 + min(int(c.rng.ExpFloat64()*8192), 48<<10),
			delayMS: c.rng.IntN(400),
		}
		c.mu.Lock()
		c.intents = append(c.intents, in)
		c.mu.Unlock()
		c.create(abort, in)
	}
}

// create asks for in's dispatch until an answer comes, palyrad refuses it,
// giveUpAfter has passed or abort ends.
func (c *caller) create(abort context.Context, in *intent) {
	input, err := json.Marshal(map[string]any{"argv": []string{
		c.s.program, c.s.witness, in.key, strconv.Itoa(in.size), strconv.Itoa(in.delayMS),
	}})
	if err != nil {
		panic(err)
	}
	first := time.Now()
	for k := 0; ; k++ {
		a := attempt{replica: (c.home + k) % len(c.clients), requestID: ulid.Make().String()}
		req := connect.NewRequest(&controlplanev1.CreateDispatchRequest{
			NodeId: c.s.agents[in.node].deviceID, Capability: "shell.execute", InputJson: string(input),
			Timeout: durationpb.New(c.s.cfg.dispatchTimeout), IdempotencyKey: in.key,
		})
		req.Header().Set("X-Request-Id", a.requestID)
		ctx, cancel := context.WithTimeout(abort, callTimeout)
		res, err := c.clients[a.replica].CreateDispatch(ctx, req)
		cancel()
		if err == nil {
			a.echoedID = res.Header().Get("X-Request-Id")
			a.created, a.id = res.Msg.GetCreated(), res.Msg.GetDispatch().GetId()
		} else {
			a.err = err
			if ce, ok := err.(*connect.Error); ok {
				a.echoedID = ce.Meta().Get("X-Request-Id")
			}
		}
		c.mu.Lock()
		in.attempts = append(in.attempts, a)
		c.mu.Unlock()
		switch {
		case err == nil:
			c.finish(in, nil)
			return
		case !retryable(err):
			c.finish(in, err)
			return
		case time.Since(first) > giveUpAfter || abort.Err() != nil:
			c.finish(in, nil)
			return
		}
		select {
		case <-time.After(min(time.Duration(k+1)*250*time.Millisecond, 2*time.Second)):
		case <-abort.Done():
		}
	}
}

func (c *caller) finish(in *intent, refused error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	in.done, in.refused = true, refused
}

// retryable reports whether a CreateDispatch that failed with err may have failed in
// transit or for a passing reason, so that a client tries again with the same key.
func retryable(err error) bool {
	switch connect.CodeOf(err) {
	case connect.CodeUnavailable, connect.CodeUnknown, connect.CodeInternal, connect.CodeAborted,
		connect.CodeDeadlineExceeded, connect.CodeCanceled:
		return true
	}
	return false
}

// counts returns how many dispatches the caller asked for, how many got an answer,
// and how many calls it retried.
func (c *caller) counts() (intents, answered, retried int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, in := range c.intents {
		retried += max(len(in.attempts)-1, 0)
		if in.answer() != nil {
			answered++
		}
	}
	return len(c.intents), answered, retried
}

// answer returns the first attempt that got an answer, or nil.
func (in *intent) answer() *attempt {
	for i := range in.attempts {
		if in.attempts[i].err == nil {
			return &in.attempts[i]
		}
	}
	return nil
}

// calls describes the calls made for in, for the report: the replica, the request
// id and the answer of each.
func (s *faultSuite) calls(in *intent) string {
	var parts []string
	for _, a := range in.attempts {
		answer := fmt.Sprintf("created=%t", a.created)
		if a.err != nil {
			answer = a.err.Error()
		}
		parts = append(parts, fmt.Sprintf("%s %s: %s", s.reps[a.replica].name, a.requestID, answer))
	}
	return strings.Join(parts, "; ")
}
