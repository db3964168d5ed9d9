// Package liveconfig is palyrad's live configuration: the runtime settings of the
// settings table (config.Setting.Runtime) stored in PostgreSQL, shared by every replica
// and changed without a restart, and ConfigService, which reads and changes them.
//
// # Values and revisions
//
// The effective configuration is the bootstrap one (flags > environment > file >
// defaults, package config) with the values stored in config_values applied over it;
// a runtime setting without a stored value keeps its bootstrap value. Values are parsed
// and checked by the setting's own function in package config, the one flags,
// variables and the file go through, and stored in their canonical form ("20s", not
// "20000ms"). Every change of the stored values is a revision (sqlc/migrations/
// 00010_config.sql): numbered 1, 2, 3, ... under an advisory lock, with who made it,
// why, and every key's stored value before and after. A change names the revision it
// expects; when another revision came first it is refused with Aborted and the current
// revision, and nothing changes. A change commits with its audit outbox row, whose
// target lists every key's effective value before and after (secrets redacted).
// Rollback to revision n replays revisions 1..n and stores the result as a new revision.
//
// # Every replica
//
// A trigger NOTIFYs Channel when a revision commits. Run reloads the stored values on
// every notification and on every Reset of the listener (a reconnection, an overflow),
// so that a missed notification cannot leave a replica stale, and swaps an immutable
// Snapshot atomically. Consumers read the snapshot when they use a value: the heartbeat
// interval at a node's welcome, the pairing defaults when a code or request is made,
// the token rate limit when a token is created, the models when they are listed, and
// log.level through the configuration's slog.LevelVar.
//
// # Secret references
//
// Settings that the table declares so (config.Setting.SecretRef: the providers' API
// keys) take a reference to a secret of the vault, secret:NAME or secret:NAME@VERSION,
// never the secret: it is stored, shown, audited and exported as written. A change that
// sets one checks, in its transaction and under the configuration lock, that the secret
// exists and is not deleted and that the version it pins (or the latest) is not
// destroyed; else the change is refused with Invalid naming the key and the secret. A
// rollback is checked the same way. Referrers lets the vault refuse to delete a secret
// (or destroy a version) that a setting refers to; it takes the same lock, so that a
// change adding a reference and the delete of its secret cannot both succeed. The
// server resolves a reference when it uses it (vault.Vault.Resolve).
package liveconfig

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/palyra/palyra/server/internal/config"
	"github.com/palyra/palyra/server/internal/notify"
	"github.com/palyra/palyra/server/internal/store"
)

// Channel is the notification channel of configuration revisions: the payload is the
// revision number.
const Channel = "palyra_config"

// Snapshot is the effective configuration at one revision. It is never modified.
type Snapshot struct {
	// Revision is the newest revision when the snapshot was read; 0 when there is none.
	Revision int64
	// Config is the effective configuration: the bootstrap one with the stored values.
	Config *config.Config
	// stored are the values in the database, by key, with the revision that set them;
	// only those of runtime settings that the settings accept.
	stored map[string]storedValue
}

// storedValue is one row of config_values.
type storedValue struct {
	value    config.Value
	revision int64
}

// Options are the dependencies of the Service.
type Options struct {
	// Store holds the stored values and the revisions.
	Store *store.Store
	// Notify must listen on Channel.
	Notify *notify.Listener
	// Base is the bootstrap configuration; it is not modified.
	Base *config.Config
	// Now stamps the revisions; nil uses the database's clock.
	Now func() time.Time
	// Logger logs reloads and stored values that no longer apply; nil discards.
	Logger *slog.Logger
}

// Service keeps the effective configuration of this replica current and changes the
// stored values. It is safe for concurrent use.
type Service struct {
	opts Options
	log  *slog.Logger
	sub  *notify.Subscription
	cur  atomic.Pointer[Snapshot]

	reloadMu sync.Mutex // serialises reloads, so that a later one never loses to an earlier
}

// New subscribes to Channel and loads the stored values; the listener must be ready, so
// that nothing committed after the load goes unnoticed.
func New(ctx context.Context, opts Options) (*Service, error) {
	if opts.Store == nil || opts.Notify == nil || opts.Base == nil {
		return nil, errors.New("liveconfig: new: Store, Notify and Base are required")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	sub, err := opts.Notify.Subscribe(Channel)
	if err != nil {
		return nil, fmt.Errorf("liveconfig: %w", err)
	}
	s := &Service{opts: opts, log: log, sub: sub}
	if _, err := s.Reload(ctx); err != nil {
		sub.Close()
		return nil, err
	}
	return s, nil
}

// Current returns the current snapshot.
func (s *Service) Current() *Snapshot { return s.cur.Load() }

// Config returns the current effective configuration; callers must not modify it.
func (s *Service) Config() *config.Config { return s.cur.Load().Config }

// Run reloads the stored values on every notification of Channel and every Reset, until
// ctx is done. Notifications that arrive while a reload runs are folded into one more.
func (s *Service) Run(ctx context.Context) {
	defer s.sub.Close()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.sub.Events():
		}
		// Drain what queued up: one reload covers it all.
		for drained := false; !drained; {
			select {
			case <-s.sub.Events():
			default:
				drained = true
			}
		}
		if _, err := s.Reload(ctx); err != nil && ctx.Err() == nil {
			// The next notification or Reset (the listener's reconnection) retries.
			s.log.Error("configuration not reloaded", "err", err)
		}
	}
}

