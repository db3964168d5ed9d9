package liveconfig

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/palyra/palyra/gen/dbsqlc"
	"github.com/palyra/palyra/server/internal/audit"
	"github.com/palyra/palyra/server/internal/config"
	"github.com/palyra/palyra/server/internal/errdefs"
	"github.com/palyra/palyra/server/internal/pagetoken"
	"github.com/palyra/palyra/server/internal/secretref"
	"github.com/palyra/palyra/server/internal/store"
	"github.com/palyra/palyra/server/internal/vault"
)

// ReasonStaleRevision is the ErrorInfo reason of a change refused for a stale expected
// revision; MetadataCurrentRevision is the metadata key of the current revision.
const (
	ReasonStaleRevision     = "STALE_REVISION"
	MetadataCurrentRevision = "current_revision"
)

// Change sets and unsets stored values.
type Change struct {
	// Set stores values, in order; a key appears at most once in Set and Unset together.
	Set []KeyValue
	// Unset removes stored values.
	Unset []string
}

// KeyValue is one value to store.
type KeyValue struct {
	Key   string
	Value config.Value
}

// Diff is what a change does to one key.
type Diff struct {
	Key string
	// Op is OpSet or OpUnset.
	Op string
	// Old and New are the stored values before and after; nil when there is none.
	Old, New *config.Value
	// OldEffective and NewEffective are the effective values before and after.
	OldEffective, NewEffective config.Value
	// Secret settings' values are redacted where they are shown.
	Secret bool
}

// The operations of a Diff.
const (
	OpSet   = "set"
	OpUnset = "unset"
)

// Revision is one revision of the stored values.
type Revision struct {
	Revision    int64
	CreatedAt   time.Time
	Actor       string
	Reason      string
	RollbackOf  int64 // 0: no rollback
	ChangeCount int
}

// Validate checks change against the current stored values without making it, as
// Update would: with expected (when not nil) the revision it expects. It returns what
// would change and the revision it would create (the current one when nothing changes).
func (s *Service) Validate(ctx context.Context, change Change, expected *int64) ([]Diff, int64, error) {
	var (
		diffs []Diff
		next  int64
	)
	err := s.opts.Store.InTx(ctx, func(tx *store.Tx) error {
		head, stored, err := s.begin(ctx, tx, expected, false)
		if err != nil {
			return err
		}
		if diffs, err = s.plan(stored, change, refChecker(ctx, tx)); err != nil {
			return err
		}
		next = head
		if len(diffs) > 0 {
			next++
		}
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	return diffs, next, nil
}

// Update makes change as one revision by actor for reason, if expected is the current
// revision (nil: whatever it is). A change that changes nothing makes no revision and
// returns the current one. On success this replica's snapshot is at the new revision.
func (s *Service) Update(ctx context.Context, actor, reason string, change Change, expected *int64) (Revision, []Diff, error) {
	return s.commit(ctx, actor, reason, expected, 0, func(ctx context.Context, tx *store.Tx, stored map[string]storedValue) ([]Diff, error) {
		return s.plan(stored, change, refChecker(ctx, tx))
	})
}

// Rollback stores the values as they were right after revision to, as a new revision.
func (s *Service) Rollback(ctx context.Context, actor, reason string, to int64, expected *int64) (Revision, []Diff, error) {
	return s.commit(ctx, actor, reason, expected, to, func(ctx context.Context, tx *store.Tx, stored map[string]storedValue) ([]Diff, error) {
		if _, err := tx.Q().GetConfigRevision(ctx, to); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return nil, errdefs.New(errdefs.NotFound, "there is no configuration revision %d", to)
			}
			return nil, err
		}
		changes, err := tx.Q().ListConfigChanges(ctx, dbsqlc.ListConfigChangesParams{FromRevision: 1, ToRevision: to})
		if err != nil {
			return nil, err
		}
		target := map[string]config.Value{}
		for _, c := range changes {
			if c.Op == OpUnset {
				delete(target, c.Key)
				continue
			}
			v, err := decodeValue(c.NewValue)
			if err != nil {
				return nil, fmt.Errorf("revision %d, key %s: %w", c.Revision, c.Key, err)
			}
			target[c.Key] = v
		}
		var change Change
		for _, key := range sortedKeys(target) {
			if err := checkStored(s.opts.Base, key, target[key]); err != nil {
				return nil, errdefs.New(errdefs.FailedPrecondition, "revision %d cannot be restored: the value of %s it had no longer applies: %v", to, key, err)
			}
			change.Set = append(change.Set, KeyValue{Key: key, Value: target[key]})
		}
		for _, key := range sortedKeys(stored) {
			if _, ok := target[key]; !ok {
				change.Unset = append(change.Unset, key)
			}
		}
		return s.plan(stored, change, refChecker(ctx, tx))
	})
}

