// Package masterkey completes master key rotations while palyrad runs, in the manner of
// Kubernetes' KMS v2: the data stays as it is; only the keys that wrap it are re-wrapped.
//
// Every replica reports itself in the replicas table at start and every few seconds,
// with the IDs of the key-encryption keys its master keys give it, its primary first.
// After `palyrad master-key rotate` has put a new primary first in master.key and every
// replica has restarted with it, Service.Rewrap re-seals every wrapped key under that
// primary, batch by batch, each batch its own transaction, and is refused (changing
// nothing) while a live replica does not have that primary: no replica is left unable to
// read what the re-wrap seals. Each owner of wrapped keys implements Rewrapper and is
// registered in Options.Rewrappers; the CA's sealed key (identity.AuthorityKeys) is the
// first.
//
// Keys are only ever named by their IDs, never logged, returned or stored here.
package masterkey

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/palyra/palyra/gen/dbsqlc"
	"github.com/palyra/palyra/server/internal/audit"
	"github.com/palyra/palyra/server/internal/errdefs"
	"github.com/palyra/palyra/server/internal/identity"
	"github.com/palyra/palyra/server/internal/notify"
	"github.com/palyra/palyra/server/internal/store"
)

// Channel is the notification channel on which the database announces that the CA's key
// was re-wrapped (payload: the authority id).
const Channel = "palyra_master_key"

const (
	// DefaultReportInterval is how often a replica reports itself when
	// Options.ReportInterval is zero.
	DefaultReportInterval = 10 * time.Second
	// BatchSize is how many wrapped keys one transaction of a re-wrap re-seals.
	BatchSize = 100
	// keepSeen is how long a stopped replica stays in the replicas table.
	keepSeen = 24 * time.Hour
	// stopTimeout bounds the report of a replica's stop.
	stopTimeout = 5 * time.Second
)

// A Rewrapper owns wrapped keys: rows holding a key sealed under a key-encryption key
// and the ID of that key-encryption key.
type Rewrapper interface {
	// Kind names the wrapped keys, e.g. "ca".
	Kind() string
	// KeyUsage counts the wrapped keys by the ID of the key-encryption key sealing them.
	KeyUsage(ctx context.Context, db store.Queryer) (map[string]int64, error)
	// RewrapBatch re-seals in tx up to limit wrapped keys sealed under another key than
	// keys.Primary() under the primary, and returns how many it re-sealed (fewer than
	// limit when none is left). It must be idempotent. A key sealed under a
	// key-encryption key that keys lacks fails it with FailedPrecondition naming that
	// key.
	RewrapBatch(ctx context.Context, tx *store.Tx, keys *identity.Keyring, limit int) (int, error)
}

// Options are the Service's dependencies.
type Options struct {
	// Store is the database.
	Store *store.Store
	// Keys are this replica's key-encryption keys.
	Keys *identity.Keyring
	// Rewrappers are the owners of wrapped keys, re-wrapped in this order.
	Rewrappers []Rewrapper
	// ReplicaID, Hostname and Version describe this replica in its reports.
	ReplicaID, Hostname, Version string
	// ReportInterval is how often Run reports this replica; zero means
	// DefaultReportInterval. A replica that has not stopped is live while its session
	// holds its audit lock or it reported within three intervals.
	ReportInterval time.Duration
	// Notify listens on Channel; Run then calls Refresh on every notification and
	// Reset. Nil: Refresh is called after every report only.
	Notify *notify.Listener
	// Refresh re-reads what depends on the wrapping of keys (identity.Authority.Refresh);
	// nil means nothing does.
	Refresh func(context.Context) error
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger receives what happens, never a key; nil discards it.
	Logger *slog.Logger
}

// Service reports this replica and re-wraps keys. It is safe for concurrent use.
type Service struct {
	opts Options
	log  *slog.Logger
	sub  *notify.Subscription // nil without Options.Notify
}

