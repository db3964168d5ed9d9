package labels

import (
	"errors"
	"strings"
	"testing"
)

func TestParseAndMatch(t *testing.T) {
	t.Parallel()
	gpu := map[string]string{"gpu": "a100", "zone": "eu-1", "example.com/tier": "prod", "empty": ""}
	cpu := map[string]string{"zone": "us-2"}
	none := map[string]string{}
	for _, tc := range []struct {
		in, canonical string
		gpu, cpu      bool // whether the selector matches gpu, cpu
		none          bool // and no labels at all
	}{
		{"", "", true, true, true},
		{"   ", "", true, true, true},
		{"gpu=a100", "gpu=a100", true, false, false},
		{"gpu==a100", "gpu=a100", true, false, false},
		{" gpu = a100 ", "gpu=a100", true, false, false},
		{"gpu!=a100", "gpu!=a100", false, true, true},
		{"gpu!=t4", "gpu!=t4", true, true, true},
		{"gpu", "gpu", true, false, false},
		{"!gpu", "!gpu", false, true, true},
		{"! gpu", "!gpu", false, true, true},
		{"empty", "empty", true, false, false},
		{"empty=", "empty=", true, false, false},
		{"gpu=", "gpu=", false, false, false},
		{"zone in (eu-1,us-2)", "zone in (eu-1,us-2)", true, true, false},
		{"zone in(us-2, eu-1, eu-1)", "zone in (eu-1,us-2)", true, true, false},
		{"zone notin (eu-1)", "zone notin (eu-1)", false, true, true},
		{"zone notin (ap-1,eu-1)", "zone notin (ap-1,eu-1)", false, true, true},
		{"gpu,zone=eu-1", "gpu,zone=eu-1", true, false, false},
		{"gpu, zone=us-2", "gpu,zone=us-2", false, false, false},
		{"example.com/tier=prod,!spot", "example.com/tier=prod,!spot", true, false, false},
		{"zone=eu-1,zone!=eu-1", "zone=eu-1,zone!=eu-1", false, false, false},
		{"in", "in", false, false, false},
		{"in in (x)", "in in (x)", false, false, false},
		{"v=1.2:3@a+b/c_d", "v=1.2:3@a+b/c_d", false, false, false},
		{"Zone=EU", "Zone=EU", false, false, false},
	} {
		sel, err := Parse(tc.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.in, err)
			continue
		}
		if got := sel.String(); got != tc.canonical {
			t.Errorf("Parse(%q).String() = %q, want %q", tc.in, got, tc.canonical)
		}
		if again, err := Parse(sel.String()); err != nil || again.String() != sel.String() {
			t.Errorf("Parse(%q) again: %q %v", sel.String(), again.String(), err)
		}
		if sel.Empty() != (tc.canonical == "") {
			t.Errorf("Parse(%q).Empty() = %v", tc.in, sel.Empty())
		}
		for _, m := range []struct {
			name   string
			labels map[string]string
			want   bool
		}{{"gpu", gpu, tc.gpu}, {"cpu", cpu, tc.cpu}, {"none", none, tc.none}, {"nil", nil, tc.none}} {
			if got := sel.Matches(m.labels); got != m.want {
				t.Errorf("Parse(%q).Matches(%s) = %v, want %v", tc.in, m.name, got, m.want)
			}
		}
	}
}

func TestParseErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in  string
		pos int
		msg string
	}{
		{",", 1, `want a key, found ","`},
		{"a,", 3, `want a requirement after ",", found the end`},
		{"a,,b", 3, `want a key, found ","`},
		{"a b", 3, `want "=", "==", "!=", "in", "notin", "," or the end after the key "a", found "b"`},
		{"a=b c", 5, `want "," between requirements, found "c"`},
		{"a=(b)", 3, `want a value`},
		{"a=b=c", 4, `want "," between requirements, found "="`},
		{"!", 2, "want a key, found the end"},
		{"!a=b", 3, `want "," between requirements, found "="`},
		{"a in b", 6, `want "(" after "in", found "b"`},
		{"a in", 5, `want "(" after "in", found the end`},
		{"a notin ()", 10, "notin needs at least one value"},
		{"a in (b", 8, `want "," or ")" in the values of in, found the end`},
		{"a in (b c)", 9, `want "," or ")" in the values of in, found "c"`},
		{"a in (b=c)", 8, `want "," or ")"`},
		{"a inn (b)", 3, `found "inn"`},
		{"-a=b", 1, `the key "-a" must be letters`},
		{"a.=b", 1, `the key "a." must be letters`},
		{"a:b=c", 1, `the key "a:b" must be letters`},
		{"a=b\u00e9", 4, `want "," between requirements`},
		{"a=" + strings.Repeat("v", 256), 3, "the value is longer than 255 bytes"},
		{strings.Repeat("k", 254), 1, "the key is longer than 253 bytes"},
		{strings.Repeat("a,", 2049), 4097, "the selector is longer than 4096 bytes"},
		{"a\n", 2, `want "=", "==", "!=", "in", "notin", "," or the end after the key "a", found "\n"`},
	} {
		_, err := Parse(tc.in)
		var se *SyntaxError
		if !errors.As(err, &se) {
			t.Errorf("Parse(%q): %v, want a SyntaxError", tc.in, err)
			continue
		}
		if se.Pos != tc.pos || !strings.Contains(se.Msg, tc.msg) || !strings.HasPrefix(err.Error(), "at position ") {
			t.Errorf("Parse(%q): %q at %d, want %q at %d", tc.in, se.Msg, se.Pos, tc.msg, tc.pos)
		}
	}
}

func TestEffectiveGivenWin(t *testing.T) {
	t.Parallel()
	given := map[string]string{"tier": "prod"}
	reported := map[string]string{"tier": "spot", "zone": "eu"}
	got := Effective(given, reported)
	if len(got) != 2 || got["tier"] != "prod" || got["zone"] != "eu" {
		t.Errorf("Effective = %v, want tier=prod (given) and zone=eu (reported)", got)
	}
	if reported["tier"] != "spot" || len(given) != 1 {
		t.Errorf("Effective changed its arguments: given %v, reported %v", given, reported)
	}
	sel, err := Parse("tier=spot")
	if err != nil {
		t.Fatal(err)
	}
	if sel.Matches(got) {
		t.Error("a selector matched the label a node reported over the one it was given")
	}
	if got := Effective(nil, nil); got == nil || len(got) != 0 {
		t.Errorf("Effective(nil, nil) = %#v, want an empty map", got)
	}
}

// TestPage pages through items read a few at a time, skipping those the selector does
// not match, and ends with no next key exactly when nothing more matches.
func TestPage(t *testing.T) {
	t.Parallel()
	type item struct {
		key  string
		team string
	}
	var items []item
	for i, team := range []string{"web", "ops", "web", "ops", "ops", "web", "ops"} {
		items = append(items, item{key: string(rune('a' + i)), team: team})
	}
	read := func(after string, limit int) ([]item, bool, error) {
		var out []item
		for _, it := range items {
			if it.key > after && len(out) < limit {
				out = append(out, it)
			}
		}
		return out, len(out) == limit, nil
	}
	sel, err := Parse("team=web")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	after := ""
	for pages := 0; ; pages++ {
		page, next, err := Page(sel, 1, after, func(it item) string { return it.key },
			func(it item) map[string]string { return map[string]string{"team": it.team} }, read)
		if err != nil || pages > len(items) {
			t.Fatalf("page %d: %v", pages, err)
		}
		for _, it := range page {
			got = append(got, it.key)
		}
		if next == "" {
			break
		}
		after = next
	}
	if strings.Join(got, ",") != "a,c,f" {
		t.Errorf("pages of team=web: %q", got)
	}
	if _, _, err := Page(sel, 2, "", func(it item) string { return it.key }, func(item) map[string]string { return nil },
		func(string, int) ([]item, bool, error) { return nil, false, errors.New("down") }); err == nil {
		t.Error("a read's error is not returned")
	}
}
