package vault

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/palyra/palyra/gen/dbsqlc"
	"github.com/palyra/palyra/server/internal/audit"
	"github.com/palyra/palyra/server/internal/config"
	"github.com/palyra/palyra/server/internal/errdefs"
	"github.com/palyra/palyra/server/internal/secretref"
	"github.com/palyra/palyra/server/internal/store"
)

// ReasonReferenced is the ErrorInfo reason of a delete or destroy refused because
// settings refer to what it removes; MetadataReferredBy is the metadata key listing
// their keys, separated by commas.
const (
	ReasonReferenced   = "SECRET_REFERENCED"
	MetadataReferredBy = "referred_by"
)

// Referrers finds what refers to a secret: the settings whose secret references name
// it (the live configuration, package liveconfig), and the proxies of browser profiles
// (package browser); the daemon joins them.
type Referrers interface {
	// Referrers returns what refers to the secret name, any version, by key (a
	// setting's key, or "browser profile NAME (proxy)"). It serialises with the changes
	// that add references until tx ends, so that none can add one meanwhile.
	Referrers(ctx context.Context, tx *store.Tx, name string) ([]config.SecretRef, error)
}

// referrers returns the settings that refer to the secret name; none without a
// Referrers.
func (v *Vault) referrers(ctx context.Context, tx *store.Tx, name string) ([]config.SecretRef, error) {
	if v.refs == nil {
		return nil, nil
	}
	return v.refs.Referrers(ctx, tx, name)
}

// refuseReferred refuses to remove what (a secret, a version) while the settings keys
// refer to it, unless force; command is the palyra command that removes it. With force
// it names them in the call's audit target (base followed by " referred_by:" and the
// keys) and returns them.
func (v *Vault) refuseReferred(ctx context.Context, base, what, command string, keys []string, force bool) ([]string, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	list := strings.Join(keys, ", ")
	if !force {
		return nil, &errdefs.Error{
			Kind: errdefs.FailedPrecondition,
			Message: fmt.Sprintf("%s is referred to by %s: point them elsewhere first (palyra config set or unset; palyra browser profiles update), "+
				"or force it (%s --force), which leaves them referring to a secret that cannot be used", what, list, command),
			Reason:   ReasonReferenced,
			Metadata: map[string]string{MetadataReferredBy: strings.Join(keys, ",")},
		}
	}
	audit.SetTarget(ctx, base+" referred_by:"+strings.Join(keys, ","))
	v.log.Warn("a secret that settings refer to was removed by force", "what", what, "referred_by", keys)
	return keys, nil
}

// CheckRef checks that ref can be used: its secret exists and is not deleted, and the
// version it pins (or else the latest) exists and is not destroyed. The error, Invalid,
// names the secret and says what is wrong, so that the caller can name the setting; q
// is the transaction the setting is changed in.
func CheckRef(ctx context.Context, q store.Queryer, ref secretref.Ref) error {
	_, _, problem, err := usable(ctx, q.Q(), ref)
	if err != nil {
		return wrapErr("check a reference", err)
	}
	if problem != "" {
		return errdefs.New(errdefs.Invalid, "%s", problem)
	}
	return nil
}

// usable reads the secret ref names and returns it with the version ref resolves to,
// or what makes ref unusable: the secret does not exist or is deleted, the version does
// not exist or is destroyed.
func usable(ctx context.Context, q *dbsqlc.Queries, ref secretref.Ref) (dbsqlc.Secret, int64, string, error) {
	row, err := q.GetSecretByName(ctx, ref.Name)
	if errors.Is(err, store.ErrNotFound) {
		return dbsqlc.Secret{}, 0, fmt.Sprintf("secret %q does not exist (palyra secrets set %s)", ref.Name, ref.Name), nil
	}
	if err != nil {
		return dbsqlc.Secret{}, 0, "", err
	}
	if row.DeletedAt != nil {
		return dbsqlc.Secret{}, 0, fmt.Sprintf("secret %q is deleted (palyra secrets restore %s)", ref.Name, ref.Name), nil
	}
	n := ref.Version
	if n == 0 {
		n = row.LatestVersion
	}
	if n > row.LatestVersion {
		return dbsqlc.Secret{}, 0, fmt.Sprintf("secret %q has no version %d (its latest is %d)", ref.Name, n, row.LatestVersion), nil
	}
	versions, err := q.ListSecretVersions(ctx, row.ID)
	if err != nil {
		return dbsqlc.Secret{}, 0, "", err
	}
	for _, ver := range versions {
		if ver.Version == n && ver.DestroyedAt != nil {
			return dbsqlc.Secret{}, 0, fmt.Sprintf("version %d of secret %q was destroyed on %s",
				n, ref.Name, ver.DestroyedAt.UTC().Format(time.RFC3339)), nil
		}
	}
	return row, n, "", nil
}

// Resolve returns the value ref names, for the server's own use of a setting that
// refers to a secret (an upstream provider's API key, say): the version it pins, else
// the latest. A secret that does not exist, is deleted, or whose version is missing or
// destroyed is FailedPrecondition; a value that does not decrypt DataLoss. It is not a
// reveal: no reason, no rate limit, no audit event, and the secret's last read is not
// stamped. A repeated resolution opens the sealed version it resolved to before,
// without reading the database, until the secret changes (resolvecache.go). The caller
// clears the value after use.
func (v *Vault) Resolve(ctx context.Context, ref secretref.Ref) ([]byte, error) {
	if !secretref.ValidName(ref.Name) || ref.Version < 0 {
		return nil, errdefs.New(errdefs.Invalid, "malformed secret reference")
	}
	cached := v.cached()
	if cached {
		if r, ok := v.cache.get(ref); ok {
			return v.open(r)
		}
	}
	gen := v.cache.generation()
	r, err := v.read(ctx, ref)
	if err != nil {
		return nil, err
	}
	value, err := v.open(r)
	if err != nil {
		return nil, err
	}
	if cached {
		v.cache.put(ref, r, gen)
	}
	return value, nil
}

// read reads the sealed version ref resolves to.
func (v *Vault) read(ctx context.Context, ref secretref.Ref) (resolved, error) {
	q := v.store.Q()
	row, n, problem, err := usable(ctx, q, ref)
	if err != nil {
		return resolved{}, wrapErr("resolve", err)
	}
	if problem != "" {
		return resolved{}, errdefs.New(errdefs.FailedPrecondition, "%s cannot be used: %s", ref, problem)
	}
	sv, err := q.GetSealedSecretVersion(ctx, dbsqlc.GetSealedSecretVersionParams{SecretID: row.ID, Version: n})
	if err != nil {
		return resolved{}, wrapErr("resolve", err)
	}
	if sv.DestroyedAt != nil { // destroyed since usable read it
		return resolved{}, errdefs.New(errdefs.FailedPrecondition, "version %d of secret %q was destroyed", n, ref.Name)
	}
	return resolved{row: rowID{secretID: row.ID, name: row.Name, version: n}, sealed: sealedOf(sv)}, nil
}

// open decrypts the version r.
func (v *Vault) open(r resolved) ([]byte, error) {
	value, err := v.wrap.open(v.keys, r.row, r.sealed)
	if err != nil {
		if errdefs.KindOf(err) == errdefs.DataLoss {
			v.log.Error("a secret's version does not decrypt", "secret", r.row.name, "version", r.row.version, "err", err)
		}
		return nil, wrapErr("resolve", err)
	}
	return value, nil
}
