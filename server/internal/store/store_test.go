package store_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/oklog/ulid/v2"

	"github.com/palyra/palyra/gen/dbsqlc"
	"github.com/palyra/palyra/server/internal/store"
	"github.com/palyra/palyra/server/internal/store/storetest"
	"github.com/palyra/palyra/sqlc"
)

// testBundle is what most tests of this file start from: a store on a database of its
// own, migrated to the current schema.
type testBundle struct {
	store *store.Store
	q     *dbsqlc.Queries
}

func setup(t *testing.T) *testBundle {
	t.Helper()
	s := storetest.New(t)
	return &testBundle{store: s, q: s.Q()}
}

// newestMigration reads the highest version number among sqlc/migrations/*.sql.
func newestMigration(t *testing.T) int64 {
	t.Helper()
	names, err := fs.Glob(sqlc.Migrations, "migrations/*.sql")
	if err != nil {
		t.Fatal(err)
	}
	if len(names) == 0 {
		t.Fatal("no migrations embedded")
	}
	var newest int64
	for _, name := range names {
		prefix, _, ok := strings.Cut(path.Base(name), "_")
		if !ok {
			t.Fatalf("migration %s has no numeric prefix", name)
		}
		v, err := strconv.ParseInt(prefix, 10, 64)
		if err != nil {
			t.Fatalf("migration %s: %v", name, err)
		}
		newest = max(newest, v)
	}
	return newest
}

func openStore(t *testing.T, url string) *store.Store {
	t.Helper()
	s, err := store.Open(t.Context(), store.Options{URL: url})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

func TestMigrateIsIdempotent(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	newest := newestMigration(t)

	res, err := b.store.Migrate(ctx)
	if err != nil {
		t.Fatalf("second migrate: %v", err)
	}
	if len(res.Applied) != 0 {
		t.Errorf("second migrate applied %v, want nothing", res.Applied)
	}
	if res.Version != newest {
		t.Errorf("second migrate reports version %d, want %d", res.Version, newest)
	}
	v, err := b.store.SchemaVersion(ctx)
	if err != nil {
		t.Fatalf("schema version: %v", err)
	}
	if v != newest {
		t.Errorf("SchemaVersion = %d, want the newest migration %d", v, newest)
	}
}

func TestMigrateEmptyDatabase(t *testing.T) {
	t.Parallel()
	s := openStore(t, storetest.UnmigratedURL(t))
	ctx := t.Context()
	newest := newestMigration(t)

	first, err := s.Migrate(ctx)
	if err != nil {
		t.Fatalf("first migrate: %v", err)
	}
	if len(first.Applied) == 0 || first.Applied[len(first.Applied)-1] != newest || !slices.IsSorted(first.Applied) {
		t.Errorf("first migrate applied %v, want every migration in order up to %d", first.Applied, newest)
	}
	if first.Version != newest {
		t.Errorf("first migrate reports version %d, want %d", first.Version, newest)
	}
	second, err := s.Migrate(ctx)
	if err != nil {
		t.Fatalf("second migrate: %v", err)
	}
	if len(second.Applied) != 0 || second.Version != newest {
		t.Errorf("second migrate = %+v, want nothing applied at version %d", second, newest)
	}
	// The schema is really there: the generated queries run.
	if _, err := s.Q().GetActiveAuthority(ctx); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetActiveAuthority on the new schema: %v, want ErrNotFound", err)
	}
}

// Replicas starting together on an empty database take turns: every migration is
// applied exactly once in total. (Two replicas are enough: goose polls its advisory lock
// every five seconds, so each extra one adds that much to the test.)
func TestMigrateConcurrently(t *testing.T) {
	t.Parallel()
	url := storetest.UnmigratedURL(t)
	newest := newestMigration(t)
	const replicas = 2
	stores := make([]*store.Store, replicas)
	for i := range stores {
		stores[i] = openStore(t, url)
	}
	results := make([]store.MigrationResult, replicas)
	errs := make([]error, replicas)
	var wg sync.WaitGroup
	for i, s := range stores {
		wg.Go(func() { results[i], errs[i] = s.Migrate(t.Context()) })
	}
	wg.Wait()
	var applied []int64
	for i := range replicas {
		if errs[i] != nil {
			t.Fatalf("replica %d: %v", i, errs[i])
		}
		if results[i].Version != newest {
			t.Errorf("replica %d reports version %d, want %d", i, results[i].Version, newest)
		}
		applied = append(applied, results[i].Applied...)
	}
	slices.Sort(applied)
	if len(applied) == 0 || applied[len(applied)-1] != newest || len(slices.Compact(slices.Clone(applied))) != len(applied) {
		t.Errorf("replicas applied %v in total, want each migration up to %d exactly once", applied, newest)
	}
}