// commit runs plan in a transaction under the configuration lock and stores what it
// returns as a new revision.
func (s *Service) commit(ctx context.Context, actor, reason string, expected *int64, rollbackOf int64,
	plan func(context.Context, *store.Tx, map[string]storedValue) ([]Diff, error)) (Revision, []Diff, error) {
	if actor == "" {
		return Revision{}, nil, errors.New("liveconfig: a change needs an actor")
	}
	var (
		rev   Revision
		diffs []Diff
	)
	err := s.opts.Store.InTx(ctx, func(tx *store.Tx) error {
		head, stored, err := s.begin(ctx, tx, expected, true)
		if err != nil {
			return err
		}
		if diffs, err = plan(ctx, tx, stored); err != nil {
			return err
		}
		if len(diffs) == 0 {
			rev, _, err = s.revision(ctx, tx, head)
			return err
		}
		rev = Revision{Revision: head + 1, Actor: actor, Reason: reason, RollbackOf: rollbackOf, ChangeCount: len(diffs)}
		audit.SetTarget(ctx, auditTarget(rev.Revision, rollbackOf, diffs))
		return s.write(ctx, tx, rev, diffs)
	})
	if err != nil {
		return Revision{}, nil, err
	}
	if len(diffs) > 0 {
		// This replica at once; the others on the notification.
		if _, err := s.Reload(ctx); err != nil {
			s.log.Error("configuration not reloaded after a change; the notification will", "err", err)
		}
	}
	return rev, diffs, nil
}

// begin takes the configuration lock when lock is set, checks expected against the
// newest revision and reads the stored values.
func (s *Service) begin(ctx context.Context, tx *store.Tx, expected *int64, lock bool) (int64, map[string]storedValue, error) {
	q := tx.Q()
	if lock {
		if err := q.LockConfig(ctx); err != nil {
			return 0, nil, err
		}
	}
	head, err := q.ConfigHead(ctx)
	if err != nil {
		return 0, nil, err
	}
	if expected != nil && *expected != head {
		return 0, nil, &errdefs.Error{
			Kind: errdefs.Aborted,
			Message: fmt.Sprintf("the configuration is at revision %d, not %d as expected: someone changed it meanwhile; "+
				"read it again and retry with expected revision %d", head, *expected, head),
			Reason:   ReasonStaleRevision,
			Metadata: map[string]string{MetadataCurrentRevision: strconv.FormatInt(head, 10)},
		}
	}
	stored, err := s.storedValues(ctx, tx)
	if err != nil {
		return 0, nil, err
	}
	return head, stored, nil
}

// refChecker checks secret references in tx, which holds the configuration's lock when
// it changes the configuration: a secret cannot be deleted (vault.Referrers) between
// the check and the commit.
func refChecker(ctx context.Context, tx *store.Tx) func(secretref.Ref) error {
	return func(ref secretref.Ref) error { return vault.CheckRef(ctx, tx, ref) }
}

