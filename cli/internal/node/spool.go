package node

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/palyra/palyra/cli/internal/atomicfile"
	"github.com/palyra/palyra/cli/internal/node/capability"
	nodev1 "github.com/palyra/palyra/gen/go/palyra/node/v1"
)

// The files of the agent in a state directory, besides those of pairing.
const (
	// ConfigFile is the node's configuration (TOML): what its capabilities may do.
	ConfigFile = capability.ConfigFile
	// RanLogFile records every dispatch the node has started and finished, one line
	// each, fsynced before the dispatch runs: the node never runs a dispatch id twice,
	// even across a crash.
	RanLogFile = "ran.log"
	// ResultsDir holds the results that palyrad has not acknowledged yet, each with the
	// output sent before it: one file <dispatch id>.pb each, mode 0600, of
	// length-delimited AttachRequest messages, the output chunks in order, then the
	// result. Agents before 2026-12 kept the result alone, as <dispatch id>.json
	// (protojson of a DispatchResult); such a file is still read.
	ResultsDir = "results"
)

// The extensions of the spool's files.
const (
	spoolExt       = ".pb"
	spoolResultExt = ".json" // a result without its output, as older agents wrote it
)

// ranLogRetention is how long the ran log remembers a dispatch id. Daemons resend a
// dispatch only until its deadline, which is far shorter.
const ranLogRetention = 7 * 24 * time.Hour

// spool keeps the results palyrad has not acknowledged, with their output, in
// <state dir>/results: a result is written with the output the dispatch sent before it
// (synced, renamed into place: the one write the result always had, so the output
// costs no sync of its own) before it is sent, and removed when its ResultAck
// arrives. The output is within the dispatch's cap, as sent. Its methods may be
// called from any goroutine: each file is written atomically and never rewritten.
type spool struct {
	dir string
}

// spooled is a result the spool holds, and the output sent before it: AttachRequest
// messages of DispatchOutput, in order.
type spooled struct {
	result *nodev1.DispatchResult
	output []*nodev1.AttachRequest
}

func newSpool(s *StateDir) spool { return spool{dir: s.File(ResultsDir)} }

func (s spool) path(id, ext string) string { return filepath.Join(s.dir, id+ext) }

// put writes a result and the output sent before it.
func (s spool) put(r *nodev1.DispatchResult, output []*nodev1.AttachRequest) error {
	id := r.GetDispatchId()
	if !ulidPattern.MatchString(id) {
		return fmt.Errorf("malformed dispatch id %q", id)
	}
	var b bytes.Buffer
	for _, m := range append(slices.Clip(output), &nodev1.AttachRequest{Message: &nodev1.AttachRequest_Result{Result: r}}) {
		if _, err := protodelim.MarshalTo(&b, m); err != nil {
			return fmt.Errorf("spool the result of dispatch %s: %w", id, err)
		}
	}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("create the result spool: %w", err)
	}
	if err := atomicfile.Write(s.path(id, spoolExt), b.Bytes(), 0o600); err != nil {
		return fmt.Errorf("spool the result of dispatch %s: %w", id, err)
	}
	return nil
}

// get reads the result of a dispatch and its output; ok is false when it is not
// spooled.
func (s spool) get(id string) (sp *spooled, ok bool, err error) {
	if !ulidPattern.MatchString(id) {
		return nil, false, nil
	}
	b, err := os.ReadFile(s.path(id, spoolExt))
	if errors.Is(err, fs.ErrNotExist) {
		return s.getResult(id)
	}
	if err != nil {
		return nil, false, err
	}
	sp = &spooled{}
	in := bufio.NewReader(bytes.NewReader(b))
	for {
		m := &nodev1.AttachRequest{}
		if err := protodelim.UnmarshalFrom(in, m); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, false, fmt.Errorf("%s: %w", s.path(id, spoolExt), err)
		}
		switch {
		case sp.result != nil:
			return nil, false, fmt.Errorf("%s holds more after the result", s.path(id, spoolExt))
		case m.GetResult() != nil:
			sp.result = m.GetResult()
		case m.GetOutput().GetDispatchId() == id:
			sp.output = append(sp.output, m)
		default:
			return nil, false, fmt.Errorf("%s holds a message that is not output of dispatch %s", s.path(id, spoolExt), id)
		}
	}
	if sp.result.GetDispatchId() != id {
		return nil, false, fmt.Errorf("%s holds no result of dispatch %s", s.path(id, spoolExt), id)
	}
	return sp, true, nil
}