// randomFingerprint returns a well-formed "sha256:<hex>" of random bytes.
func randomFingerprint() string {
	sum := sha256.Sum256([]byte(rand.Text()))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// authorityParams returns a row that every constraint of certificate_authorities
// accepts.
func authorityParams() dbsqlc.InsertAuthorityParams {
	now := time.Date(2031, 3, 14, 15, 9, 26, 0, time.UTC)
	return dbsqlc.InsertAuthorityParams{
		ID:             ulid.Make().String(),
		Subject:        "CN=test",
		CertificateDer: []byte(rand.Text()),
		Fingerprint:    randomFingerprint(),
		KeyCiphertext:  []byte(rand.Text()),
		KeyNonce:       make([]byte, 12),
		KekID:          "kek-test",
		NotBefore:      now,
		NotAfter:       now.Add(24 * time.Hour),
	}
}

// issuedParams returns a row of issued_certificates under authorityID that every
// constraint accepts.
func issuedParams(authorityID string) dbsqlc.InsertIssuedCertificateParams {
	now := time.Date(2031, 3, 14, 15, 9, 26, 0, time.UTC)
	serial := make([]byte, 16)
	_, _ = rand.Read(serial)
	return dbsqlc.InsertIssuedCertificateParams{
		Serial:          hex.EncodeToString(serial),
		Fingerprint:     randomFingerprint(),
		AuthorityID:     authorityID,
		Kind:            "server",
		Subject:         "CN=localhost",
		DnsNames:        []string{"localhost"},
		IpAddresses:     []string{"127.0.0.1"},
		Uris:            []string{},
		NotBefore:       now,
		NotAfter:        now.Add(time.Hour),
		IssuedByReplica: "replica-1",
	}
}

// retire marks every authority inactive, with plain SQL: no query of the daemon does it
// yet.
func retire(t *testing.T, s *store.Store) {
	t.Helper()
	if _, err := s.Pool().Exec(t.Context(), "update certificate_authorities set active = false"); err != nil {
		t.Fatalf("retire authorities: %v", err)
	}
}

func TestErrorTranslation(t *testing.T) {
	t.Parallel()

	type testCase struct {
		// run performs the failing operation on a migrated database.
		run func(t *testing.T, s *store.Store) error
		// want is the sentinel the error must match.
		want error
		// constraint and table, when set, are what the *store.ConstraintError names.
		constraint, table string
	}
	// authorityTwice inserts an authority, retires it, and inserts a second one changed
	// with what the first holds.
	authorityTwice := func(change func(second, first *dbsqlc.InsertAuthorityParams)) func(*testing.T, *store.Store) error {
		return func(t *testing.T, s *store.Store) error {
			first, second := authorityParams(), authorityParams()
			if _, err := s.Q().InsertAuthority(t.Context(), first); err != nil {
				t.Fatalf("first authority: %v", err)
			}
			retire(t, s)
			change(&second, &first)
			_, err := s.Q().InsertAuthority(t.Context(), second)
			return err
		}
	}
	// issued inserts an authority, then a certificate of it with change applied.
	issued := func(change func(p *dbsqlc.InsertIssuedCertificateParams)) func(*testing.T, *store.Store) error {
		return func(t *testing.T, s *store.Store) error {
			ca, err := s.Q().InsertAuthority(t.Context(), authorityParams())
			if err != nil {
				t.Fatalf("authority: %v", err)
			}
			p := issuedParams(ca.ID)
			change(&p)
			return s.Q().InsertIssuedCertificate(t.Context(), p)
		}
	}
	// issuedTwice inserts two certificates of one authority, the second changed with
	// what the first holds.
	issuedTwice := func(change func(second, first *dbsqlc.InsertIssuedCertificateParams)) func(*testing.T, *store.Store) error {
		return func(t *testing.T, s *store.Store) error {
			ca, err := s.Q().InsertAuthority(t.Context(), authorityParams())
			if err != nil {
				t.Fatalf("authority: %v", err)
			}
			first, second := issuedParams(ca.ID), issuedParams(ca.ID)
			if err := s.Q().InsertIssuedCertificate(t.Context(), first); err != nil {
				t.Fatalf("first certificate: %v", err)
			}
			change(&second, &first)
			return s.Q().InsertIssuedCertificate(t.Context(), second)
		}
	}
	cases := map[string]testCase{
		"no active authority": {
			run: func(t *testing.T, s *store.Store) error {
				_, err := s.Q().GetActiveAuthority(t.Context())
				return err
			},
			want: store.ErrNotFound,
		},
		"no issued certificate with that fingerprint": {
			run: func(t *testing.T, s *store.Store) error {
				_, err := s.Q().GetIssuedCertificate(t.Context(), randomFingerprint())
				return err
			},
			want: store.ErrNotFound,
		},
		// InsertAuthority says ON CONFLICT (active) WHERE active DO NOTHING ... RETURNING:
		// a second active authority is not an error in PostgreSQL's eyes, the insert is
		// skipped and returns no row, which the store reports as ErrNotFound (the caller
		// then reads the authority that won).
		"second active authority is skipped": {
			run: func(t *testing.T, s *store.Store) error {
				if _, err := s.Q().InsertAuthority(t.Context(), authorityParams()); err != nil {
					t.Fatalf("first authority: %v", err)
				}
				_, err := s.Q().InsertAuthority(t.Context(), authorityParams())
				return err
			},
			want: store.ErrNotFound,
		},
		// The arbiter of ON CONFLICT is only the one-active index: any other unique
		// constraint still raises.
		"duplicate authority fingerprint": {
			run:        authorityTwice(func(second, first *dbsqlc.InsertAuthorityParams) { second.Fingerprint = first.Fingerprint }),
			want:       store.ErrConflict,
			constraint: "certificate_authorities_fingerprint_unique",
			table:      "certificate_authorities",
		},
		"duplicate authority id": {
			run:        authorityTwice(func(second, first *dbsqlc.InsertAuthorityParams) { second.ID = first.ID }),
			want:       store.ErrConflict,
			constraint: "certificate_authorities_pkey",
			table:      "certificate_authorities",
		},
		"authority nonce of the wrong length": {
			run: func(t *testing.T, s *store.Store) error {
				p := authorityParams()
				p.KeyNonce = make([]byte, 16)
				_, err := s.Q().InsertAuthority(t.Context(), p)
				return err
			},
			want:       store.ErrInvalid,
			constraint: "certificate_authorities_nonce_length",
			table:      "certificate_authorities",
		},
		"authority fingerprint in the wrong form": {
			run: func(t *testing.T, s *store.Store) error {
				p := authorityParams()
				p.Fingerprint = strings.ToUpper(p.Fingerprint)
				_, err := s.Q().InsertAuthority(t.Context(), p)
				return err
			},
			want:       store.ErrInvalid,
			constraint: "certificate_authorities_fingerprint_format",
			table:      "certificate_authorities",
		},
		"duplicate issued serial": {
			run:        issuedTwice(func(second, first *dbsqlc.InsertIssuedCertificateParams) { second.Serial = first.Serial }),
			want:       store.ErrConflict,
			constraint: "issued_certificates_pkey",
			table:      "issued_certificates",
		},
		"duplicate issued fingerprint": {
			run:        issuedTwice(func(second, first *dbsqlc.InsertIssuedCertificateParams) { second.Fingerprint = first.Fingerprint }),
			want:       store.ErrConflict,
			constraint: "issued_certificates_fingerprint_unique",
			table:      "issued_certificates",
		},
		"issued certificate of an unknown kind": {
			run:        issued(func(p *dbsqlc.InsertIssuedCertificateParams) { p.Kind = "bogus" }),
			want:       store.ErrInvalid,
			constraint: "issued_certificates_kind",
			table:      "issued_certificates",
		},
		"issued certificate expiring before it starts": {
			run:        issued(func(p *dbsqlc.InsertIssuedCertificateParams) { p.NotAfter = p.NotBefore }),
			want:       store.ErrInvalid,
			constraint: "issued_certificates_validity",
			table:      "issued_certificates",
		},
		"issued certificate with an upper-case serial": {
			run:        issued(func(p *dbsqlc.InsertIssuedCertificateParams) { p.Serial = "ABCDEF" }),
			want:       store.ErrInvalid,
			constraint: "issued_certificates_serial_format",
			table:      "issued_certificates",
		},
		// pgx sends a nil slice as NULL: the NOT NULL violation names the column.
		"issued certificate with NULL names": {
			run:        issued(func(p *dbsqlc.InsertIssuedCertificateParams) { p.DnsNames = nil }),
			want:       store.ErrInvalid,
			constraint: "dns_names",
			table:      "issued_certificates",
		},
		"issued certificate of a missing authority": {
			run: func(t *testing.T, s *store.Store) error {
				return s.Q().InsertIssuedCertificate(t.Context(), issuedParams(ulid.Make().String()))
			},
			want:       store.ErrReferenced,
			constraint: "issued_certificates_authority_id_fkey",
			table:      "issued_certificates",
		},
		// The same translation applies to queries bound to a transaction.
		"duplicate issued serial inside InTx": {
			run: func(t *testing.T, s *store.Store) error {
				return s.InTx(t.Context(), func(tx *store.Tx) error {
					q := tx.Q()
					ca, err := q.InsertAuthority(t.Context(), authorityParams())
					if err != nil {
						t.Fatalf("authority: %v", err)
					}
					first := issuedParams(ca.ID)
					if err := q.InsertIssuedCertificate(t.Context(), first); err != nil {
						t.Fatalf("first certificate: %v", err)
					}
					second := issuedParams(ca.ID)
					second.Serial = first.Serial
					return q.InsertIssuedCertificate(t.Context(), second)
				})
			},
			want:       store.ErrConflict,
			constraint: "issued_certificates_pkey",
			table:      "issued_certificates",
		},
		// Values PostgreSQL cannot hold are ErrInvalid (InvalidArgument), not an
		// internal error.
		"\\u0000 in jsonb": {
			run: func(t *testing.T, s *store.Store) error {
				_, err := s.Q().InsertDevice(t.Context(), deviceParams(func(p *dbsqlc.InsertDeviceParams) { p.Labels = []byte(`{"a":"\u0000"}`) }))
				return err
			},
			want: store.ErrInvalid,
		},
		"a NUL byte in text": {
			run: func(t *testing.T, s *store.Store) error {
				_, err := s.Q().InsertDevice(t.Context(), deviceParams(func(p *dbsqlc.InsertDeviceParams) { p.Name = "a\x00b" }))
				return err
			},
			want: store.ErrInvalid,
		},
		"missing row inside InTx": {
			run: func(t *testing.T, s *store.Store) error {
				return s.InTx(t.Context(), func(tx *store.Tx) error {
					q := tx.Q()
					_, err := q.GetActiveAuthority(t.Context())
					return err
				})
			},
			want: store.ErrNotFound,
		},
	}
	sentinels := []error{store.ErrNotFound, store.ErrConflict, store.ErrReferenced, store.ErrInvalid, store.ErrUnavailable}

	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			err := tc.run(t, b.store)
			if err == nil {
				t.Fatalf("no error, want %v", tc.want)
			}
			for _, s := range sentinels {
				if got, want := errors.Is(err, s), s == tc.want; got != want {
					t.Errorf("errors.Is(%v, %v) = %v, want %v", err, s, got, want)
				}
			}
			var ce *store.ConstraintError
			if tc.constraint == "" {
				if errors.As(err, &ce) {
					t.Errorf("error %v is a ConstraintError, want none", err)
				}
				return
			}
			if !errors.As(err, &ce) {
				t.Fatalf("error %v (%T) is not a *store.ConstraintError", err, err)
			}
			if ce.Constraint != tc.constraint || ce.Table != tc.table {
				t.Errorf("ConstraintError names %q on %q, want %q on %q", ce.Constraint, ce.Table, tc.constraint, tc.table)
			}
			// The PostgreSQL error stays in the chain for whoever needs its details.
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.ConstraintName != ce.Constraint && pgErr.ColumnName != ce.Constraint {
				t.Errorf("the PostgreSQL error is not in the chain of %v", err)
			}
		})
	}
}

