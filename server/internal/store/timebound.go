package store

import "time"

// CeilMicro rounds a bound of a time filter up to a whole microsecond, PostgreSQL's
// precision; nil stays nil. Stored times are whole microseconds, and pgx drops the
// nanoseconds of a parameter, which would move a bound down; rounding up keeps a
// filter exact: a row at T is selected exactly when since <= T < before.
func CeilMicro(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	c := t.Truncate(time.Microsecond)
	if c.Before(*t) {
		c = c.Add(time.Microsecond)
	}
	return &c
}
