// Package vault is palyrad's secrets vault: named secrets with numbered versions,
// stored in PostgreSQL (sqlc/migrations/00011_vault.sql) under envelope encryption,
// shared by every replica, and served as SecretService.
//
// # Envelope encryption
//
// Every version gets a random 256-bit data key of its own (package envelope). The value
// is sealed under it with AES-256-GCM; the data key is wrapped (AES-256-GCM again) under
// a key derived from the primary key-encryption key of the replica's identity.Keyring
// (the derivation "secret-data-key" of the master key), and the row stores the id of
// that key-encryption key. The associated data of both seals binds the secret's id,
// its name and the version number (rowID.aad), so that a ciphertext or a wrapped key
// copied to another row does not decrypt there: Reveal reports DataLoss, never another
// secret's value. Opening uses the key-encryption key the row names; a replica whose
// ring lacks it refuses with FailedPrecondition naming the key. A master key rotation re-wraps data keys, never the
// data (DataKeys); a trigger keeps a version's sealed value unchanged and a destroyed
// version destroyed. No value and no key reaches the database in clear, nor a log, an
// audit event, a metric or an error; data keys and decrypted values are cleared after
// use where the code holds the last copy.
//
// # Versions, deletion, destruction
//
// Put writes version 1, 2, ... (with an optional check-and-set on the latest version).
// Delete is soft: the secret and its versions stay, it is neither listed (by default)
// nor revealable, and Restore brings it back; its name stays taken meanwhile. Destroy
// erases one version's ciphertext and wrapped key for good, keeping its metadata. Every
// change locks the secret's row first, so that concurrent writers on any replica are
// serialised.
//
// # Reading values
//
// Reveal needs a reason, which the call's audit event records with the version; it is
// rate limited per caller on each replica (NewRevealLimiter), and stamps the secret's
// last read time and reader.
//
// # Resolving references
//
// Resolve serves the server's own use of a secret reference (an upstream provider's API
// key) at each use. Each replica keeps the sealed version a reference resolved to, never
// its value nor its data key, so that a repeated resolution reads nothing and only opens
// the seal. A trigger announces every change of a secret on Channel and every replica
// forgets its references; the replica that changes it forgets them before the change
// returns (resolvecache.go).
package vault

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/oklog/ulid/v2"

	"github.com/palyra/palyra/gen/dbsqlc"
	"github.com/palyra/palyra/server/internal/audit"
	"github.com/palyra/palyra/server/internal/errdefs"
	"github.com/palyra/palyra/server/internal/identity"
	"github.com/palyra/palyra/server/internal/notify"
	"github.com/palyra/palyra/server/internal/pagetoken"
	"github.com/palyra/palyra/server/internal/ratelimit"
	"github.com/palyra/palyra/server/internal/secretref"
	"github.com/palyra/palyra/server/internal/store"
)

// The vault's limits.
const (
	// MaxValueBytes is the largest value of a version.
	MaxValueBytes = 64 << 10
	// maxReasonLen is the longest reason of a reveal, in characters.
	maxReasonLen = 256
	// maxDescriptionLen is the longest description, in bytes.
	maxDescriptionLen = 1024
	// defaultPageSize and maxPageSize bound List.
	defaultPageSize = 100
	maxPageSize     = 500
)

// NewRevealLimiter returns the default limit on reveals per caller: 20 at once, then
// 20 a minute.
func NewRevealLimiter() *ratelimit.Keyed {
	return ratelimit.NewKeyed(ratelimit.Options{Burst: 20, PerMinute: 20})
}