// deviceParams are the parameters of a valid device, changed by change.
func deviceParams(change func(p *dbsqlc.InsertDeviceParams)) dbsqlc.InsertDeviceParams {
	p := dbsqlc.InsertDeviceParams{
		ID: ulid.Make().String(), Name: "node", Platform: "linux/amd64", AgentVersion: "test", Labels: []byte("{}"),
		PublicKeyFingerprint: "sha256:" + strings.Repeat("ab", 32), Now: time.Now(),
	}
	change(&p)
	return p
}

// After a skipped second InsertAuthority, the first authority is still the only row.
func TestInsertAuthorityKeepsTheFirst(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	first, err := b.q.InsertAuthority(ctx, authorityParams())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.q.InsertAuthority(ctx, authorityParams()); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second insert: %v, want ErrNotFound", err)
	}
	active, err := b.q.GetActiveAuthority(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if active.ID != first.ID || active.Fingerprint != first.Fingerprint {
		t.Errorf("active authority is %s, want the first %s", active.ID, first.ID)
	}
	var n int
	if err := b.store.Pool().QueryRow(ctx, "select count(*) from certificate_authorities").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("%d authorities, want 1", n)
	}
}

// A cancelled context comes back as the context's error, not as a store sentinel.
func TestContextErrorsPassThrough(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := b.q.GetActiveAuthority(ctx)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
	if errors.Is(err, store.ErrUnavailable) || errors.Is(err, store.ErrNotFound) {
		t.Errorf("error %v also matches a store sentinel", err)
	}
}

