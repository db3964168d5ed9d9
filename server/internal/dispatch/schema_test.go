package dispatch

import (
	"strings"
	"testing"
)

func TestSchemas(t *testing.T) {
	t.Parallel()
	const argv = `{"type":"object","required":["argv"],"properties":{"argv":{"type":"array","items":{"type":"string"}}}}`
	for name, tc := range map[string]struct {
		schema, input string
		want          string // a part of the error; "" for none
	}{
		"valid input":        {argv, `{"argv":["echo","hi"]}`, ""},
		"wrong type":         {argv, `{"argv":"echo hi"}`, "does not match"},
		"missing property":   {argv, `{}`, "does not match"},
		"input not JSON":     {argv, `{argv`, "not JSON"},
		"schema not JSON":    {`{`, `{}`, "not JSON"},
		"schema invalid":     {`{"type":12}`, `{}`, "invalid"},
		"file reference":     {`{"$ref":"file:///etc/passwd"}`, `{}`, "not allowed"},
		"http reference":     {`{"$ref":"http://127.0.0.1:1/s.json"}`, `{}`, "not allowed"},
		"internal reference": {`{"$defs":{"s":{"type":"string"}},"$ref":"#/$defs/s"}`, `"x"`, ""},
		"meta-schema stated": {`{"$schema":"https://json-schema.org/draft/2020-12/schema","type":"string"}`, `"x"`, ""},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			err := newSchemas().validate(tc.schema, tc.input)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("validate: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("validate: %v, want an error with %q", err, tc.want)
			}
		})
	}
}

func TestSchemaCacheIsBounded(t *testing.T) {
	t.Parallel()
	s := newSchemas()
	for i := range maxSchemas + 10 {
		if _, err := s.compile(`{"maxLength":` + strings.Repeat("1", 1+i%3) + `,"title":"` + strings.Repeat("x", i) + `"}`); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(s.cache); n > maxSchemas {
		t.Errorf("the cache holds %d schemas, more than %d", n, maxSchemas)
	}
}
