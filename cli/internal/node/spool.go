package node

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

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
	// ResultsDir holds the results that palyrad has not acknowledged yet, one file
	// <dispatch id>.json each (protojson of a DispatchResult, mode 0600).
	ResultsDir = "results"
)

// ranLogRetention is how long the ran log remembers a dispatch id. Daemons resend a
// dispatch only until its deadline, which is far shorter.
const ranLogRetention = 7 * 24 * time.Hour

// spool keeps the results palyrad has not acknowledged, in <state dir>/results: a
// result is written (synced, renamed into place) before it is sent, and removed when
// its ResultAck arrives. Its methods may be called from any goroutine: each file is
// written atomically and never rewritten.
type spool struct {
	dir string
}

func newSpool(s *StateDir) spool { return spool{dir: s.File(ResultsDir)} }

func (s spool) path(id string) string { return filepath.Join(s.dir, id+".json") }

// put writes a result.
func (s spool) put(r *nodev1.DispatchResult) error {
	if !ulidPattern.MatchString(r.GetDispatchId()) {
		return fmt.Errorf("malformed dispatch id %q", r.GetDispatchId())
	}
	b, err := protojson.MarshalOptions{Multiline: true}.Marshal(r)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("create the result spool: %w", err)
	}
	if err := atomicfile.Write(s.path(r.GetDispatchId()), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("spool the result of dispatch %s: %w", r.GetDispatchId(), err)
	}
	return nil
}

// get reads the result of a dispatch; ok is false when it is not spooled.
func (s spool) get(id string) (r *nodev1.DispatchResult, ok bool, err error) {
	if !ulidPattern.MatchString(id) {
		return nil, false, nil
	}
	b, err := os.ReadFile(s.path(id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	r = &nodev1.DispatchResult{}
	if err := protojson.Unmarshal(b, r); err != nil {
		return nil, false, fmt.Errorf("%s: %w", s.path(id), err)
	}
	if r.GetDispatchId() != id {
		return nil, false, fmt.Errorf("%s holds the result of dispatch %q", s.path(id), r.GetDispatchId())
	}
	return r, true, nil
}

// remove forgets a result; a result that is not spooled is no error.
func (s spool) remove(id string) error {
	if !ulidPattern.MatchString(id) {
		return nil
	}
	if err := os.Remove(s.path(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
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
		id, ok := strings.CutSuffix(e.Name(), ".json")
		if ok && e.Type().IsRegular() && ulidPattern.MatchString(id) {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids, nil
}

// all reads every spooled result. A file that cannot be read is reported in bad and
// left in place, for a person to look at.
func (s spool) all() (results []*nodev1.DispatchResult, bad []error, err error) {
	ids, err := s.ids()
	if err != nil {
		return nil, nil, err
	}
	for _, id := range ids {
		r, ok, err := s.get(id)
		switch {
		case err != nil:
			bad = append(bad, err)
		case ok:
			results = append(results, r)
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