// plan checks every key and value of change, and with checkRef the secret reference of
// every value it sets that takes one, and returns what it changes, by key; or one
// error listing every problem, each naming its key: FailedPrecondition when every
// problem is a bootstrap setting, else Invalid.
func (s *Service) plan(stored map[string]storedValue, change Change, checkRef func(secretref.Ref) error) ([]Diff, error) {
	before := s.build(0, stored).Config
	after := before.Clone()
	var (
		bad       []errdefs.Violation
		bootstrap = true
		seen      = map[string]bool{}
		diffs     []Diff
	)
	problem := func(key string, boot bool, format string, args ...any) {
		bad = append(bad, errdefs.Violation{Field: key, Description: fmt.Sprintf(format, args...)})
		bootstrap = bootstrap && boot
	}
	check := func(key string) (config.Setting, bool) {
		st, ok := config.Lookup(key)
		switch {
		case !ok:
			if near := config.Suggest(key); near != "" {
				problem(key, false, "unknown setting; did you mean %q?", near)
			} else {
				problem(key, false, "unknown setting")
			}
		case !st.Runtime:
			problem(key, true, "a bootstrap setting, read-only through the API: change it with %s", st.Where())
		case seen[key]:
			problem(key, false, "named more than once in the change")
		default:
			seen[key] = true
			return st, true
		}
		return st, false
	}
	for _, kv := range change.Set {
		st, ok := check(kv.Key)
		if !ok {
			continue
		}
		next := after.Clone()
		if err := next.Set(kv.Key, kv.Value); err != nil {
			problem(kv.Key, false, "%v (a %s)", err, st.Kind)
			continue
		}
		after = next
		canonical := after.Value(kv.Key)
		old, had := stored[kv.Key]
		if had && old.value.Equal(canonical) {
			continue
		}
		if st.SecretRef && canonical.Text != "" {
			ref, err := secretref.Parse(canonical.Text) // parsed by the setting above
			if err == nil {
				err = checkRef(ref)
			}
			if err != nil {
				if errdefs.KindOf(err) != errdefs.Invalid {
					return nil, err
				}
				problem(kv.Key, false, "refers to %s: %v", canonical.Text, err)
				continue
			}
		}
		d := Diff{Key: kv.Key, Op: OpSet, New: &canonical, Secret: st.Secret}
		if had {
			d.Old = &old.value
		}
		diffs = append(diffs, d)
	}
	for _, key := range change.Unset {
		st, ok := check(key)
		if !ok {
			continue
		}
		old, had := stored[key]
		if !had {
			continue
		}
		diffs = append(diffs, Diff{Key: key, Op: OpUnset, Old: &old.value, Secret: st.Secret})
	}
	if len(bad) > 0 {
		e := errdefs.InvalidFields(bad...)
		if len(bad) > 1 {
			descs := make([]string, len(bad))
			for i, v := range bad {
				descs[i] = v.Field + ": " + v.Description
			}
			e.Field, e.Message = "", strings.Join(descs, "; ")
		}
		if bootstrap {
			e.Kind = errdefs.FailedPrecondition
		}
		return nil, e
	}
	// The effective values after: unset keys fall back to the bootstrap value.
	remaining := map[string]storedValue{}
	for k, v := range stored {
		remaining[k] = v
	}
	for _, d := range diffs {
		if d.Op == OpUnset {
			delete(remaining, d.Key)
		} else {
			remaining[d.Key] = storedValue{value: *d.New}
		}
	}
	final := s.build(0, remaining).Config
	for i := range diffs {
		diffs[i].OldEffective = before.Value(diffs[i].Key)
		diffs[i].NewEffective = final.Value(diffs[i].Key)
	}
	slices.SortFunc(diffs, func(a, b Diff) int { return strings.Compare(a.Key, b.Key) })
	return diffs, nil
}

