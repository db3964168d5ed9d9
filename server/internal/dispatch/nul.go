package dispatch

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// PostgreSQL's jsonb refuses \u0000 in a string, and text refuses a NUL byte: what
// callers and nodes send is checked before it reaches the database, which would fail
// the whole statement.

// nulString reports whether the JSON value raw holds \u0000 in a string (a key or a
// value), and says where, as "at /argv/1" or "in a key at /env". raw is valid JSON.
func nulString(raw []byte) (where string, found bool) {
	if !bytes.Contains(raw, []byte(`\u0000`)) {
		return "", false // the fast path; a match may still be an escaped backslash
	}
	var v any
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	if err := d.Decode(&v); err != nil {
		return "", false
	}
	return findNUL(v, "")
}

// findNUL walks a decoded JSON value; path is its JSON pointer.
func findNUL(v any, path string) (string, bool) {
	switch v := v.(type) {
	case string:
		if strings.Contains(v, "\x00") {
			return "at " + pointer(path), true
		}
	case []any:
		for i, e := range v {
			if where, ok := findNUL(e, path+"/"+strconv.Itoa(i)); ok {
				return where, true
			}
		}
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			p := path + "/" + strings.NewReplacer("~", "~0", "/", "~1").Replace(k)
			if strings.Contains(k, "\x00") {
				return "in a key at " + pointer(p), true
			}
			if where, ok := findNUL(v[k], p); ok {
				return where, true
			}
		}
	}
	return "", false
}

// pointer quotes a JSON pointer for a message ("" is the whole value).
func pointer(path string) string {
	if path == "" {
		path = "/"
	}
	return fmt.Sprintf("%q", path)
}

// withoutNUL replaces the NUL bytes of s, text a node reported, with U+FFFD.
func withoutNUL(s string) string { return strings.ReplaceAll(s, "\x00", "\uFFFD") }
