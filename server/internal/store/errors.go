package store

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// The sentinel errors of the store. Callers match them with errors.Is; the API
// server maps them to Connect codes in one place (apiserver/errors.go).
var (
	// ErrNotFound: the query expected a row and found none.
	ErrNotFound = errors.New("not found")
	// ErrConflict: a unique constraint refused the write.
	ErrConflict = errors.New("conflict")
	// ErrReferenced: a foreign key refused the write (a missing parent, or a child still
	// referring to the row).
	ErrReferenced = errors.New("violates a reference")
	// ErrInvalid: a CHECK or NOT NULL constraint refused the write, or a value the
	// database cannot hold (a NUL character in text or jsonb).
	ErrInvalid = errors.New("violates a constraint")
	// ErrUnavailable: the database could not be reached or is shutting down.
	ErrUnavailable = errors.New("database unavailable")
)

// ConstraintError is a write refused by a named constraint. It matches its sentinel
// (ErrConflict, ErrReferenced or ErrInvalid) with errors.Is.
type ConstraintError struct {
	// Kind is the sentinel.
	Kind error
	// Constraint is the name of the constraint, e.g. "issued_certificates_kind".
	Constraint string
	// Table is the table it belongs to.
	Table string
	pg    *pgconn.PgError
}

// Error implements error.
func (e *ConstraintError) Error() string {
	return fmt.Sprintf("%v: constraint %s on %s", e.Kind, e.Constraint, e.Table)
}

// Is matches the sentinel.
func (e *ConstraintError) Is(target error) bool { return target == e.Kind }

// Unwrap returns the PostgreSQL error.
func (e *ConstraintError) Unwrap() error { return e.pg }

// PostgreSQL error codes (Appendix A of its manual) that the store distinguishes.
const (
	codeUniqueViolation     = "23505"
	codeForeignKeyViolation = "23503"
	codeCheckViolation      = "23514"
	codeNotNullViolation    = "23502"
	codeUntranslatable      = "22P05" // \u0000 in jsonb
	codeNotInRepertoire     = "22021" // a NUL byte in text
	codeAdminShutdown       = "57P01"
	codeCannotConnectNow    = "57P03"
)

// translate turns a pgx error into a store error, keeping the original in the chain.
// Context errors pass through unchanged: callers ask errors.Is(err, context.Canceled).
func translate(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case codeUniqueViolation:
			return &ConstraintError{Kind: ErrConflict, Constraint: pgErr.ConstraintName, Table: pgErr.TableName, pg: pgErr}
		case codeForeignKeyViolation:
			return &ConstraintError{Kind: ErrReferenced, Constraint: pgErr.ConstraintName, Table: pgErr.TableName, pg: pgErr}
		case codeCheckViolation, codeNotNullViolation:
			name := pgErr.ConstraintName
			if name == "" {
				name = pgErr.ColumnName
			}
			return &ConstraintError{Kind: ErrInvalid, Constraint: name, Table: pgErr.TableName, pg: pgErr}
		case codeUntranslatable, codeNotInRepertoire:
			return fmt.Errorf("%w: %w", ErrInvalid, err)
		case codeAdminShutdown, codeCannotConnectNow:
			return fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		return err
	}
	var connectErr *pgconn.ConnectError
	var netErr net.Error
	if errors.As(err, &connectErr) || errors.As(err, &netErr) || pgconn.Timeout(err) {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return err
}
