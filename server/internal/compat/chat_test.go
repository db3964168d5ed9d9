package compat

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/palyra/palyra/server/internal/errdefs"
)

func TestParseChatRequestRefusesBadInput(t *testing.T) {
	for body, field := range map[string]string{
		`{"model":"m","messages":[]}`:                                                 "messages",
		`{"model":"m"}`:                                                               "messages",
		`{"model":"m","messages":{"role":"user"}}`:                                    "messages",
		`{"model":"m","messages":[{"role":"wizard","content":"x"}]}`:                  "messages[0].role",
		`{"model":"m","messages":[{"role":"user","content":"x"},"hi"]}`:               "messages[1]",
		`{"model":"m","messages":[{"role":"user","content":7}]}`:                      "messages[0].content",
		`{"model":"m","messages":[{"role":"user","content":"x"}],"n":2}`:              "n",
		`{"model":"m","messages":[{"role":"user","content":"x"}],"stream":1}`:         "stream",
		`{"messages":[{"role":"user","content":"x"}]}`:                                "model",
		`{"model":"","messages":[{"role":"user","content":"x"}]}`:                     "model",
		`{"model":"m","messages":[{"role":"user"}],"stream_options":{}}`:              "stream_options",
		`{"model":"m","messages":[{"role":"user"}],"stream":true,"stream_options":3}`: "stream_options",
	} {
		_, err := ParseChatRequest([]byte(body))
		var e *errdefs.Error
		if !errors.As(err, &e) || e.Kind != errdefs.Invalid || e.Field != field {
			t.Errorf("%s: %v, want Invalid naming %s", body, err, field)
		}
	}
	for _, body := range []string{``, `{`, `[1]`, `null`, `{"model":"m"} {}`, `"x"`} {
		_, err := ParseChatRequest([]byte(body))
		if errdefs.KindOf(err) != errdefs.Invalid {
			t.Errorf("%q: %v, want Invalid", body, err)
		}
	}
}

func TestUpstreamBodyKeepsUnknownFields(t *testing.T) {
	r, err := ParseChatRequest([]byte(`{"model":"alias","stream":true,"messages":[{"role":"user","content":[{"type":"text","text":"a "},{"type":"image_url"},{"type":"text","text":"b"}]}],"tools":[{"type":"function"}],"n":1}`))
	if err != nil {
		t.Fatal(err)
	}
	if r.lastUserText() != "a b" || !r.Stream || r.IncludeUsage {
		t.Errorf("parsed %+v", r)
	}
	body, err := r.upstreamBody("real-model")
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatal(err)
	}
	so, _ := got["stream_options"].(map[string]any)
	if got["model"] != "real-model" || got["tools"] == nil || got["n"] != 1.0 || so["include_usage"] != true {
		t.Errorf("upstream body %s", body)
	}
}

func TestEchoPiecesJoinToTheMessage(t *testing.T) {
	for _, text := range []string{"", "one", "  lead and  trail  ", "a\nb\tc"} {
		r := &ChatRequest{Messages: []Message{{Role: "user", Text: text}}}
		words, usage := echo{}.answer(r)
		joined := ""
		for _, w := range words {
			joined += w
		}
		if joined != text || usage.CompletionTokens != int64(len(strings.Fields(text))) {
			t.Errorf("%q: pieces %q, usage %+v", text, words, usage)
		}
	}
}
