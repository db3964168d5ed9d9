package dispatch

import "testing"

// TestNULString finds \u0000 in keys and values at any depth, says where, and is not
// fooled by an escaped backslash.
func TestNULString(t *testing.T) {
	t.Parallel()
	for input, want := range map[string]string{
		`{"argv":["echo","hi"]}`:            "",
		`{"argv":["echo","\\u0000"]}`:       "",
		`{"argv":["echo","\\\u0000"]}`:      `at "/argv/1"`,
		`"\u0000"`:                          `at "/"`,
		`{"a":{"b/c":[1,{"d":"x\u0000"}]}}`: `at "/a/b~1c/1/d"`,
		`{"k\u0000":true}`:                  `in a key at "/k\x00"`,
		`[0,"u0000",null]`:                  "",
	} {
		where, found := nulString([]byte(input))
		if where != want || found != (want != "") {
			t.Errorf("nulString(%s) = %q, %v; want %q", input, where, found, want)
		}
	}
}
