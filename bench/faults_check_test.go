package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/palyra/palyra/bench/internal/witness"
	accessv1 "github.com/palyra/palyra/gen/go/palyra/access/v1"
	"github.com/palyra/palyra/gen/go/palyra/access/v1/accessv1connect"
	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	"github.com/palyra/palyra/gen/go/palyra/controlplane/v1/controlplanev1connect"
)

// The invariants the fault suite checks, in the order of its report.
var invariants = []string{
	"lost",                      // acknowledged to a caller, unknown to palyrad
	"stuck",                     // not ended once the load stopped and every deadline passed
	"ran twice",                 // the program of one dispatch started more than once
	"ran on another node",       // ... on a node other than the dispatch's
	"succeeded without running", // succeeded, but its program never started
	"missing output",            // succeeded without its whole output stored, or output_bytes wrong
	"missing audit",             // created without the audit record of the call that created it
	"second dispatch for a key", // an idempotency key made more than one dispatch
	"ran without a dispatch",    // a witness record of no dispatch palyrad has
	"dispatch nobody asked for", // a dispatch with a key no caller used
	"refused or unanswered",     // a CreateDispatch refused with a final code, or unanswered
	"audit log broken",          // audit verify does not hold
}

// examplesShown is how many cases of a failed invariant the report shows.
const examplesShown = 5

// findings are the cases of each invariant that failed, with their evidence.
type findings map[string][]string

func (f findings) add(invariant, format string, args ...any) {
	f[invariant] = append(f[invariant], fmt.Sprintf(format, args...))
}

