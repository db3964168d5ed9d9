// Package storetest gives each test its own freshly migrated PostgreSQL database
// (pgtestdb), on the server named by DATABASE_URL. `make test` starts a throwaway server
// and sets DATABASE_URL; the server's user must be allowed to create databases.
package storetest

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"
	"io/fs"
	neturl "net/url"
	"os"
	"strconv"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver that pgtestdb uses
	"github.com/peterldowns/pgtestdb"

	"github.com/palyra/palyra/server/internal/store"
	"github.com/palyra/palyra/sqlc"
)

// URL creates a new database migrated to the current schema and returns its URL. The
// database is dropped when the test passes and kept for inspection when it fails.
func URL(t testing.TB) string {
	t.Helper()
	return pgtestdb.Custom(t, serverConfig(t), migrator{}).URL()
}

// UnmigratedURL creates a new database without any schema and returns its URL, for
// tests of the migrations themselves.
func UnmigratedURL(t testing.TB) string {
	t.Helper()
	return pgtestdb.Custom(t, serverConfig(t), pgtestdb.NoopMigrator{}).URL()
}

// New opens a Store on a new migrated database; it is closed when the test ends.
func New(t testing.TB) *store.Store {
	t.Helper()
	s, err := store.Open(t.Context(), store.Options{URL: URL(t)})
	if err != nil {
		t.Fatalf("storetest: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// serverConfig reads DATABASE_URL.
func serverConfig(t testing.TB) pgtestdb.Config {
	t.Helper()
	url := os.Getenv("DATABASE_URL")
	if url == "" {
		t.Fatal("storetest: DATABASE_URL is not set: run `make test`, which starts a throwaway " +
			"PostgreSQL, or point DATABASE_URL at a server whose user may create databases")
	}
	c, err := pgconn.ParseConfig(url)
	if err != nil {
		t.Fatalf("storetest: DATABASE_URL is not a valid PostgreSQL URL")
	}
	// Keep the URL's options (sslmode and the like); without any, a local server.
	options := "sslmode=disable"
	if u, err := neturl.Parse(url); err == nil && u.RawQuery != "" {
		options = u.RawQuery
	}
	return pgtestdb.Config{
		DriverName: "pgx",
		Host:       c.Host,
		Port:       strconv.Itoa(int(c.Port)),
		User:       c.User,
		Password:   c.Password,
		Database:   c.Database,
		Options:    options,
	}
}

// migrator applies the daemon's own migrations through store.Migrate, so that tests
// see exactly the schema palyrad builds.
type migrator struct{}

// Hash identifies the migration set: pgtestdb keeps one template database per hash.
func (migrator) Hash() (string, error) {
	h := sha256.New()
	err := fs.WalkDir(sqlc.Migrations, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(sqlc.Migrations, path)
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s\x00%d\x00", path, len(b))
		h.Write(b)
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("storetest: hash migrations: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Migrate migrates the template database.
func (migrator) Migrate(ctx context.Context, _ *sql.DB, conf pgtestdb.Config) error {
	s, err := store.Open(ctx, store.Options{URL: conf.URL()})
	if err != nil {
		return err
	}
	defer s.Close()
	_, err = s.Migrate(ctx)
	return err
}

// AsSuperuser runs stmts, in order, on the database of url (one that URL made) as
// DATABASE_URL's user, who may get past triggers and replication roles: for tests that
// tamper with rows behind palyrad's back.
func AsSuperuser(t testing.TB, url string, stmts ...string) {
	t.Helper()
	u, err := neturl.Parse(os.Getenv("DATABASE_URL"))
	if err != nil {
		t.Fatal(err)
	}
	test, err := neturl.Parse(url)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = test.Path
	conn, err := pgx.Connect(t.Context(), u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for _, s := range stmts {
		if _, err := conn.Exec(t.Context(), s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}
