package secretref

import "testing"

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Ref
		ok   bool
	}{
		{"secret:openai", Ref{Name: "openai"}, true},
		{"secret:openai@3", Ref{Name: "openai", Version: 3}, true},
		{"secret:a.b_c-1@12", Ref{Name: "a.b_c-1", Version: 12}, true},
		{"openai", Ref{}, false},
		{"secret:", Ref{}, false},
		{"secret:open ai", Ref{}, false},
		{"secret:a/b", Ref{}, false},
		{"secret:-a", Ref{}, false},
		{"secret:openai@0", Ref{}, false},
		{"secret:openai@-1", Ref{}, false},
		{"secret:openai@", Ref{}, false},
		{"secret:openai@01", Ref{}, false},
		{"secret:openai@1@2", Ref{}, false},
		{"secret:openai@x", Ref{}, false},
	} {
		got, err := Parse(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("Parse(%q) = %+v, %v; want %+v, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
		if tc.ok && got.String() != tc.in {
			t.Errorf("Parse(%q).String() = %q", tc.in, got.String())
		}
	}
}