// New checks opts and returns the Service. It subscribes to Channel right away so that
// no notification is missed between New and Run.
func New(opts Options) (*Service, error) {
	if opts.Store == nil || opts.Keys == nil {
		return nil, errors.New("masterkey: a store and keys are required")
	}
	if opts.ReportInterval == 0 {
		opts.ReportInterval = DefaultReportInterval
	}
	if opts.ReportInterval < 0 {
		return nil, errors.New("masterkey: the report interval must be positive")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Refresh == nil {
		opts.Refresh = func(context.Context) error { return nil }
	}
	s := &Service{opts: opts, log: opts.Logger}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if opts.Notify != nil {
		sub, err := opts.Notify.Subscribe(Channel)
		if err != nil {
			return nil, fmt.Errorf("masterkey: %w", err)
		}
		s.sub = sub
	}
	return s, nil
}

// Report records this replica and its keys now.
func (s *Service) Report(ctx context.Context) error {
	now := s.opts.Now()
	err := s.opts.Store.Q().UpsertReplica(ctx, dbsqlc.UpsertReplicaParams{
		ID: s.opts.ReplicaID, Hostname: s.opts.Hostname, Version: s.opts.Version, KekIds: s.opts.Keys.IDs(), Now: now,
	})
	if err != nil {
		return fmt.Errorf("masterkey: report this replica: %w", err)
	}
	if _, err := s.opts.Store.Q().DeleteReplicasSeenBefore(ctx, now.Add(-keepSeen)); err != nil {
		return fmt.Errorf("masterkey: forget old replicas: %w", err)
	}
	return nil
}

// Run reports this replica every interval and refreshes what depends on the wrapping
// of keys (Options.Refresh) after each report and on each notification, until ctx
// ends; then it records that the replica stopped.
func (s *Service) Run(ctx context.Context) {
	var events <-chan notify.Event
	if s.sub != nil {
		defer s.sub.Close()
		events = s.sub.Events()
	}
	t := time.NewTicker(s.opts.ReportInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			s.RecordStop(ctx)
			return
		case <-t.C:
			if err := s.Report(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("replica report failed", "err", err)
			}
		case <-events:
		}
		if err := s.opts.Refresh(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("re-reading the wrapping of keys failed", "err", err)
		}
	}
}

// RecordStop records that this replica stopped, so that it no longer counts as live. Run
// calls it when it ends; the daemon calls it when its start fails after Report.
func (s *Service) RecordStop(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stopTimeout)
	defer cancel()
	if err := s.opts.Store.Q().StopReplica(ctx, dbsqlc.StopReplicaParams{ID: s.opts.ReplicaID, Now: s.opts.Now()}); err != nil {
		s.log.Warn("the replica's stop was not recorded: it counts as live for a few more seconds", "err", err)
	}
}

// Replica is a replica as it reported itself.
type Replica struct {
	ID, Hostname, Version string
	// KEKIDs are its key-encryption keys, its primary first.
	KEKIDs              []string
	StartedAt, LastSeen time.Time
	StoppedAt           *time.Time
	Live                bool
}

// Rewrap is one re-wrap, as master_key_rewraps records it.
type Rewrap struct {
	ID, KEKID, StartedBy, ReplicaID string
	StartedAt                       time.Time
	FinishedAt                      *time.Time // nil when it did not finish
	Rewrapped                       int64
}

// Usage is how many wrapped keys of a kind one key-encryption key seals.
type Usage struct {
	Kind, KEKID string
	Count       int64
}

// Status is where a master key rotation stands.
type Status struct {
	// KEKIDs are this replica's keys, its primary first.
	KEKIDs []string
	// Usage counts the wrapped keys by kind and key, sorted.
	Usage []Usage
	// Replicas are those running or seen within a day.
	Replicas []Replica
	// LastRewrap is nil when there was none.
	LastRewrap *Rewrap
}

// Status reports the keys in use, the replicas and the last re-wrap.
func (s *Service) Status(ctx context.Context) (*Status, error) {
	out := &Status{KEKIDs: s.opts.Keys.IDs()}
	for _, r := range s.opts.Rewrappers {
		use, err := r.KeyUsage(ctx, s.opts.Store)
		if err != nil {
			return nil, err
		}
		for kek, n := range use {
			out.Usage = append(out.Usage, Usage{Kind: r.Kind(), KEKID: kek, Count: n})
		}
	}
	slices.SortFunc(out.Usage, func(a, b Usage) int {
		return strings.Compare(a.Kind+"\x00"+a.KEKID, b.Kind+"\x00"+b.KEKID)
	})
	var err error
	if out.Replicas, err = s.replicas(ctx, s.opts.Store); err != nil {
		return nil, err
	}
	last, err := s.opts.Store.Q().GetLastMasterKeyRewrap(ctx)
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return nil, fmt.Errorf("masterkey: read the last re-wrap: %w", err)
	default:
		r := rewrapOf(last)
		out.LastRewrap = &r
	}
	return out, nil
}

// replicas lists the replicas running or seen within keepSeen.
func (s *Service) replicas(ctx context.Context, db store.Queryer) ([]Replica, error) {
	now := s.opts.Now()
	rows, err := db.Q().ListReplicas(ctx, dbsqlc.ListReplicasParams{
		LiveAfter: now.Add(-3 * s.opts.ReportInterval), SeenAfter: now.Add(-keepSeen),
	})
	if err != nil {
		return nil, fmt.Errorf("masterkey: list the replicas: %w", err)
	}
	out := make([]Replica, len(rows))
	for i, r := range rows {
		out[i] = Replica{ID: r.ID, Hostname: r.Hostname, Version: r.Version, KEKIDs: r.KekIds,
			StartedAt: r.StartedAt, LastSeen: r.LastSeenAt, StoppedAt: r.StoppedAt, Live: r.Live}
	}
	return out, nil
}