// write stores rev and its diffs.
func (s *Service) write(ctx context.Context, tx *store.Tx, rev Revision, diffs []Diff) error {
	q := tx.Q()
	params := dbsqlc.InsertConfigRevisionParams{Revision: rev.Revision, Actor: rev.Actor, Reason: rev.Reason}
	if rev.RollbackOf != 0 {
		params.RollbackOf = pgtype.Int8{Int64: rev.RollbackOf, Valid: true}
	}
	if s.opts.Now != nil {
		t := s.opts.Now()
		params.Now = &t
	}
	if err := q.InsertConfigRevision(ctx, params); err != nil {
		return err
	}
	for _, d := range diffs {
		cp := dbsqlc.InsertConfigChangeParams{Revision: rev.Revision, Key: d.Key, Op: d.Op}
		if d.Old != nil {
			cp.OldValue = encodeValue(*d.Old)
		}
		if d.New != nil {
			cp.NewValue = encodeValue(*d.New)
		}
		if err := q.InsertConfigChange(ctx, cp); err != nil {
			return err
		}
		var err error
		if d.Op == OpSet {
			err = q.UpsertConfigValue(ctx, dbsqlc.UpsertConfigValueParams{Key: d.Key, Value: encodeValue(*d.New), Revision: rev.Revision})
		} else {
			err = q.DeleteConfigValue(ctx, d.Key)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// auditTarget names a revision and every key's effective value before and after, e.g.
// "config:revision 3: log.level info -> debug; nodes.heartbeat_interval 15s -> 20s".
func auditTarget(rev, rollbackOf int64, diffs []Diff) string {
	var b strings.Builder
	fmt.Fprintf(&b, "config:revision %d", rev)
	if rollbackOf != 0 {
		fmt.Fprintf(&b, " (rollback to %d)", rollbackOf)
	}
	b.WriteString(":")
	for i, d := range diffs {
		if i > 0 {
			b.WriteString(";")
		}
		old, new := show(d.OldEffective, d.Secret), show(d.NewEffective, d.Secret)
		fmt.Fprintf(&b, " %s %s -> %s", d.Key, old, new)
		if d.Op == OpUnset {
			b.WriteString(" (unset)")
		}
	}
	return b.String()
}

// show renders a value for the audit log: quoted, lists in brackets, secrets redacted.
func show(v config.Value, secret bool) string {
	if secret {
		return "(redacted)"
	}
	if v.List {
		return strconv.Quote("[" + strings.Join(v.Items, ",") + "]")
	}
	return strconv.Quote(v.Text)
}

// revision reads revision n and its changes; the zero Revision for n = 0.
func (s *Service) revision(ctx context.Context, q store.Queryer, n int64) (Revision, []dbsqlc.ConfigChange, error) {
	if n == 0 {
		return Revision{}, nil, nil
	}
	r, err := q.Q().GetConfigRevision(ctx, n)
	if err != nil {
		return Revision{}, nil, err
	}
	changes, err := q.Q().ListConfigChanges(ctx, dbsqlc.ListConfigChangesParams{FromRevision: n, ToRevision: n})
	if err != nil {
		return Revision{}, nil, err
	}
	return Revision{Revision: r.Revision, CreatedAt: r.CreatedAt, Actor: r.Actor, Reason: r.Reason,
		RollbackOf: r.RollbackOf.Int64, ChangeCount: len(changes)}, changes, nil
}

// History lists revisions newest first, limit at a time; pageToken continues a list.
func (s *Service) History(ctx context.Context, pageToken string, limit int) ([]Revision, string, error) {
	var before int64
	if pageToken != "" {
		_, id, err := pagetoken.Decode(pageToken)
		if err != nil {
			return nil, "", err
		}
		if before, err = strconv.ParseInt(id, 10, 64); err != nil || before <= 0 {
			return nil, "", pagetoken.ErrMalformed
		}
	}
	rows, err := s.opts.Store.Q().ListConfigRevisions(ctx, dbsqlc.ListConfigRevisionsParams{Before: before, PageLimit: int32(limit + 1)})
	if err != nil {
		return nil, "", fmt.Errorf("liveconfig: list revisions: %w", err)
	}
	rows, next := pagetoken.Page(rows, limit, func(r dbsqlc.ListConfigRevisionsRow) (time.Time, string) {
		return r.CreatedAt, strconv.FormatInt(r.Revision, 10)
	})
	out := make([]Revision, len(rows))
	for i, r := range rows {
		out[i] = Revision{Revision: r.Revision, CreatedAt: r.CreatedAt, Actor: r.Actor, Reason: r.Reason,
			RollbackOf: r.RollbackOf.Int64, ChangeCount: int(r.ChangeCount)}
	}
	return out, next, nil
}

// GetRevision returns revision n and what it changed (stored values; the effective
// ones are not recorded).
func (s *Service) GetRevision(ctx context.Context, n int64) (Revision, []Diff, error) {
	rev, changes, err := s.revision(ctx, s.opts.Store, n)
	if errors.Is(err, store.ErrNotFound) {
		return Revision{}, nil, errdefs.New(errdefs.NotFound, "there is no configuration revision %d", n)
	}
	if err != nil {
		return Revision{}, nil, fmt.Errorf("liveconfig: revision %d: %w", n, err)
	}
	diffs := make([]Diff, 0, len(changes))
	for _, c := range changes {
		d := Diff{Key: c.Key, Op: c.Op}
		if st, ok := config.Lookup(c.Key); ok {
			d.Secret = st.Secret
		}
		for _, p := range []struct {
			raw []byte
			out **config.Value
		}{{c.OldValue, &d.Old}, {c.NewValue, &d.New}} {
			if p.raw == nil {
				continue
			}
			v, err := decodeValue(p.raw)
			if err != nil {
				return Revision{}, nil, fmt.Errorf("liveconfig: revision %d, key %s: %w", n, c.Key, err)
			}
			*p.out = &v
		}
		diffs = append(diffs, d)
	}
	return rev, diffs, nil
}

// sortedKeys returns the keys of m, sorted.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
