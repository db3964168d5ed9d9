package compat

import (
	"encoding/json"
	"errors"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/palyra/palyra/server/internal/errdefs"
)

// TestParseResponseRequestTranslates checks how a Responses request becomes the chat
// request that answers it.
func TestParseResponseRequestTranslates(t *testing.T) {
	t.Parallel()
	r, err := ParseResponseRequest([]byte(`{"model":"m","instructions":"be brief","input":[
		{"role":"user","content":"hi"},
		{"type":"message","role":"assistant","content":[{"type":"output_text","text":"hello"}]},
		{"role":"user","content":[{"type":"input_text","text":"how "},{"type":"input_text","text":"are you"}]}],
		"max_output_tokens":9,"reasoning":{"effort":"low"},"store":true,"metadata":{"k":"v"},"tools":[],
		"text":{"format":{"type":"json_schema","name":"s","schema":{"type":"object"},"strict":true}},"temperature":0.2,"x_custom":1}`))
	if err != nil {
		t.Fatal(err)
	}
	want := []Message{{"system", "be brief"}, {"user", "hi"}, {"assistant", "hello"}, {"user", "how are you"}}
	if !slices.Equal(r.chat.Messages, want) || r.Stream || *r.Instructions != "be brief" {
		t.Errorf("messages %v, stream %v", r.chat.Messages, r.Stream)
	}
	f := r.chat.fields
	var format map[string]any
	_ = json.Unmarshal(f["response_format"], &format)
	schema, _ := format["json_schema"].(map[string]any)
	if string(f["max_tokens"]) != "9" || string(f["reasoning_effort"]) != `"low"` || string(f["temperature"]) != "0.2" ||
		string(f["x_custom"]) != "1" || f["store"] != nil || f["metadata"] != nil || f["tools"] != nil || f["max_output_tokens"] != nil ||
		format["type"] != "json_schema" || schema["name"] != "s" || schema["strict"] != true {
		t.Errorf("chat fields: %s", mustJSON(f))
	}
	r, err = ParseResponseRequest([]byte(`{"model":"m","input":"hi","stream":true,"text":{"format":{"type":"text"}}}`))
	if err != nil || !r.chat.Stream || !r.chat.IncludeUsage || r.chat.fields["response_format"] != nil {
		t.Errorf("a stream: %+v, %v", r, err)
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestParseResponseRequestRefusesBadInput(t *testing.T) {
	t.Parallel()
	for body, field := range map[string]string{
		`{"input":"x"}`:                                                             "model",
		`{"model":"m"}`:                                                             "input",
		`{"model":"m","input":""}`:                                                  "input",
		`{"model":"m","input":[]}`:                                                  "input",
		`{"model":"m","input":{"role":"user"}}`:                                     "input",
		`{"model":"m","input":["x"]}`:                                               "input[0]",
		`{"model":"m","input":[{"role":"tool","content":"x"}]}`:                     "input[0].role",
		`{"model":"m","input":[{"type":"reasoning","summary":[]}]}`:                 "input[0].type",
		`{"model":"m","input":[{"role":"user","content":7}]}`:                       "input[0].content",
		`{"model":"m","input":[{"role":"user","content":[{"type":"input_file"}]}]}`: "input[0].content[0].type",
		`{"model":"m","input":[{"role":"user","content":[{"type":"input_text"}]}]}`: "input[0].content[0].text",
		`{"model":"m","input":"x","instructions":3}`:                                "instructions",
		`{"model":"m","input":"x","stream":"yes"}`:                                  "stream",
		`{"model":"m","input":"x","tools":[{"type":"web_search"}]}`:                 "tools",
		`{"model":"m","input":"x","previous_response_id":"resp_1"}`:                 "previous_response_id",
		`{"model":"m","input":"x","background":true}`:                               "background",
		`{"model":"m","input":"x","text":{"format":{"type":"xml"}}}`:                "text.format.type",
		`{"model":"m","input":"x","reasoning":"high"}`:                              "reasoning",
	} {
		_, err := ParseResponseRequest([]byte(body))
		var e *errdefs.Error
		if !errors.As(err, &e) || e.Kind != errdefs.Invalid || e.Field != field {
			t.Errorf("%s: %v, want Invalid naming %s", body, err, field)
		}
	}
}

func TestParseEmbeddingRequest(t *testing.T) {
	t.Parallel()
	for body, n := range map[string]int{
		`{"model":"m","input":"a"}`:                                                      1,
		`{"model":"m","input":["a","b"]}`:                                                2,
		`{"model":"m","input":[1,2,3]}`:                                                  1,
		`{"model":"m","input":[[1],[2,3],"c"]}`:                                          3,
		`{"model":"m","input":"a","dimensions":8,"encoding_format":"base64","user":"u"}`: 1,
	} {
		r, err := ParseEmbeddingRequest([]byte(body))
		if err != nil || len(r.Inputs) != n {
			t.Errorf("%s: %v, %v", body, r, err)
		}
	}
	for body, field := range map[string]string{
		`{"input":"a"}`:                                     "model",
		`{"model":"m"}`:                                     "input",
		`{"model":"m","input":""}`:                          "input",
		`{"model":"m","input":[]}`:                          "input",
		`{"model":"m","input":{}}`:                          "input",
		`{"model":"m","input":["a",""]}`:                    "input[1]",
		`{"model":"m","input":[[1],[]]}`:                    "input[1]",
		`{"model":"m","input":["a",null]}`:                  "input[1]",
		`{"model":"m","input":"a","encoding_format":"hex"}`: "encoding_format",
		`{"model":"m","input":"a","dimensions":-1}`:         "dimensions",
		`{"model":"m","input":"a","dimensions":"8"}`:        "dimensions",
	} {
		_, err := ParseEmbeddingRequest([]byte(body))
		var e *errdefs.Error
		if !errors.As(err, &e) || e.Kind != errdefs.Invalid || e.Field != field {
			t.Errorf("%s: %v, want Invalid naming %s", body, err, field)
		}
	}
}

// TestEchoEmbeddings checks palyra-echo's vectors: unit length, deterministic, one per
// input, of the length asked for.
func TestEchoEmbeddings(t *testing.T) {
	t.Parallel()
	r, err := ParseEmbeddingRequest([]byte(`{"model":"palyra-echo","input":["a b","a b",[1,2],"c"],"dimensions":13}`))
	if err != nil {
		t.Fatal(err)
	}
	e, err := echo{now: time.Now}.Embed(t.Context(), r, EchoModel)
	if err != nil {
		t.Fatal(err)
	}
	if len(e.Vectors) != 4 || e.Usage.PromptTokens != 7 || e.Usage.TotalTokens != 7 {
		t.Fatalf("%d vectors, usage %+v", len(e.Vectors), e.Usage)
	}
	for i, v := range e.Vectors {
		var norm float64
		for _, f := range v {
			norm += float64(f) * float64(f)
		}
		if len(v) != 13 || math.Abs(norm-1) > 1e-5 {
			t.Errorf("vector %d: %d numbers, norm² %v", i, len(v), norm)
		}
	}
	if !slices.Equal(e.Vectors[0], e.Vectors[1]) || slices.Equal(e.Vectors[0], e.Vectors[3]) || slices.Equal(e.Vectors[2], e.Vectors[3]) {
		t.Error("equal inputs have different vectors, or different ones equal vectors")
	}
	r.Dimensions = echoMaxDimensions + 1
	if _, err := (echo{now: time.Now}).Embed(t.Context(), r, EchoModel); errdefs.KindOf(err) != errdefs.Invalid {
		t.Errorf("too many dimensions: %v", err)
	}
}