// Rewrap re-wraps every wrapped key to this replica's primary key on behalf of
// principal and returns the finished re-wrap and its counts by kind. It is refused
// with FailedPrecondition, before anything changes, while a live replica does not have
// the primary as its own primary; every batch checks again, holding off replicas that
// start meanwhile until it commits.
func (s *Service) Rewrap(ctx context.Context, principal string) (*Rewrap, []Usage, error) {
	primary := s.opts.Keys.Primary().ID()
	audit.SetTarget(ctx, "master_key:"+primary) // before the first write, which carries the call's outbox row
	rw := Rewrap{ID: ulid.Make().String(), KEKID: primary, StartedBy: principal, ReplicaID: s.opts.ReplicaID, StartedAt: s.opts.Now()}
	err := s.opts.Store.InTx(ctx, func(tx *store.Tx) error {
		if err := s.checkReplicas(ctx, tx, primary); err != nil {
			return err
		}
		return tx.Q().InsertMasterKeyRewrap(ctx, dbsqlc.InsertMasterKeyRewrapParams{
			ID: rw.ID, KekID: primary, StartedBy: principal, ReplicaID: rw.ReplicaID, StartedAt: rw.StartedAt,
		})
	})
	if err != nil {
		return nil, nil, err
	}
	s.log.Info("master key re-wrap started", "rewrap_id", rw.ID, "kek_id", primary, "started_by", principal)
	counts := make([]Usage, len(s.opts.Rewrappers))
	for i, r := range s.opts.Rewrappers {
		counts[i] = Usage{Kind: r.Kind(), KEKID: primary}
		for {
			var n int
			err := s.opts.Store.InTx(ctx, func(tx *store.Tx) error {
				if err := s.checkReplicas(ctx, tx, primary); err != nil {
					return err
				}
				var err error
				n, err = r.RewrapBatch(ctx, tx, s.opts.Keys, BatchSize)
				return err
			})
			if err != nil {
				s.log.Warn("master key re-wrap stopped: repeat it once the cause is fixed", "rewrap_id", rw.ID,
					"kind", r.Kind(), "rewrapped", rw.Rewrapped, "err", err)
				return nil, nil, err
			}
			counts[i].Count += int64(n)
			rw.Rewrapped += int64(n)
			if n < BatchSize {
				break
			}
		}
	}
	finished := s.opts.Now()
	rw.FinishedAt = &finished
	if err := s.opts.Store.Q().FinishMasterKeyRewrap(ctx, dbsqlc.FinishMasterKeyRewrapParams{
		ID: rw.ID, FinishedAt: finished, Rewrapped: rw.Rewrapped,
	}); err != nil {
		return nil, nil, fmt.Errorf("masterkey: record the end of the re-wrap: %w", err)
	}
	s.log.Info("master key re-wrap finished", "rewrap_id", rw.ID, "kek_id", primary, "rewrapped", rw.Rewrapped)
	return &rw, counts, nil
}

// checkReplicas holds off replica reports until tx ends and refuses while a live
// replica's primary key is not primary.
func (s *Service) checkReplicas(ctx context.Context, tx *store.Tx, primary string) error {
	if err := tx.Q().LockReplicasForRewrap(ctx); err != nil {
		return fmt.Errorf("masterkey: lock the replicas: %w", err)
	}
	all, err := s.replicas(ctx, tx)
	if err != nil {
		return err
	}
	var behind []string
	for _, r := range all {
		if r.Live && r.KEKIDs[0] != primary {
			behind = append(behind, fmt.Sprintf("%s on %s (primary %s)", r.ID, r.Hostname, r.KEKIDs[0]))
		}
	}
	if len(behind) > 0 {
		return errdefs.New(errdefs.FailedPrecondition,
			"live replicas do not have master key %s as their primary: %s; give each the new master.key (or PALYRA_MASTER_KEY) and restart it, then re-wrap again",
			primary, strings.Join(behind, ", "))
	}
	return nil
}

func rewrapOf(r dbsqlc.MasterKeyRewrap) Rewrap {
	return Rewrap{ID: r.ID, KEKID: r.KekID, StartedBy: r.StartedBy, ReplicaID: r.ReplicaID,
		StartedAt: r.StartedAt, FinishedAt: r.FinishedAt, Rewrapped: r.Rewrapped}
}

// LiveReplicaIDs returns the ids of the live replicas (Replica.Live): the runs of
// agents of any other replica are failed by its reapers (package agents).
func (s *Service) LiveReplicaIDs(ctx context.Context) ([]string, error) {
	rs, err := s.replicas(ctx, s.opts.Store)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, r := range rs {
		if r.Live {
			ids = append(ids, r.ID)
		}
	}
	return ids, nil
}
