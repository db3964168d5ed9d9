package errdefs_test

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/palyra/palyra/server/internal/errdefs"
)

// TestKindOf checks that the kind is found through wrapping, and that an error of no
// kind is Internal.
func TestKindOf(t *testing.T) {
	sentinel := errdefs.New(errdefs.NotFound, "no such thing")
	for err, want := range map[error]errdefs.Kind{
		fmt.Errorf("a: %w", fmt.Errorf("b: %w", sentinel)):                  errdefs.NotFound,
		errdefs.Wrap(sentinel, errdefs.FailedPrecondition, "outer decides"): errdefs.FailedPrecondition,
		errors.New("plain"): errdefs.Internal,
		nil:                 errdefs.Internal,
	} {
		if got := errdefs.KindOf(err); got != want {
			t.Errorf("KindOf(%v) = %s, want %s", err, got, want)
		}
	}
	if wrapped := errdefs.Wrap(sentinel, errdefs.NotFound, "thing x"); !errors.Is(wrapped, sentinel) || wrapped.Error() != "thing x" {
		t.Errorf("Wrap: errors.Is %v, text %q: the cause must match and not show", errors.Is(wrapped, sentinel), wrapped.Error())
	}
}

// TestFields checks the text and the violations of errors about request fields.
func TestFields(t *testing.T) {
	one := errdefs.InvalidField("name", "must not be %s", "empty")
	if one.Error() != "name: must not be empty" || one.Kind != errdefs.Invalid {
		t.Errorf("InvalidField: %s %q", one.Kind, one.Error())
	}
	if got := one.FieldViolations(); !slices.Equal(got, []errdefs.Violation{{Field: "name", Description: "must not be empty"}}) {
		t.Errorf("InvalidField violations: %v", got)
	}
	vs := []errdefs.Violation{{Field: "a[0]", Description: "bad"}, {Field: "a[3]", Description: "worse"}}
	many := errdefs.InvalidFields(vs...)
	if many.Error() != "a[0]: bad" || !slices.Equal(many.FieldViolations(), vs) {
		t.Errorf("InvalidFields: %q %v", many.Error(), many.FieldViolations())
	}
	if got := errdefs.New(errdefs.Conflict, "exists").FieldViolations(); got != nil {
		t.Errorf("no field: violations %v", got)
	}
}

// TestKindString checks the names of the kinds, which logs and other edges show.
func TestKindString(t *testing.T) {
	if errdefs.Invalid.String() != "invalid" || errdefs.Unavailable.String() != "unavailable" || errdefs.DataLoss.String() != "data_loss" || errdefs.Kind(200).String() != "kind(200)" {
		t.Errorf("names: %s %s %s", errdefs.Invalid, errdefs.Unavailable, errdefs.Kind(200))
	}
}
