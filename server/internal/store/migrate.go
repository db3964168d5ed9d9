package store

import (
	"context"
	"fmt"
	"io/fs"

	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/palyra/palyra/sqlc"
)

// MigrationResult says what Migrate did.
type MigrationResult struct {
	// Applied lists the versions applied by this call, in order; empty when the schema
	// was already current.
	Applied []int64
	// Version is the schema version after the call.
	Version int64
}

// Migrate applies every pending migration of sqlc/migrations. Replicas starting at the
// same moment take turns: goose holds a PostgreSQL advisory lock while it migrates.
func (s *Store) Migrate(ctx context.Context) (MigrationResult, error) {
	p, closeDB, err := s.migrator()
	if err != nil {
		return MigrationResult{}, err
	}
	defer closeDB()
	results, err := p.Up(ctx)
	if err != nil {
		return MigrationResult{}, fmt.Errorf("store: migrate: %w", translate(err))
	}
	var res MigrationResult
	for _, r := range results {
		res.Applied = append(res.Applied, r.Source.Version)
	}
	if res.Version, err = p.GetDBVersion(ctx); err != nil {
		return MigrationResult{}, fmt.Errorf("store: read schema version: %w", translate(err))
	}
	if len(res.Applied) > 0 {
		s.log.Info("database migrated", "applied", res.Applied, "schema_version", res.Version)
	}
	return res, nil
}

// SchemaVersion returns the newest migration applied to the database.
func (s *Store) SchemaVersion(ctx context.Context) (int64, error) {
	p, closeDB, err := s.migrator()
	if err != nil {
		return 0, err
	}
	defer closeDB()
	v, err := p.GetDBVersion(ctx)
	if err != nil {
		return 0, fmt.Errorf("store: read schema version: %w", translate(err))
	}
	return v, nil
}

// migrator returns a goose provider over the pool, and a function that releases it.
func (s *Store) migrator() (*goose.Provider, func(), error) {
	migrations, err := fs.Sub(sqlc.Migrations, "migrations")
	if err != nil {
		return nil, nil, fmt.Errorf("store: migrations: %w", err)
	}
	// Poll the advisory lock every second (goose's default is five) for up to five
	// minutes, so that a replica waiting for another's migration starts promptly.
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockTimeout(1, 300))
	if err != nil {
		return nil, nil, fmt.Errorf("store: migration lock: %w", err)
	}
	db := stdlib.OpenDBFromPool(s.pool)
	p, err := goose.NewProvider(goose.DialectPostgres, db, migrations, goose.WithSessionLocker(locker))
	if err != nil {
		_ = db.Close()
		return nil, nil, fmt.Errorf("store: migrations: %w", err)
	}
	return p, func() { _ = db.Close() }, nil
}