// Reload reads the stored values and swaps the snapshot, unless the one in place is of
// a newer revision. It returns the snapshot in place afterwards.
func (s *Service) Reload(ctx context.Context) (*Snapshot, error) {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	snap, err := s.read(ctx)
	if err != nil {
		return nil, err
	}
	old := s.cur.Load()
	if old != nil && old.Revision > snap.Revision {
		return old, nil
	}
	s.cur.Store(snap)
	if v := s.opts.Base.Log.LevelVar; v != nil {
		v.Set(snap.Config.Log.Level)
	}
	if old != nil && old.Revision != snap.Revision {
		s.log.Info("configuration reloaded", "revision", snap.Revision)
	}
	return snap, nil
}

// read builds a snapshot from the database.
func (s *Service) read(ctx context.Context) (*Snapshot, error) {
	var snap *Snapshot
	err := s.opts.Store.InTx(ctx, func(tx *store.Tx) error {
		head, err := tx.Q().ConfigHead(ctx)
		if err != nil {
			return err
		}
		stored, err := s.storedValues(ctx, tx)
		if err != nil {
			return err
		}
		snap = s.build(head, stored)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("liveconfig: read the stored values: %w", err)
	}
	return snap, nil
}

// storedValues reads config_values; rows that no runtime setting accepts are logged and
// left out.
func (s *Service) storedValues(ctx context.Context, tx *store.Tx) (map[string]storedValue, error) {
	rows, err := tx.Q().ListConfigValues(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[string]storedValue, len(rows))
	for _, r := range rows {
		v, err := decodeValue(r.Value)
		if err == nil {
			err = checkStored(s.opts.Base, r.Key, v)
		}
		if err != nil {
			s.log.Warn("stored configuration value ignored", "key", r.Key, "revision", r.Revision, "err", err)
			continue
		}
		out[r.Key] = storedValue{value: v, revision: r.Revision}
	}
	return out, nil
}

// checkStored reports why a stored value cannot apply: the key is no runtime setting
// (any more), or the value no longer parses.
func checkStored(base *config.Config, key string, v config.Value) error {
	if st, ok := config.Lookup(key); !ok || !st.Runtime {
		return fmt.Errorf("%s is not a runtime setting", key)
	}
	return base.Clone().Set(key, v)
}

// build applies stored over the bootstrap configuration.
func (s *Service) build(head int64, stored map[string]storedValue) *Snapshot {
	c := s.opts.Base.Clone()
	for key, sv := range stored {
		_ = c.Set(key, sv.value) // checked by storedValues
		c.SetSource(key, config.SourceDatabase)
	}
	return &Snapshot{Revision: head, Config: c, stored: stored}
}

// Referrers returns the settings in effect on this replica (stored values over the
// bootstrap configuration) whose secret reference names the secret name, by key. It
// takes the configuration's lock for the rest of tx, so that no change adds a
// reference until tx ends; it implements vault.Referrers.
func (s *Service) Referrers(ctx context.Context, tx *store.Tx, name string) ([]config.SecretRef, error) {
	if err := tx.Q().LockConfig(ctx); err != nil {
		return nil, fmt.Errorf("liveconfig: referrers: %w", err)
	}
	stored, err := s.storedValues(ctx, tx)
	if err != nil {
		return nil, fmt.Errorf("liveconfig: referrers: %w", err)
	}
	var out []config.SecretRef
	for _, r := range s.build(0, stored).Config.SecretRefs() {
		if r.Ref.Name == name {
			out = append(out, r)
		}
	}
	return out, nil
}

// StoredRevision returns the revision that stored the value of key, 0 when none is
// stored.
func (sn *Snapshot) StoredRevision(key string) int64 { return sn.stored[key].revision }

// encodeValue is the JSON of a stored value: a string, or an array of strings.
func encodeValue(v config.Value) []byte {
	var b []byte
	if v.List {
		items := v.Items
		if items == nil {
			items = []string{}
		}
		b, _ = json.Marshal(items)
	} else {
		b, _ = json.Marshal(v.Text)
	}
	return b
}

// decodeValue reads the JSON of a stored value.
func decodeValue(b []byte) (config.Value, error) {
	var text string
	if err := json.Unmarshal(b, &text); err == nil {
		return config.Value{Text: text}, nil
	}
	var items []string
	if err := json.Unmarshal(b, &items); err != nil {
		return config.Value{}, fmt.Errorf("stored value is neither a string nor a list of strings")
	}
	return config.Value{List: true, Items: items}, nil
}