// check checks the invariants through the public API, prints the report and fails the
// test for each invariant that does not hold.
func (s *faultSuite) check(t *testing.T) {
	t.Helper()
	hc := s.reps[0].d.apiClient(s.admin)
	defer hc.CloseIdleConnections()
	dc := controlplanev1connect.NewDispatchServiceClient(hc, s.reps[0].d.baseURL)
	ac := accessv1connect.NewAuditServiceClient(hc, s.reps[0].d.baseURL)
	f := findings{}

	all, err := listDispatches(dc, controlplanev1.DispatchState_DISPATCH_STATE_UNSPECIFIED)
	if err != nil {
		t.Fatalf("list the dispatches: %v", err)
	}
	byID := map[string]*controlplanev1.Dispatch{}
	byKey := map[string][]*controlplanev1.Dispatch{}
	for _, d := range all {
		byID[d.GetId()] = d
		byKey[d.GetIdempotencyKey()] = append(byKey[d.GetIdempotencyKey()], d)
	}
	intents := map[string]*intent{}
	for _, c := range s.callers {
		for _, in := range c.intents {
			intents[in.key] = in
		}
	}
	runs, err := readWitness(s.witness)
	if err != nil {
		t.Fatal(err)
	}
	audited, err := auditedCreates(ac)
	if err != nil {
		t.Fatalf("list the audit events: %v", err)
	}
	nodeOf := map[string]string{} // device id → node name
	for _, a := range s.agents {
		nodeOf[a.deviceID] = a.name
	}

	// The callers' side: every answer names the one dispatch of its key.
	var unanswered, retriedKeys, callsRetried int
	for _, in := range intents {
		ids := map[string]bool{}
		for _, a := range in.attempts {
			if a.err == nil {
				ids[a.id] = true
			}
		}
		callsRetried += len(in.attempts) - 1
		if len(in.attempts) > 1 {
			retriedKeys++
		}
		switch {
		case in.refused != nil:
			f.add("refused or unanswered", "key %s: refused (calls: %s)", in.key, s.calls(in))
		case len(ids) == 0:
			unanswered++
			f.add("refused or unanswered", "key %s: no answer over %v (calls: %s)", in.key, giveUpAfter, s.calls(in))
		}
		if len(ids) > 1 {
			f.add("second dispatch for a key", "key %s: answers named %v (calls: %s)", in.key, slices.Sorted(maps.Keys(ids)), s.calls(in))
		}
		for id := range ids {
			if byID[id] == nil {
				f.add("lost", "dispatch %s (key %s, node %s) was acknowledged, palyrad does not list it",
					id, in.key, s.agents[in.node].name)
			}
		}
	}

	// palyrad's side, dispatch by dispatch.
	var succeeded []*controlplanev1.Dispatch
	states := map[string]int{}
	failures := map[string]int{}
	for _, d := range all {
		key := d.GetIdempotencyKey()
		in := intents[key]
		states[stateName(d.GetState())]++
		if in == nil {
			f.add("dispatch nobody asked for", "dispatch %s has key %q, which no caller used", d.GetId(), key)
			continue
		}
		if len(byKey[key]) > 1 && byKey[key][0] == d {
			f.add("second dispatch for a key", "key %s: %d dispatches", key, len(byKey[key]))
		}
		node := nodeOf[d.GetNodeId()]
		ev := fmt.Sprintf("dispatch %s (key %s, node %s, %s)", d.GetId(), key, node, stateName(d.GetState()))
		if !terminal(d.GetState()) {
			f.add("stuck", "%s", ev)
		}
		starts := runs[key]
		if len(starts) > 1 {
			f.add("ran twice", "%s: started %d times, on %v", ev, len(starts), starts)
		}
		for _, on := range starts {
			if on != node {
				f.add("ran on another node", "%s: ran on %s", ev, on)
			}
		}
		switch d.GetState() {
		case controlplanev1.DispatchState_DISPATCH_STATE_SUCCEEDED:
			succeeded = append(succeeded, d)
			if len(starts) == 0 {
				f.add("succeeded without running", "%s", ev)
			}
		case controlplanev1.DispatchState_DISPATCH_STATE_FAILED, controlplanev1.DispatchState_DISPATCH_STATE_TIMED_OUT:
			failures[stateName(d.GetState())+": "+d.GetError()]++
		}
		if creation := creationAudited(in, audited); creation != "" {
			f.add("missing audit", "%s: %s (calls: %s)", ev, creation, s.calls(in))
		}
	}
	for key, on := range runs {
		if len(byKey[key]) == 0 {
			f.add("ran without a dispatch", "witness record of key %s (on %v), which palyrad does not list", key, on)
		}
	}

	// The output of every succeeded dispatch.
	outputs := make([]string, len(succeeded))
	err = forEach(len(succeeded), 4, func(i int) error {
		d := succeeded[i]
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		res, err := dc.GetDispatch(ctx, connect.NewRequest(&controlplanev1.GetDispatchRequest{Id: d.GetId(), IncludeOutput: true}))
		if err != nil {
			return fmt.Errorf("get dispatch %s: %w", d.GetId(), err)
		}
		outputs[i] = checkOutput(res.Msg.GetDispatch(), res.Msg.GetOutput(), intents[d.GetIdempotencyKey()].size)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, problem := range outputs {
		if problem != "" {
			d := succeeded[i]
			f.add("missing output", "dispatch %s (key %s, node %s): %s", d.GetId(), d.GetIdempotencyKey(), nodeOf[d.GetNodeId()], problem)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	verdict, err := ac.VerifyAuditLog(ctx, connect.NewRequest(&accessv1.VerifyAuditLogRequest{}))
	if err != nil {
		t.Fatalf("verify the audit log: %v", err)
	}
	if !verdict.Msg.GetIntact() {
		f.add("audit log broken", "first broken event %d: %s", verdict.Msg.GetFirstBrokenSequence(), verdict.Msg.GetProblem())
	}

	s.report(f, reportFigures{
		dispatches: len(all), intents: len(intents), unanswered: unanswered, states: states, failures: failures,
		retriedKeys: retriedKeys, callsRetried: callsRetried,
		auditChecked: verdict.Msg.GetEventsChecked(),
	})
	for _, inv := range invariants {
		if n := len(f[inv]); n > 0 {
			t.Errorf("%s: %d (FAULTS_SEED=%d); the first: %s", inv, n, s.cfg.seed, f[inv][0])
		}
	}
}

// readWitness reads the witness file: the nodes each token's program started on, once
// per start.
func readWitness(path string) (map[string][]string, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	runs := map[string][]string{}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		token, node, err := witness.ParseRecord(sc.Text())
		if err != nil {
			return nil, err
		}
		runs[token] = append(runs[token], node)
	}
	return runs, sc.Err()
}

// auditedCreates returns the outcome of every audited CreateDispatch call, by request
// id.
func auditedCreates(ac accessv1connect.AuditServiceClient) (map[string]accessv1.AuditOutcome, error) {
	out := map[string]accessv1.AuditOutcome{}
	token := ""
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		res, err := ac.ListAuditEvents(ctx, connect.NewRequest(&accessv1.ListAuditEventsRequest{
			Procedure: controlplanev1connect.DispatchServiceCreateDispatchProcedure, PageSize: 500, PageToken: token,
		}))
		cancel()
		if err != nil {
			return nil, err
		}
		for _, e := range res.Msg.GetEvents() {
			if out[e.GetRequestId()] != accessv1.AuditOutcome_AUDIT_OUTCOME_SUCCESS {
				out[e.GetRequestId()] = e.GetOutcome()
			}
		}
		if token = res.Msg.GetNextPageToken(); token == "" {
			return out, nil
		}
	}
}

// creationAudited returns "" when the call that created in's dispatch has its audit
// record (a successful CreateDispatch event with the call's request id), else what is
// missing. The creating call is the one answered created=true; when that answer was
// lost in transit, it is one of the calls that got no answer.
func creationAudited(in *intent, audited map[string]accessv1.AuditOutcome) string {
	ok := func(a attempt) bool {
		return audited[a.requestID] == accessv1.AuditOutcome_AUDIT_OUTCOME_SUCCESS ||
			a.echoedID != "" && audited[a.echoedID] == accessv1.AuditOutcome_AUDIT_OUTCOME_SUCCESS
	}
	var unanswered []string
	for _, a := range in.attempts {
		switch {
		case a.err == nil && a.created:
			if ok(a) {
				return ""
			}
			return fmt.Sprintf("answered created=true to request %s, which has no successful audit event", a.requestID)
		case a.err != nil:
			if ok(a) {
				return ""
			}
			unanswered = append(unanswered, a.requestID)
		}
	}
	return fmt.Sprintf("no call was answered created=true, and none of the unanswered ones %v has a successful audit event", unanswered)
}

// checkOutput returns "" when d, which succeeded, has the whole output of its program
// (witness.Output of size bytes) stored and says so, else what is wrong.
func checkOutput(d *controlplanev1.Dispatch, chunks []*controlplanev1.OutputChunk, size int) string {
	want := witness.Output(d.GetIdempotencyKey(), size)
	var got []byte
	var covered []bool
	overlaps, conflicts := 0, 0
	for _, c := range chunks {
		end := int(c.GetOffset()) + len(c.GetData())
		for len(got) < end {
			got, covered = append(got, 0), append(covered, false)
		}
		for j, b := range c.GetData() {
			at := int(c.GetOffset()) + j
			if covered[at] {
				overlaps++
				if got[at] != b {
					conflicts++
				}
			}
			got[at], covered[at] = b, true
		}
	}
	holes := 0
	for _, c := range covered {
		if !c {
			holes++
		}
	}
	var problems []string
	if d.GetOutputBytes() != uint64(size) || d.GetOutputTruncated() {
		problems = append(problems, fmt.Sprintf("output_bytes %d (truncated %t), the program printed %d", d.GetOutputBytes(), d.GetOutputTruncated(), size))
	}
	if !bytes.Equal(got, want) || holes > 0 || conflicts > 0 {
		problems = append(problems, fmt.Sprintf("%d bytes stored in %d chunks (%d missing inside, %d overlapping, %d conflicting), the program printed %d",
			len(got)-holes, len(chunks), holes, overlaps, conflicts, size))
	}
	if d.GetExitCode() != 0 {
		problems = append(problems, fmt.Sprintf("exit code %d", d.GetExitCode()))
	}
	return strings.Join(problems, "; ")
}

// terminal reports whether st is a terminal state.
func terminal(st controlplanev1.DispatchState) bool {
	return st >= controlplanev1.DispatchState_DISPATCH_STATE_SUCCEEDED
}

// stateName is a state's name in lower case, e.g. "timed_out".
func stateName(st controlplanev1.DispatchState) string {
	return strings.ToLower(strings.TrimPrefix(st.String(), "DISPATCH_STATE_"))
}

// reportFigures are the counts the report prints besides the findings.
type reportFigures struct {
	dispatches, intents, unanswered int
	states, failures                map[string]int
	retriedKeys, callsRetried       int
	auditChecked                    int64
}

// report prints the suite's figures and findings.
func (s *faultSuite) report(f findings, r reportFigures) {
	p := func(format string, args ...any) { fmt.Printf(format+"\n", args...) }
	p("")
	p("== fault suite report (FAULTS_SEED=%d to repeat)", s.cfg.seed)
	p("setup:       %d replicas on one PostgreSQL, %d nodes, %d callers at %g dispatches/s for %v; faults every %v on average, stalls up to %v",
		len(s.reps), len(s.agents), len(s.callers), s.cfg.rate, s.cfg.duration, s.cfg.interval, s.cfg.stallMax)
	p("dispatches:  %d asked for, %d created (%d keys retried, on the other replica first; %d calls retried; %d never answered)",
		r.intents, r.dispatches, r.retriedKeys, r.callsRetried, r.unanswered)
	p("states:      %s", formatCounts(r.states))
	for _, reason := range slices.Sorted(maps.Keys(r.failures)) {
		p("             %4d %s", r.failures[reason], reason)
	}
	kinds := map[string]int{}
	for _, ft := range s.faults {
		kinds[ft.kind]++
	}
	p("faults:      %d (%s)", len(s.faults), formatCounts(kinds))
	p("invariants:")
	for _, inv := range invariants {
		mark := "ok"
		if len(f[inv]) > 0 {
			mark = "FAILED"
		}
		p("  %-26s %5d  %s", inv, len(f[inv]), mark)
		for _, ex := range f[inv][:min(len(f[inv]), examplesShown)] {
			p("      %s", ex)
		}
	}
	p("audit log:   %d events verified", r.auditChecked)
	if len(s.faults) > 0 {
		var last time.Time
		for _, ft := range s.faults {
			if ft.end.After(last) {
				last = ft.end
			}
		}
		if s.quiet.IsZero() {
			p("quiescence:  NOT reached (dispatches still open %v after the load stopped)", time.Since(s.loadEnd).Round(time.Second))
		} else {
			p("quiescence:  %.1f s after the last fault ended (%.1f s after the load stopped)",
				s.quiet.Sub(last).Seconds(), s.quiet.Sub(s.loadEnd).Seconds())
		}
	}
	all, each, missed, disturbed := s.reattachTimes()
	p("re-attach:   %d replica restarts; from ready to every node of the replica attached again: p50 %s p99 %s max %s",
		len(s.restarts), quantile(all, 0.5), quantile(all, 0.99), quantile(all, 1))
	p("             per node (%d): p50 %s p99 %s max %s; %d not back before the next restart, %d left out (the node was hit itself)",
		len(each), quantile(each, 0.5), quantile(each, 0.99), quantile(each, 1), missed, disturbed)
	p("logs:        in %s (pg/postgres.log, replica-*/palyrad-*.log, node-*/agent.log; kept when the suite fails)", s.work)
}

// reattachTimes returns, for each restart of a killed replica, the time from it being
// ready until every node attached to it was attached again, and the same per node. A
// node that a fault of its own hit between the replica's kill and its return is left
// out (disturbed), and so is then the restart from all; missed counts the nodes that
// did not attach again before the replica's next restart (or the end).
func (s *faultSuite) reattachTimes() (all, each []time.Duration, missed, disturbed int) {
	for i, r := range s.restarts {
		until := time.Now()
		for _, later := range s.restarts[i+1:] {
			if later.replica == r.replica {
				until = later.ready
				break
			}
		}
		var slowest time.Duration
		complete := true
		for j, a := range s.agents {
			if s.home[j] != r.replica {
				continue
			}
			at, ok := a.attachedAfter(r.ready)
			if !ok || at.After(until) {
				missed++
				complete = false
				continue
			}
			if s.nodeHit(j, r.killed, at) {
				disturbed++
				complete = false
				continue
			}
			each = append(each, at.Sub(r.ready))
			slowest = max(slowest, at.Sub(r.ready))
		}
		if complete {
			all = append(all, slowest)
		}
	}
	return all, each, missed, disturbed
}

// nodeHit reports whether a fault hit agent i between from and to.
func (s *faultSuite) nodeHit(i int, from, to time.Time) bool {
	for _, f := range s.faults {
		if f.node == i && f.at.Before(to) && f.end.After(from) {
			return true
		}
	}
	return false
}

// quantile returns the q-quantile of ds (nearest rank), formatted in seconds; "-" for
// none.
func quantile(ds []time.Duration, q float64) string {
	if len(ds) == 0 {
		return "-"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := min(int(q*float64(len(s))+0.999999)-1, len(s)-1)
	return fmt.Sprintf("%.1fs", s[max(i, 0)].Seconds())
}

// formatCounts formats counts as "name n, ..." by name.
func formatCounts(m map[string]int) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}