var errTestAbort = errors.New("test: abort the transaction")

func TestInTx(t *testing.T) {
	t.Parallel()

	t.Run("error rolls back and is returned unchanged", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ctx := t.Context()
		var inserted dbsqlc.CertificateAuthority
		err := b.store.InTx(ctx, func(tx *store.Tx) error {
			q := tx.Q()
			var err error
			if inserted, err = q.InsertAuthority(ctx, authorityParams()); err != nil {
				t.Fatalf("insert: %v", err)
			}
			// Visible inside the transaction...
			if got, err := q.GetActiveAuthority(ctx); err != nil || got.ID != inserted.ID {
				t.Fatalf("inside the transaction: %v, %v", got.ID, err)
			}
			return errTestAbort
		})
		if err != errTestAbort { //nolint:errorlint // "unchanged" means the very same value
			t.Fatalf("InTx returned %v, want the error of fn itself", err)
		}
		// ...and gone after the rollback.
		if _, err := b.q.GetActiveAuthority(ctx); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("after rollback: %v, want ErrNotFound", err)
		}
	})

	t.Run("failed statement rolls back the earlier ones", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ctx := t.Context()
		err := b.store.InTx(ctx, func(tx *store.Tx) error {
			q := tx.Q()
			if _, err := q.InsertAuthority(ctx, authorityParams()); err != nil {
				t.Fatalf("insert: %v", err)
			}
			return q.InsertIssuedCertificate(ctx, issuedParams(ulid.Make().String()))
		})
		if !errors.Is(err, store.ErrReferenced) {
			t.Fatalf("InTx returned %v, want ErrReferenced", err)
		}
		if _, err := b.q.GetActiveAuthority(ctx); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("after rollback: %v, want ErrNotFound", err)
		}
	})

	t.Run("success commits", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ctx := t.Context()
		var ca dbsqlc.CertificateAuthority
		cert := issuedParams("")
		err := b.store.InTx(ctx, func(tx *store.Tx) error {
			q := tx.Q()
			var err error
			if ca, err = q.InsertAuthority(ctx, authorityParams()); err != nil {
				return err
			}
			cert.AuthorityID = ca.ID
			return q.InsertIssuedCertificate(ctx, cert)
		})
		if err != nil {
			t.Fatalf("InTx: %v", err)
		}
		got, err := b.q.GetActiveAuthority(ctx)
		if err != nil || got.ID != ca.ID {
			t.Errorf("after commit: authority %q, %v; want %q", got.ID, err, ca.ID)
		}
		row, err := b.q.GetIssuedCertificate(ctx, cert.Fingerprint)
		if err != nil || row.Serial != cert.Serial || row.AuthorityID != ca.ID {
			t.Errorf("after commit: certificate %+v, %v; want serial %s of %s", row, err, cert.Serial, ca.ID)
		}
	})

	t.Run("cancelled context does not begin", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		called := false
		err := b.store.InTx(ctx, func(*store.Tx) error { called = true; return nil })
		if !errors.Is(err, context.Canceled) {
			t.Errorf("InTx = %v, want context.Canceled", err)
		}
		if called {
			t.Error("fn ran although the transaction could not begin")
		}
	})
}

