package store

import (
	"context"
	"regexp"
	"strconv"
	"strings"
	"sync"
)

// A Companion is a statement that must commit together with every change made on
// behalf of a context: the audit outbox row of the call that makes the change (package
// audit). Put it in the context with WithCompanion; the store then adds it to the first
// statement that writes in each transaction run with that context (every statement
// that writes, through the pool, being its own transaction), as a data-modifying WITH
// query of that statement:
//
//	with store_companion as (<companion>) <the statement>
//
// so that the change and the companion commit together, or neither does, at no round
// trip of their own. A statement writes when it is an INSERT, UPDATE, DELETE or MERGE,
// or a WITH query holding one of them (see writes); reads never carry the companion.
type Companion interface {
	// CompanionStatement returns the statement to add, with placeholders $1..$n, and
	// its n arguments; ok is false when nothing needs adding (any more).
	CompanionStatement() (sql string, args []any, ok bool)
	// Committed reports that a transaction holding the statement committed. It may be
	// called more than once, from any goroutine.
	Committed()
}

// companionKey is the context key of the Companion.
type companionKey struct{}

// WithCompanion returns ctx carrying c: the changes made with the returned context
// carry c's statement.
func WithCompanion(ctx context.Context, c Companion) context.Context {
	return context.WithValue(ctx, companionKey{}, c)
}

// WithoutCompanion returns ctx carrying no companion, for writes that must not carry
// the one ctx may carry (the audit log's own).
func WithoutCompanion(ctx context.Context) context.Context {
	return context.WithValue(ctx, companionKey{}, nil)
}

// companionOf returns the companion ctx carries, or nil.
func companionOf(ctx context.Context) Companion {
	c, _ := ctx.Value(companionKey{}).(Companion)
	return c
}

// companionName is the name of the WITH query that holds the companion.
const companionName = "store_companion"

// The statements palyrad runs are a fixed set of constants (gen/dbsqlc): what writes
// and withCompanion make of one is computed once.
var (
	writesCache        sync.Map // sql → bool
	withCompanionCache sync.Map // spliceKey → string
)

// spliceKey is what withCompanion's result depends on.
type spliceKey struct {
	sql, csql string
	n         int
}

// cachedWrites is writes, computed once per statement.
func cachedWrites(sql string) bool {
	if w, ok := writesCache.Load(sql); ok {
		return w.(bool)
	}
	w := writes(sql)
	writesCache.Store(sql, w)
	return w
}

// cachedWithCompanion is withCompanion, computed once per statement and companion.
func cachedWithCompanion(sql string, n int, csql string) string {
	k := spliceKey{sql: sql, csql: csql, n: n}
	if s, ok := withCompanionCache.Load(k); ok {
		return s.(string)
	}
	s := withCompanion(sql, n, csql)
	withCompanionCache.Store(k, s)
	return s
}

// withCompanion returns sql, whose arguments are n, with the companion csql (whose
// placeholders are $1..$k) added as its first WITH query, the companion's placeholders
// renumbered $n+1..$n+k.
func withCompanion(sql string, n int, csql string) string {
	csql = placeholder.ReplaceAllStringFunc(csql, func(p string) string {
		i, _ := strconv.Atoi(p[1:])
		return "$" + strconv.Itoa(i+n)
	})
	head, body := leadingComments(sql)
	cte := companionName + " as (" + csql + ")"
	if rest, ok := cutKeyword(body, "with"); ok {
		if r, ok := cutKeyword(rest, "recursive"); ok {
			return head + "with recursive " + cte + ", " + r
		}
		return head + "with " + cte + ", " + rest
	}
	return head + "with " + cte + " " + body
}

// placeholder matches a positional parameter.
var placeholder = regexp.MustCompile(`\$[0-9]+`)

// leadingComments splits sql into its leading blank space and -- comment lines (sqlc
// starts every query with "-- name: ...") and the statement.
func leadingComments(sql string) (head, body string) {
	i := 0
	for i < len(sql) {
		switch {
		case sql[i] == ' ' || sql[i] == '\t' || sql[i] == '\n' || sql[i] == '\r':
			i++
		case strings.HasPrefix(sql[i:], "--"):
			end := strings.IndexByte(sql[i:], '\n')
			if end < 0 {
				return sql, ""
			}
			i += end + 1
		default:
			return sql[:i], sql[i:]
		}
	}
	return sql, ""
}

// cutKeyword reports whether s starts with the keyword kw (in any case, followed by
// something other than a letter, digit or underscore) and returns what follows it,
// blank space trimmed.
func cutKeyword(s, kw string) (string, bool) {
	if len(s) < len(kw) || !strings.EqualFold(s[:len(kw)], kw) {
		return s, false
	}
	if len(s) > len(kw) && isWordByte(s[len(kw)]) {
		return s, false
	}
	return strings.TrimLeft(s[len(kw):], " \t\r\n"), true
}

func isWordByte(b byte) bool {
	return b == '_' || b >= '0' && b <= '9' || b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z'
}

// writes reports whether sql changes data: an INSERT, UPDATE, DELETE or MERGE, or a
// WITH query holding one (a locking SELECT ... FOR UPDATE does not count). A test
// checks it against PostgreSQL's plan of every query of sqlc/queries.
func writes(sql string) bool {
	_, body := leadingComments(sql)
	words := modifying.FindAllString(strings.ToLower(code(body)), -1)
	if len(words) == 0 {
		return false
	}
	switch words[0] {
	case "insert", "update", "delete", "merge":
		return true
	}
	if _, ok := cutKeyword(body, "with"); !ok {
		return false
	}
	for _, w := range words[1:] {
		if !strings.HasPrefix(w, "for") {
			return true
		}
	}
	return false
}

// modifying matches the words that make a statement write, and the locking clauses
// that share one of them; in a lower-cased statement without literals or comments. The
// first match of a statement that does not start with one of them is its first word.
var modifying = regexp.MustCompile(`^[a-z]+|\bfor\s+(no\s+key\s+)?update\b|\b(insert|update|delete|merge)\b`)

// code returns sql with its string literals, quoted identifiers and comments blanked
// out, so that no word inside them is taken for a keyword.
func code(sql string) string {
	b := []byte(sql)
	for i := 0; i < len(b); i++ {
		var end int
		switch {
		case b[i] == '\'' || b[i] == '"':
			end = i + 1
			for end < len(b) && b[end] != b[i] {
				end++
			}
		case b[i] == '-' && i+1 < len(b) && b[i+1] == '-':
			end = i
			for end < len(b) && b[end] != '\n' {
				end++
			}
		case b[i] == '/' && i+1 < len(b) && b[i+1] == '*':
			end = i + 2
			for end+1 < len(b) && (b[end] != '*' || b[end+1] != '/') {
				end++
			}
			end++
		default:
			continue
		}
		end = min(end, len(b)-1)
		for j := i; j <= end; j++ {
			b[j] = ' '
		}
		i = end
	}
	return string(b)
}
