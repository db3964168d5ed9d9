package compat

import (
	"context"
	"encoding/json"
	"io"
	"regexp"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"
)

// EchoModel is the model palyrad serves itself, for smoke tests, when compat.models
// lists it.
const EchoModel = "palyra-echo"

// echoWords splits an answer into its words, each with the white space before it, so
// that the pieces joined are the answer exactly.
var echoWords = regexp.MustCompile(`\s*\S+|\s+$`)

// echo is palyra-echo's provider: it answers with the text of the last user message,
// streamed word by word. Its token counts are word counts: prompt_tokens the words of
// all messages, completion_tokens those of the answer.
type echo struct{ now func() time.Time }

// answer is the echo's answer to req, in pieces, and its usage.
func (e echo) answer(req *ChatRequest) ([]string, *Usage) {
	var prompt int64
	for _, m := range req.Messages {
		prompt += int64(len(strings.Fields(m.Text)))
	}
	text := req.lastUserText()
	words := echoWords.FindAllString(text, -1)
	n := int64(len(strings.Fields(text)))
	return words, &Usage{PromptTokens: prompt, CompletionTokens: n, TotalTokens: prompt + n}
}

// Chat implements Provider.
func (e echo) Chat(_ context.Context, req *ChatRequest, model string) (*Completion, error) {
	words, usage := e.answer(req)
	body, err := completionBody("chatcmpl-"+ulid.Make().String(), e.now().Unix(), model, strings.Join(words, ""), usage)
	if err != nil {
		return nil, err
	}
	return &Completion{Body: body, Usage: usage}, nil
}

// completionBody is a chat.completion object answering text.
func completionBody(id string, created int64, model, text string, usage *Usage) ([]byte, error) {
	type message struct {
		Role    string  `json:"role"`
		Content string  `json:"content"`
		Refusal *string `json:"refusal"`
	}
	type choice struct {
		Index        int             `json:"index"`
		Message      message         `json:"message"`
		Logprobs     json.RawMessage `json:"logprobs"`
		FinishReason string          `json:"finish_reason"`
	}
	return json.Marshal(struct {
		ID      string   `json:"id"`
		Object  string   `json:"object"`
		Created int64    `json:"created"`
		Model   string   `json:"model"`
		Choices []choice `json:"choices"`
		Usage   *Usage   `json:"usage"`
	}{id, "chat.completion", created, model,
		[]choice{{Message: message{Role: "assistant", Content: text}, Logprobs: json.RawMessage("null"), FinishReason: "stop"}}, usage})
}

// StreamChat implements Provider: a first chunk with the role, one chunk per word, a
// last one with finish_reason "stop", then the usage chunk.
func (e echo) StreamChat(_ context.Context, req *ChatRequest, model string) (ChunkStream, error) {
	words, usage := e.answer(req)
	return &echoStream{id: "chatcmpl-" + ulid.Make().String(), created: e.now().Unix(), model: model, words: words, usage: usage}, nil
}

// echoStream makes the echo's chunks one at a time.
type echoStream struct {
	id      string
	created int64
	model   string
	words   []string
	usage   *Usage
	step    int
}

type echoDelta struct {
	Role    string  `json:"role,omitempty"`
	Content *string `json:"content,omitempty"`
}

type echoChoice struct {
	Index        int       `json:"index"`
	Delta        echoDelta `json:"delta"`
	FinishReason *string   `json:"finish_reason"`
}

// Next implements ChunkStream.
func (s *echoStream) Next() ([]byte, error) {
	step := s.step
	s.step++
	choices := []echoChoice{{}}
	var usage *Usage
	switch {
	case step == 0:
		empty := ""
		choices[0].Delta = echoDelta{Role: "assistant", Content: &empty}
	case step <= len(s.words):
		choices[0].Delta = echoDelta{Content: &s.words[step-1]}
	case step == len(s.words)+1:
		stop := "stop"
		choices[0].FinishReason = &stop
	case step == len(s.words)+2:
		choices, usage = []echoChoice{}, s.usage
	default:
		return nil, io.EOF
	}
	return json.Marshal(struct {
		ID      string       `json:"id"`
		Object  string       `json:"object"`
		Created int64        `json:"created"`
		Model   string       `json:"model"`
		Choices []echoChoice `json:"choices"`
		Usage   *Usage       `json:"usage,omitempty"`
	}{s.id, "chat.completion.chunk", s.created, s.model, choices, usage})
}

// Close implements ChunkStream.
func (s *echoStream) Close() error { return nil }