// getResult reads a result kept without its output (by an older agent).
func (s spool) getResult(id string) (*spooled, bool, error) {
	b, err := os.ReadFile(s.path(id, spoolResultExt))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	r := &nodev1.DispatchResult{}
	if err := protojson.Unmarshal(b, r); err != nil {
		return nil, false, fmt.Errorf("%s: %w", s.path(id, spoolResultExt), err)
	}
	if r.GetDispatchId() != id {
		return nil, false, fmt.Errorf("%s holds the result of dispatch %q", s.path(id, spoolResultExt), r.GetDispatchId())
	}
	return &spooled{result: r}, true, nil
}

// remove forgets a result; a result that is not spooled is no error.
func (s spool) remove(id string) error {
	if !ulidPattern.MatchString(id) {
		return nil
	}
	for _, ext := range []string{spoolExt, spoolResultExt} {
		if err := os.Remove(s.path(id, ext)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// ids returns the ids of the spooled results, sorted (dispatch ids are ULIDs: oldest
// first).
func (s spool) ids() ([]string, error) {
	entries, err := os.ReadDir(s.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, e := range entries {
		id, ok := strings.CutSuffix(e.Name(), spoolExt)
		if !ok {
			id, ok = strings.CutSuffix(e.Name(), spoolResultExt)
		}
		if ok && e.Type().IsRegular() && ulidPattern.MatchString(id) {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return slices.Compact(ids), nil
}

// all reads every spooled result. A file that cannot be read is reported in bad and
// left in place, for a person to look at.
func (s spool) all() (results []*spooled, bad []error, err error) {
	ids, err := s.ids()
	if err != nil {
		return nil, nil, err
	}
	for _, id := range ids {
		sp, ok, err := s.get(id)
		switch {
		case err != nil:
			bad = append(bad, err)
		case ok:
			results = append(results, sp)
		}
	}
	return results, bad, nil
}

// SpooledResults returns how many results the node keeps for palyrad to acknowledge.
func (s *StateDir) SpooledResults() (int, error) {
	ids, err := newSpool(s).ids()
	return len(ids), err
}

// The kinds of ran-log lines.
const (
	ranStarted  = "run"  // the dispatch was started (written before it runs)
	ranFinished = "done" // its result was spooled
)

// ranRecord is what the ran log says about one dispatch.
type ranRecord struct {
	started  time.Time // when it was started
	finished bool      // its result was spooled
}

// ranLog is the append-only record of the dispatches the node ran: lines
// "run <RFC 3339 time> <dispatch id>" written and synced before a dispatch runs, and
// "done <time> <id>" once its result is spooled. A dispatch started but neither
// finished nor spooled was cut short by a crash of the agent. A torn last line (the
// agent died while writing it) is ignored: its dispatch never ran.
type ranLog struct {
	path string

	mu sync.Mutex // guards f
	f  *os.File
}

// readRanLog reads the records of the ran log at path; a missing log is empty.
// Malformed lines are counted in bad and skipped.
func readRanLog(path string) (records map[string]*ranRecord, bad int, err error) {
	records = map[string]*ranRecord{}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return records, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		var t time.Time
		if len(f) == 3 {
			t, err = time.Parse(time.RFC3339Nano, f[1])
		}
		if len(f) != 3 || err != nil || !ulidPattern.MatchString(f[2]) || (f[0] != ranStarted && f[0] != ranFinished) {
			bad++
			continue
		}
		r := records[f[2]]
		if r == nil {
			r = &ranRecord{started: t}
			records[f[2]] = r
		}
		if f[0] == ranFinished {
			r.finished = true
		}
	}
	return records, bad, sc.Err()
}

// rewriteRanLog replaces the log at path with records, atomically: the compaction at
// start.
func rewriteRanLog(path string, records map[string]*ranRecord) error {
	ids := make([]string, 0, len(records))
	for id := range records {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var b bytes.Buffer
	for _, id := range ids {
		r := records[id]
		t := r.started.UTC().Format(time.RFC3339Nano)
		fmt.Fprintf(&b, "%s %s %s\n", ranStarted, t, id)
		if r.finished {
			fmt.Fprintf(&b, "%s %s %s\n", ranFinished, t, id)
		}
	}
	return atomicfile.Write(path, b.Bytes(), 0o600)
}

// openRanLog opens the log at path for appending.
func openRanLog(path string) (*ranLog, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	return &ranLog{path: path, f: f}, nil
}

// append writes one line and syncs it to disk.
func (l *ranLog) append(kind, id string, t time.Time) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return errors.New("the ran log is closed")
	}
	if _, err := fmt.Fprintf(l.f, "%s %s %s\n", kind, t.UTC().Format(time.RFC3339Nano), id); err != nil {
		return fmt.Errorf("append to %s: %w", l.path, err)
	}
	if err := l.f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", l.path, err)
	}
	return nil
}

// close closes the log; later appends fail.
func (l *ranLog) close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}
