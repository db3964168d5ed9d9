package access

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/oklog/ulid/v2"

	"github.com/palyra/palyra/gen/dbsqlc"
	"github.com/palyra/palyra/server/internal/audit"
	"github.com/palyra/palyra/server/internal/store"
)

// BootstrapFile is the file, in the data directory, where the first start writes the
// owner's token.
const BootstrapFile = "bootstrap-token"

// ownerName is the user created at first start.
const ownerName = "owner"

// errOwnerExists stops the bootstrap transaction when the owner exists already.
var errOwnerExists = errors.New("the owner exists")

// Bootstrap creates the owner user and an owner token on a database that has no owner
// yet, and writes the token to <dataDir>/bootstrap-token (mode 0600); it never logs the
// secret. It returns the path of the file, or "" when the owner existed already. The
// file is written before the transaction commits: if writing fails, nothing is created
// and the next start tries again. The creation is audited as "access.bootstrap" by
// "system".
func Bootstrap(ctx context.Context, db *store.Store, log *audit.Log, dataDir string) (string, error) {
	path := filepath.Join(dataDir, BootstrapFile)
	id, secret := newSecret()
	ctx, call := log.Begin(ctx, audit.Event{Principal: "system", Procedure: "access.bootstrap"})
	audit.SetTarget(ctx, "token:"+id)
	err := db.InTx(ctx, func(tx *store.Tx) error {
		q := tx.Q()
		owner, err := q.InsertUserIfMissing(ctx, dbsqlc.InsertUserIfMissingParams{ID: ulid.Make().String(), Name: ownerName, Role: string(Owner)})
		if errors.Is(err, store.ErrNotFound) {
			return errOwnerExists
		}
		if err != nil {
			return err
		}
		if _, err := insertToken(ctx, q, id, secret, owner.ID, "bootstrap", CreateParams{Label: "bootstrap", Role: Owner, RateLimit: MaxRateLimit}, nil); err != nil {
			return err
		}
		return writeSecretFile(path, formatToken(id, secret))
	})
	switch {
	case errors.Is(err, errOwnerExists):
		call.Abandon() // nothing changed
		return "", nil
	case err != nil:
		_ = os.Remove(path)
		if aerr := call.End(ctx, audit.Failure, "internal"); aerr != nil {
			return "", fmt.Errorf("access: bootstrap: %w", errors.Join(err, aerr))
		}
		return "", fmt.Errorf("access: bootstrap: %w", err)
	}
	if err := call.End(ctx, audit.Success, "ok"); err != nil && !errors.Is(err, audit.ErrDeferred) {
		return "", fmt.Errorf("access: bootstrap: %w", err)
	}
	return path, nil
}

// CreateLocalToken creates a token for the owner (creating the owner if needed) without
// any caller: `palyrad token create`, for when the bootstrap token is lost. It is only
// reachable by whoever can open the database, and audited as "access.local_token" by
// "local".
func CreateLocalToken(ctx context.Context, db *store.Store, log *audit.Log, p CreateParams) (*Token, string, error) {
	var tok *Token
	id, secret := newSecret()
	ctx, call := log.Begin(ctx, audit.Event{Principal: "local", Procedure: "access.local_token"})
	audit.SetTarget(ctx, "token:"+id)
	err := db.InTx(ctx, func(tx *store.Tx) error {
		q := tx.Q()
		owner, err := q.InsertUserIfMissing(ctx, dbsqlc.InsertUserIfMissingParams{ID: ulid.Make().String(), Name: ownerName, Role: string(Owner)})
		if errors.Is(err, store.ErrNotFound) {
			owner, err = q.GetUserByName(ctx, ownerName)
		}
		if err != nil {
			return err
		}
		tok, err = insertToken(ctx, q, id, secret, owner.ID, "local", p, nil)
		return err
	})
	outcome, code := audit.Success, "ok"
	if err != nil {
		outcome, code = audit.Failure, "internal"
	}
	if aerr := call.End(ctx, outcome, code); aerr != nil {
		err = errors.Join(err, aerr)
	}
	if err != nil {
		return nil, "", fmt.Errorf("access: create local token: %w", err)
	}
	return tok, formatToken(id, secret), nil
}

// writeSecretFile writes secret to path with mode 0600, replacing the file atomically.
func writeSecretFile(path, secret string) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".bootstrap-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	_, werr := tmp.WriteString(secret + "\n")
	serr := tmp.Sync()
	cerr := tmp.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