func TestOpenRejectsMalformedURL(t *testing.T) {
	t.Parallel()
	const password = "hunter2-Sup3rSecret"
	cases := map[string]string{
		"port is not a number":  "postgres://palyra:" + password + "@localhost:notaport/palyra",
		"unclosed IPv6 bracket": "postgres://palyra:" + password + "@[::1/palyra",
		"unknown sslmode":       "postgres://palyra:" + password + "@localhost/palyra?sslmode=sometimes",
		"keyword/value garbage": "host=localhost password=" + password + " port=notaport",
	}
	for name, url := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s, err := store.Open(t.Context(), store.Options{URL: url})
			if err == nil {
				s.Close()
				t.Fatal("Open accepted a malformed URL")
			}
			if !errors.Is(err, store.ErrInvalidURL) {
				t.Errorf("error %v, want ErrInvalidURL", err)
			}
			if strings.Contains(err.Error(), password) {
				t.Errorf("error %q reveals the password", err)
			}
		})
	}
}

func TestOpenUnreachable(t *testing.T) {
	t.Parallel()
	const password = "hunter2-Sup3rSecret"
	// Nothing listens on port 1 of the loopback interface: the connection is refused.
	s, err := store.Open(t.Context(), store.Options{
		URL: "postgres://palyra:" + password + "@127.0.0.1:1/palyra?sslmode=disable&connect_timeout=5",
	})
	if err == nil {
		s.Close()
		t.Fatal("Open succeeded against a closed port")
	}
	if !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("error %v, want ErrUnavailable", err)
	}
	if strings.Contains(err.Error(), password) {
		t.Errorf("error %q reveals the password", err)
	}
}

