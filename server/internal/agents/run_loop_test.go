package agents

import (
	"errors"
	"strings"
	"testing"
)

// TestChunkAccumulator puts a streamed completion together: text pieces, and tool calls
// whose id and name come first and whose arguments come in pieces, by index.
func TestChunkAccumulator(t *testing.T) {
	t.Parallel()
	var a chunkAccumulator
	for _, c := range []string{
		`{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}`,
		`{"choices":[{"index":0,"delta":{"content":"Let me "}}]}`,
		`{"choices":[{"index":0,"delta":{"content":"look."}}]}`,
		`{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"system_info","arguments":"{\"x\":"}}]}}]}`,
		`{"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_b","type":"function","function":{"name":"shell_execute","arguments":""}}]}}]}`,
		`{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"1}"}}]}}]}`,
		`{"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"arguments":"{}"}}]}}]}`,
		`{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}`,
		`{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}`,
		`not json`,
	} {
		a.add([]byte(c))
	}
	turn := a.turn()
	if turn.text != "Let me look." || a.finish != "tool_calls" || len(turn.toolCalls) != 2 ||
		turn.toolCalls[0] != (toolCall{ID: "call_a", Name: "system_info", Arguments: `{"x":1}`}) ||
		turn.toolCalls[1] != (toolCall{ID: "call_b", Name: "shell_execute", Arguments: "{}"}) {
		t.Errorf("turn: %+v, finish %q", turn, a.finish)
	}
}

// TestParseArguments takes the node_id a model names out of a call's arguments, and
// refuses arguments that are not a JSON object.
func TestParseArguments(t *testing.T) {
	t.Parallel()
	for raw, want := range map[string]struct{ args, node string }{
		"":                                   {"{}", ""},
		`{"argv":["id"]}`:                    {`{"argv":["id"]}`, ""},
		`{"argv":["id"],"node_id":"N1"}`:     {`{"argv":["id"]}`, "N1"},
		`{"n":12345678901234567890}`:         {`{"n":12345678901234567890}`, ""},
		`  {"node_id":"N2"}  `:               {`{}`, "N2"},
		`{"nested":{"node_id":"kept"}}`:      {`{"nested":{"node_id":"kept"}}`, ""},
		`{"argv":["a"],"extra":[1,{"b":2}]}`: {`{"argv":["a"],"extra":[1,{"b":2}]}`, ""},
	} {
		args, node, err := parseArguments(raw, "")
		if err != nil || string(args) != want.args || node != want.node {
			t.Errorf("parseArguments(%q) = %s, %q, %v; want %s, %q", raw, args, node, err, want.args, want.node)
		}
	}
	for _, raw := range []string{`[1]`, `"x"`, `{"node_id":7}`, `{"a":`, `null`} {
		var r *refusal
		if _, _, err := parseArguments(raw, ""); !errors.As(err, &r) || r.outcome != "refused" {
			t.Errorf("parseArguments(%q): %v, want a refusal", raw, err)
		}
	}

	// A browser tool's profile is set; a model that names one, even the same, is refused.
	args, node, err := parseArguments(`{"url":"https://a.example/","node_id":"N3"}`, "shop")
	if err != nil || string(args) != `{"profile":"shop","url":"https://a.example/"}` || node != "N3" {
		t.Errorf("parseArguments with profile shop = %s, %q, %v", args, node, err)
	}
	for _, raw := range []string{`{"url":"https://a.example/","profile":"bank"}`, `{"profile":"shop"}`, `{"profile":null}`} {
		var r *refusal
		if _, _, err := parseArguments(raw, "shop"); !errors.As(err, &r) || r.outcome != "refused" || !strings.Contains(r.message, `give no "profile"`) {
			t.Errorf("parseArguments(%q, shop): %v, want a refusal", raw, err)
		}
	}
}