// Options are the vault's dependencies.
type Options struct {
	Store *store.Store
	// Keys seals new versions under its primary and opens versions under any of its keys.
	Keys *identity.Keyring
	// RevealLimit limits reveals per caller; nil uses NewRevealLimiter.
	RevealLimit *ratelimit.Keyed
	// Referrers finds the settings that refer to a secret, for Delete and Destroy; nil
	// means none ever does.
	Referrers Referrers
	// Notify delivers Channel, which it must listen on; Resolve serves repeated
	// resolutions from memory only while Run runs with it. Nil: every resolution reads
	// the database.
	Notify *notify.Listener
	// Now stamps every change; nil uses time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// Vault stores and reveals secrets. It is safe for concurrent use.
type Vault struct {
	store *store.Store
	keys  *identity.Keyring
	limit *ratelimit.Keyed
	refs  Referrers
	now   func() time.Time
	log   *slog.Logger
	wrap  wrappers
	// notify and sub deliver the invalidations of cache (resolvecache.go); nil without
	// Options.Notify.
	notify *notify.Listener
	sub    *notify.Subscription
	cache  *resolveCache
}

// New returns a vault on opts.Store.
func New(opts Options) (*Vault, error) {
	if opts.Store == nil || opts.Keys == nil {
		return nil, errors.New("vault: new: a store and a keyring are required")
	}
	v := &Vault{store: opts.Store, keys: opts.Keys, limit: opts.RevealLimit, refs: opts.Referrers, now: opts.Now, log: opts.Logger,
		notify: opts.Notify, cache: newResolveCache()}
	if v.notify != nil {
		sub, err := v.notify.Subscribe(Channel)
		if err != nil {
			return nil, fmt.Errorf("vault: new: %w", err)
		}
		v.sub = sub
	}
	if v.limit == nil {
		v.limit = NewRevealLimiter()
	}
	if v.now == nil {
		v.now = time.Now
	}
	if v.log == nil {
		v.log = slog.New(slog.DiscardHandler)
	}
	return v, nil
}

// Secret is a secret's metadata; it never holds a value.
type Secret struct {
	ID            string
	Name          string
	Description   string
	Labels        map[string]string
	LatestVersion int64
	CreatedAt     time.Time
	CreatedBy     string
	UpdatedAt     time.Time
	UpdatedBy     string
	// DeletedAt is when it was deleted, nil when it is not; DeletedBy by whom.
	DeletedAt *time.Time
	DeletedBy string
	// LastReadAt is when a value was last revealed, nil when never; LastReadBy by whom.
	LastReadAt *time.Time
	LastReadBy string
	// Versions, newest first: filled by Get, Destroy and Put only.
	Versions []Version
}

// Version is the metadata of one version.
type Version struct {
	Number    int64
	CreatedAt time.Time
	CreatedBy string
	// KEKID names the key-encryption key its data key is wrapped under; empty once
	// destroyed.
	KEKID string
	// DestroyedAt is when its value was destroyed, nil when it was not.
	DestroyedAt *time.Time
	DestroyedBy string
}

// PutRequest is a new version of a secret.
type PutRequest struct {
	Name string
	// Value is the version's value, 1 byte to MaxValueBytes. Put does not keep it.
	Value []byte
	// Description, when not nil, replaces the secret's description.
	Description *string
	// Labels, when not empty, replace the secret's labels.
	Labels map[string]string
	// ExpectedVersion, when not nil, must be the secret's latest version (0: the secret
	// must not exist), else Put is Aborted and writes nothing.
	ExpectedVersion *int64
	// By names the principal that puts it.
	By string
}

// StaleVersionError refuses a check-and-set whose expected version is not the latest.
type StaleVersionError struct {
	Name     string
	Expected int64
	// Current is the latest version; 0 when the secret does not exist.
	Current int64
}

// Error says what the current version is.
func (e *StaleVersionError) Error() string {
	if e.Current == 0 {
		return fmt.Sprintf("secret %q does not exist (its version is 0), not version %d: nothing was written", e.Name, e.Expected)
	}
	return fmt.Sprintf("secret %q is at version %d, not %d: nothing was written", e.Name, e.Current, e.Expected)
}

// ErrorKind implements errdefs.Kinded: Aborted.
func (e *StaleVersionError) ErrorKind() errdefs.Kind { return errdefs.Aborted }

// CheckName refuses a name that is not a secret's (Invalid, naming field "name").
func CheckName(name string) error {
	if !secretref.ValidName(name) {
		return errdefs.InvalidField("name",
			"a secret's name is 1 to 128 characters: a letter or digit, then letters, digits, '.', '_' or '-' (%q is not)", name)
	}
	return nil
}

// checkPut checks a PutRequest's fields.
func checkPut(r PutRequest) error {
	if err := CheckName(r.Name); err != nil {
		return err
	}
	switch {
	case len(r.Value) == 0:
		return errdefs.InvalidField("value", "a secret's value must not be empty")
	case len(r.Value) > MaxValueBytes:
		return errdefs.InvalidField("value", "a secret's value is at most %d bytes (64 KiB); this one has %d", MaxValueBytes, len(r.Value))
	case r.Description != nil && len(*r.Description) > maxDescriptionLen:
		return errdefs.InvalidField("description", "at most %d bytes", maxDescriptionLen)
	case r.ExpectedVersion != nil && *r.ExpectedVersion < 0:
		return errdefs.InvalidField("expected_version", "must not be negative")
	case r.By == "":
		return errors.New("vault: put: no principal named")
	}
	return nil
}

// Put stores a new version of the secret r.Name and returns the secret, with its
// versions, after the write. It creates the secret (version 1) when there is none. A
// deleted secret is FailedPrecondition; a stale r.ExpectedVersion is a
// *StaleVersionError (Aborted). Nothing is written unless Put succeeds.
func (v *Vault) Put(ctx context.Context, r PutRequest) (Secret, error) {
	if err := checkPut(r); err != nil {
		return Secret{}, err
	}
	labels, err := json.Marshal(r.Labels)
	if err != nil {
		return Secret{}, fmt.Errorf("vault: put: labels: %w", err)
	}
	audit.SetTarget(ctx, "secret:"+r.Name) // the version once known; a refused put names the secret
	var out Secret
	defer v.cache.forget(r.Name)
	// Two replicas creating the same secret at once: the second insert meets the unique
	// name, and a second attempt finds the secret the first created.
	for attempt := 0; ; attempt++ {
		err = v.store.InTx(ctx, func(tx *store.Tx) error {
			var err error
			out, err = v.put(ctx, tx, r, labels)
			return err
		})
		if attempt == 0 && errors.Is(err, store.ErrConflict) {
			continue
		}
		break
	}
	if err != nil {
		return Secret{}, wrapErr("put", err)
	}
	return out, nil
}

// put is Put in tx.
func (v *Vault) put(ctx context.Context, tx *store.Tx, r PutRequest, labels []byte) (Secret, error) {
	q := tx.Q()
	now := v.now().UTC()
	row, err := q.LockSecretByName(ctx, r.Name)
	switch {
	case errors.Is(err, store.ErrNotFound):
		if r.ExpectedVersion != nil && *r.ExpectedVersion != 0 {
			return Secret{}, &StaleVersionError{Name: r.Name, Expected: *r.ExpectedVersion}
		}
		id := ulid.Make().String()
		audit.SetTarget(ctx, target(r.Name, 1)) // before the insert, which writes the call's audit outbox row
		desc := ""
		if r.Description != nil {
			desc = *r.Description
		}
		if len(r.Labels) == 0 {
			labels = []byte("{}")
		}
		row, err = q.InsertSecret(ctx, dbsqlc.InsertSecretParams{ID: id, Name: r.Name, Description: desc, Labels: labels, Now: now, By: r.By})
		if err != nil {
			return Secret{}, err
		}
	case err != nil:
		return Secret{}, err
	default:
		if row.DeletedAt != nil {
			return Secret{}, errdefs.New(errdefs.FailedPrecondition, "secret %q is deleted: restore it before you put a new version", r.Name)
		}
		if r.ExpectedVersion != nil && *r.ExpectedVersion != row.LatestVersion {
			return Secret{}, &StaleVersionError{Name: r.Name, Expected: *r.ExpectedVersion, Current: row.LatestVersion}
		}
		version := row.LatestVersion + 1
		audit.SetTarget(ctx, target(r.Name, version)) // before the update, which writes the call's audit outbox row
		desc := row.Description
		if r.Description != nil {
			desc = *r.Description
		}
		if len(r.Labels) == 0 {
			labels = row.Labels
		}
		row, err = q.UpdateSecretForPut(ctx, dbsqlc.UpdateSecretForPutParams{ID: row.ID, Description: desc, Labels: labels, Now: now, By: r.By})
		if err != nil {
			return Secret{}, err
		}
	}
	s, err := v.wrap.seal(v.keys.Primary(), rowID{secretID: row.ID, name: row.Name, version: row.LatestVersion}, r.Value)
	if err != nil {
		return Secret{}, err
	}
	err = q.InsertSecretVersion(ctx, dbsqlc.InsertSecretVersionParams{
		SecretID: row.ID, Version: row.LatestVersion, Now: now, By: r.By, KekID: &s.KEKID,
		DataKeyNonce: s.DataKeyNonce, WrappedDataKey: s.WrappedDataKey, ValueNonce: s.ValueNonce, Ciphertext: s.Ciphertext,
	})
	if err != nil {
		return Secret{}, err
	}
	return v.withVersions(ctx, q, row)
}

// target is the audit target of a version of a secret.
func target(name string, version int64) string {
	return "secret:" + name + " version:" + strconv.FormatInt(version, 10)
}

// List returns a page of secrets, newest first, without their versions, and the token
// of the next page (empty on the last).
func (v *Vault) List(ctx context.Context, pageSize int, pageToken string, includeDeleted bool) ([]Secret, string, error) {
	if pageSize <= 0 {
		pageSize = defaultPageSize
	}
	pageSize = min(pageSize, maxPageSize)
	p := dbsqlc.ListSecretsParams{IncludeDeleted: includeDeleted, MaxRows: int32(pageSize + 1)}
	if pageToken != "" {
		at, id, err := pagetoken.Decode(pageToken)
		if err != nil {
			return nil, "", errdefs.Wrap(err, errdefs.Invalid, "page_token: %s", err)
		}
		p.AfterCreatedAt, p.AfterID = &at, id
	}
	rows, err := v.store.Q().ListSecrets(ctx, p)
	if err != nil {
		return nil, "", wrapErr("list", err)
	}
	rows, next := pagetoken.Page(rows, pageSize, func(r dbsqlc.Secret) (time.Time, string) { return r.CreatedAt, r.ID })
	out := make([]Secret, len(rows))
	for i, r := range rows {
		out[i] = secretOf(r)
	}
	return out, next, nil
}

// Get returns a secret, deleted or not, with its versions.
func (v *Vault) Get(ctx context.Context, name string) (Secret, error) {
	if err := CheckName(name); err != nil {
		return Secret{}, err
	}
	q := v.store.Q()
	row, err := q.GetSecretByName(ctx, name)
	if err != nil {
		return Secret{}, wrapErr("get", notFound(name, err))
	}
	s, err := v.withVersions(ctx, q, row)
	if err != nil {
		return Secret{}, wrapErr("get", err)
	}
	return s, nil
}

// Revealed is a version's value.
type Revealed struct {
	Name    string
	Version int64
	// Value is the plaintext; the caller clears it once sent.
	Value []byte
}

// CheckReason refuses a reveal's reason that is blank, longer than 256 characters or
// holds control characters or invalid UTF-8 (Invalid, naming field "reason").
func CheckReason(reason string) error {
	if strings.TrimSpace(reason) == "" {
		return errdefs.InvalidField("reason", "a reveal needs a reason: say why you need the value")
	}
	if !utf8.ValidString(reason) || strings.IndexFunc(reason, unicode.IsControl) >= 0 {
		return errdefs.InvalidField("reason", "a reason must not hold control characters or invalid UTF-8")
	}
	if utf8.RuneCountInString(reason) > maxReasonLen {
		return errdefs.InvalidField("reason", "a reason is at most %d characters", maxReasonLen)
	}
	return nil
}

// Reveal returns the value of version (0: the latest) of the secret name, on behalf of
// by, for reason. It is rate limited per by (ResourceExhausted), records the reason in
// the call's audit target and the read in the secret's row. A deleted secret or a
// destroyed version is FailedPrecondition; a version that does not decrypt is
// DataLoss; one sealed under a key-encryption key this replica lacks is
// FailedPrecondition naming it.
func (v *Vault) Reveal(ctx context.Context, name string, version int64, reason, by string) (Revealed, error) {
	if err := CheckName(name); err != nil {
		return Revealed{}, err
	}
	if err := CheckReason(reason); err != nil {
		return Revealed{}, err
	}
	if version < 0 {
		return Revealed{}, errdefs.InvalidField("version", "must not be negative")
	}
	if by == "" {
		return Revealed{}, errors.New("vault: reveal: no principal named")
	}
	audit.SetTarget(ctx, "secret:"+name+" reason:"+strconv.Quote(reason)) // the version once known
	if wait, ok := v.limit.Take(by); !ok {
		return Revealed{}, errdefs.Exhausted(wait, "%s revealed too many secrets: retry in %s", by, wait.Round(time.Second))
	}
	var out Revealed
	err := v.store.InTx(ctx, func(tx *store.Tx) error {
		q := tx.Q()
		row, err := q.GetSecretByName(ctx, name)
		if err != nil {
			return notFound(name, err)
		}
		if row.DeletedAt != nil {
			return errdefs.New(errdefs.FailedPrecondition, "secret %q is deleted: restore it to reveal it", name)
		}
		n := version
		if n == 0 {
			n = row.LatestVersion
		}
		if n > row.LatestVersion {
			return errdefs.New(errdefs.NotFound, "secret %q has no version %d (its latest is %d)", name, n, row.LatestVersion)
		}
		audit.SetTarget(ctx, target(name, n)+" reason:"+strconv.Quote(reason)) // before the write below, which writes the call's audit outbox row
		sv, err := q.GetSealedSecretVersion(ctx, dbsqlc.GetSealedSecretVersionParams{SecretID: row.ID, Version: n})
		if err != nil {
			return err
		}
		if sv.DestroyedAt != nil {
			return errdefs.New(errdefs.FailedPrecondition, "version %d of secret %q was destroyed on %s; its value is gone",
				n, name, sv.DestroyedAt.UTC().Format(time.RFC3339))
		}
		value, err := v.wrap.open(v.keys, rowID{secretID: row.ID, name: row.Name, version: n}, sealedOf(sv))
		if err != nil {
			if errdefs.KindOf(err) == errdefs.DataLoss {
				v.log.Error("a secret's version does not decrypt", "secret", name, "version", n, "err", err)
			}
			return err
		}
		if err := q.MarkSecretRead(ctx, dbsqlc.MarkSecretReadParams{ID: row.ID, Now: v.now().UTC(), By: by}); err != nil {
			clear(value)
			return err
		}
		out = Revealed{Name: name, Version: n, Value: value}
		return nil
	})
	if err != nil {
		return Revealed{}, wrapErr("reveal", err)
	}
	return out, nil
}

// Delete soft-deletes the secret name on behalf of by. A secret already deleted is
// FailedPrecondition; so is one that settings refer to (ReasonReferenced), unless force,
// when it is deleted all the same and the keys of those settings are returned (and
// named in the call's audit target).
func (v *Vault) Delete(ctx context.Context, name, by string, force bool) (Secret, []string, error) {
	return v.setDeleted(ctx, "delete", name, by, true, force)
}

// Restore brings back the deleted secret name on behalf of by. A secret that is not
// deleted is FailedPrecondition.
func (v *Vault) Restore(ctx context.Context, name, by string) (Secret, error) {
	s, _, err := v.setDeleted(ctx, "restore", name, by, false, false)
	return s, err
}

// setDeleted deletes or restores a secret.
func (v *Vault) setDeleted(ctx context.Context, op, name, by string, deleted, force bool) (Secret, []string, error) {
	if err := CheckName(name); err != nil {
		return Secret{}, nil, err
	}
	audit.SetTarget(ctx, "secret:"+name) // before the transaction, which writes the call's audit outbox row
	var (
		out      Secret
		referred []string
	)
	defer v.cache.forget(name)
	err := v.store.InTx(ctx, func(tx *store.Tx) error {
		if deleted {
			// Before the secret's lock, as configuration changes take the configuration's
			// lock before they read secrets.
			refs, err := v.referrers(ctx, tx, name)
			if err != nil {
				return err
			}
			keys := make([]string, len(refs))
			for i, r := range refs {
				keys[i] = r.Key
			}
			if referred, err = v.refuseReferred(ctx, "secret:"+name, fmt.Sprintf("secret %q", name), "palyra secrets delete "+name, keys, force); err != nil {
				return err
			}
		}
		q := tx.Q()
		row, err := q.LockSecretByName(ctx, name)
		if err != nil {
			return notFound(name, err)
		}
		switch {
		case deleted && row.DeletedAt != nil:
			return errdefs.New(errdefs.FailedPrecondition, "secret %q is already deleted", name)
		case !deleted && row.DeletedAt == nil:
			return errdefs.New(errdefs.FailedPrecondition, "secret %q is not deleted", name)
		}
		p := dbsqlc.SetSecretDeletedParams{ID: row.ID, Now: v.now().UTC()}
		if deleted {
			p.DeletedBy = &by
		}
		row, err = q.SetSecretDeleted(ctx, p)
		if err != nil {
			return err
		}
		out, err = v.withVersions(ctx, q, row)
		return err
	})
	if err != nil {
		return Secret{}, nil, wrapErr(op, err)
	}
	return out, referred, nil
}

// Destroy erases the value of one version of the secret name for good, on behalf of
// by. A version already destroyed is FailedPrecondition; so is one that settings refer
// to (ReasonReferenced: a reference pinned to it, or an unpinned one when it is the
// latest version), unless force, when it is destroyed all the same and the keys of
// those settings are returned (and named in the call's audit target).
func (v *Vault) Destroy(ctx context.Context, name string, version int64, by string, force bool) (Secret, []string, error) {
	if err := CheckName(name); err != nil {
		return Secret{}, nil, err
	}
	if version < 1 {
		return Secret{}, nil, errdefs.InvalidField("version", "versions are numbered from 1")
	}
	audit.SetTarget(ctx, target(name, version)) // before the transaction, which writes the call's audit outbox row
	var (
		out      Secret
		referred []string
	)
	defer v.cache.forget(name)
	err := v.store.InTx(ctx, func(tx *store.Tx) error {
		// The configuration's lock first, as in setDeleted; the latest version is read
		// under the secret's lock below, so references are filtered after it.
		all, err := v.referrers(ctx, tx, name)
		if err != nil {
			return err
		}
		q := tx.Q()
		row, err := q.LockSecretByName(ctx, name)
		if err != nil {
			return notFound(name, err)
		}
		if version > row.LatestVersion {
			return errdefs.New(errdefs.NotFound, "secret %q has no version %d (its latest is %d)", name, version, row.LatestVersion)
		}
		var keys []string
		for _, r := range all {
			if r.Ref.Version == version || (!r.Ref.Pinned() && version == row.LatestVersion) {
				keys = append(keys, r.Key)
			}
		}
		what := fmt.Sprintf("version %d of secret %q", version, name)
		if referred, err = v.refuseReferred(ctx, target(name, version), what, fmt.Sprintf("palyra secrets destroy %s --version %d", name, version), keys, force); err != nil {
			return err
		}
		n, err := q.DestroySecretVersion(ctx, dbsqlc.DestroySecretVersionParams{SecretID: row.ID, Version: version, Now: v.now().UTC(), By: by})
		if err != nil {
			return err
		}
		if n == 0 {
			return errdefs.New(errdefs.FailedPrecondition, "version %d of secret %q is already destroyed", version, name)
		}
		out, err = v.withVersions(ctx, q, row)
		return err
	})
	if err != nil {
		return Secret{}, nil, wrapErr("destroy", err)
	}
	return out, referred, nil
}

// withVersions returns row as a Secret with its versions.
func (v *Vault) withVersions(ctx context.Context, q *dbsqlc.Queries, row dbsqlc.Secret) (Secret, error) {
	s := secretOf(row)
	versions, err := q.ListSecretVersions(ctx, row.ID)
	if err != nil {
		return Secret{}, err
	}
	s.Versions = make([]Version, len(versions))
	for i, r := range versions {
		s.Versions[i] = Version{Number: r.Version, CreatedAt: r.CreatedAt.UTC(), CreatedBy: r.CreatedBy,
			KEKID: deref(r.KekID), DestroyedAt: utc(r.DestroyedAt), DestroyedBy: deref(r.DestroyedBy)}
	}
	return s, nil
}

// secretOf converts a row.
func secretOf(r dbsqlc.Secret) Secret {
	s := Secret{
		ID: r.ID, Name: r.Name, Description: r.Description, LatestVersion: r.LatestVersion,
		CreatedAt: r.CreatedAt.UTC(), CreatedBy: r.CreatedBy, UpdatedAt: r.UpdatedAt.UTC(), UpdatedBy: r.UpdatedBy,
		DeletedAt: utc(r.DeletedAt), DeletedBy: deref(r.DeletedBy), LastReadAt: utc(r.LastReadAt), LastReadBy: deref(r.LastReadBy),
	}
	_ = json.Unmarshal(r.Labels, &s.Labels) // the column holds a JSON object (secrets_labels)
	return s
}

// sealedOf returns the sealed parts of a version row.
func sealedOf(r dbsqlc.SecretVersion) sealed {
	return sealed{KEKID: deref(r.KekID), DataKeyNonce: r.DataKeyNonce, WrappedDataKey: r.WrappedDataKey,
		ValueNonce: r.ValueNonce, Ciphertext: r.Ciphertext}
}

// notFound turns the store's ErrNotFound into the NotFound error of the secret name.
func notFound(name string, err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return errdefs.Wrap(err, errdefs.NotFound, "there is no secret named %q", name)
	}
	return err
}

// wrapErr adds the operation to an error, keeping a domain error's message as it is.
func wrapErr(op string, err error) error {
	var k errdefs.Kinded
	if errors.As(err, &k) {
		return err
	}
	return fmt.Errorf("vault: %s: %w", op, err)
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func utc(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}