func TestPing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	h, err := b.store.Ping(ctx)
	if err != nil {
		t.Fatalf("ping: %v", err)
	}
	var want string
	if err := b.store.Pool().QueryRow(ctx, "show server_version").Scan(&want); err != nil {
		t.Fatal(err)
	}
	if h.ServerVersion == "" || h.ServerVersion != want {
		t.Errorf("Ping reports server version %q, SHOW server_version says %q", h.ServerVersion, want)
	}
	if h.Latency < 0 {
		t.Errorf("negative latency %v", h.Latency)
	}
}

// The pool identifies itself to the server, so that an operator can tell palyrad's
// connections apart in pg_stat_activity.
func TestOpenSetsApplicationName(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var name string
	if err := b.store.Pool().QueryRow(t.Context(), "select current_setting('application_name')").Scan(&name); err != nil {
		t.Fatal(err)
	}
	if name != "palyrad" {
		t.Errorf("application_name = %q, want palyrad", name)
	}
}

// TestLossyWritesAreVisibleAtOnce writes through the lossy pool and reads through the
// ordinary one: a commit that does not wait for the disk is still a commit.
func TestLossyWritesAreVisibleAtOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := ulid.Make().String()
	if _, err := b.store.Lossy().InsertUserIfMissing(t.Context(), dbsqlc.InsertUserIfMissingParams{ID: id, Name: "lossy-" + id, Role: "operator"}); err != nil {
		t.Fatal(err)
	}
	u, err := b.q.GetUserByName(t.Context(), "lossy-"+id)
	if err != nil || u.ID != id {
		t.Fatalf("the lossy write read back: %v, %v", u, err)
	}
}
