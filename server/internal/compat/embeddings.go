package compat

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"io"
	"math"
	"strconv"
	"strings"
)

const (
	// maxEmbeddingInputs bounds the inputs of one embeddings request, as OpenAI does.
	maxEmbeddingInputs = 2048
	// echoDimensions is the length of palyra-echo's vectors unless dimensions asks for
	// another; echoMaxDimensions bounds what it may ask for.
	echoDimensions    = 256
	echoMaxDimensions = 4096
)

// Embedder is a Provider that also embeds texts: palyra-echo and the upstreams.
type Embedder interface {
	// Embed answers one vector per input, in input order.
	Embed(ctx context.Context, req *EmbeddingRequest, model string) (*Embeddings, error)
}

// EmbeddingRequest is an embeddings request: the JSON the client sent, field by field,
// and what palyrad reads of it.
type EmbeddingRequest struct {
	// Model is the model the client asked for.
	Model string
	// Inputs are the inputs, each a JSON string or a JSON array of token ids.
	Inputs []json.RawMessage
	// Base64 asks for the vectors as base64 (encoding_format: "base64").
	Base64 bool
	// Dimensions is the vectors' length the client asked for, 0 for the model's own.
	Dimensions int
	// fields are the request's fields as sent.
	fields map[string]json.RawMessage
}

// Embeddings are the vectors of a request's inputs and their token counts
// (CompletionTokens 0).
type Embeddings struct {
	Vectors [][]float32
	Usage   *Usage
}

// ParseEmbeddingRequest reads and checks the JSON body of POST /v1/embeddings.
func ParseEmbeddingRequest(body []byte) (*EmbeddingRequest, error) {
	fields, err := parseObject(body)
	if err != nil {
		return nil, err
	}
	return newEmbeddingRequest(fields)
}

// newEmbeddingRequest checks the fields of an embeddings request. input is a string,
// an array of strings, an array of token ids or an array of such arrays, never empty.
func newEmbeddingRequest(fields map[string]json.RawMessage) (*EmbeddingRequest, error) {
	r := &EmbeddingRequest{fields: fields}
	if err := json.Unmarshal(fields["model"], &r.Model); err != nil || r.Model == "" {
		return nil, invalid("model", "must name a model, as a string: GET /v1/models lists them")
	}
	const inputKinds = "must be a string, an array of strings, an array of token ids or an array of token id arrays"
	raw := bytes.TrimSpace(fields["input"])
	var one string
	var tokens []int64
	switch {
	case len(raw) == 0 || string(raw) == "null":
		return nil, invalid("input", "is required: %s", inputKinds)
	case json.Unmarshal(raw, &one) == nil:
		if one == "" {
			return nil, invalid("input", "must not be empty")
		}
		r.Inputs = []json.RawMessage{raw}
	case json.Unmarshal(raw, &tokens) == nil:
		if len(tokens) == 0 {
			return nil, invalid("input", "must hold at least one input")
		}
		r.Inputs = []json.RawMessage{raw}
	default:
		var list []json.RawMessage
		if json.Unmarshal(raw, &list) != nil {
			return nil, invalid("input", "%s", inputKinds)
		}
		if len(list) == 0 || len(list) > maxEmbeddingInputs {
			return nil, invalid("input", "must hold 1 to %d inputs", maxEmbeddingInputs)
		}
		for i, item := range list {
			field := "input[" + strconv.Itoa(i) + "]"
			var s string
			var ids []int64
			if json.Unmarshal(item, &s) == nil && s != "" {
				continue
			}
			if json.Unmarshal(item, &ids) == nil && len(ids) > 0 {
				continue
			}
			return nil, invalid(field, "must be a non-empty string or a non-empty array of token ids")
		}
		r.Inputs = list
	}
	if raw := fields["encoding_format"]; raw != nil && string(raw) != "null" {
		var f string
		if json.Unmarshal(raw, &f) != nil || (f != "float" && f != "base64") {
			return nil, invalid("encoding_format", "must be \"float\" or \"base64\"")
		}
		r.Base64 = f == "base64"
	}
	if raw := fields["dimensions"]; raw != nil && string(raw) != "null" {
		if json.Unmarshal(raw, &r.Dimensions) != nil || r.Dimensions < 1 {
			return nil, invalid("dimensions", "must be a positive integer")
		}
	}
	return r, nil
}

// upstreamBody is the request as an upstream receives it: the client's fields, model
// set to the provider's id, and the vectors asked for as floats (palyrad encodes them
// as the client asked, so upstreams without base64 serve such clients too).
func (r *EmbeddingRequest) upstreamBody(model string) ([]byte, error) {
	fields, err := withModel(r.fields, model)
	if err != nil {
		return nil, err
	}
	fields["encoding_format"] = json.RawMessage(`"float"`)
	return json.Marshal(fields)
}

// embed embeds req's inputs, for both surfaces, once the caller's daily token budget
// is checked; the call's audit target names the model, its provider and the input's
// token count, which is recorded as its usage.
func (h *Handler) embed(ctx context.Context, req *EmbeddingRequest) (*Embeddings, error) {
	if err := h.enabled(ctx, false); err != nil {
		return nil, err
	}
	target(ctx, route{}, req.Model, nil)
	if err := h.checkBudget(ctx); err != nil {
		return nil, err
	}
	r, err := h.route(ctx, req.Model, llmEmbed)
	if err != nil {
		return nil, err
	}
	e, ok := r.provider.(Embedder)
	if !ok {
		return nil, invalid("model", "the model %s does not serve embeddings", quote(req.Model))
	}
	target(ctx, r, req.Model, nil)
	out, err := e.Embed(ctx, req, r.model)
	if err != nil {
		return nil, err
	}
	if len(out.Vectors) != len(req.Inputs) {
		return nil, providerError(r.name, "answered %d embeddings for %d inputs", len(out.Vectors), len(req.Inputs))
	}
	target(ctx, r, req.Model, out.Usage)
	h.record(ctx, r, req.Model, out.Usage)
	return out, nil
}

// embeddingsJSON is OpenAI's embeddings list: each vector as floats, or as the base64
// of its little-endian float32s when the request asked for base64.
func embeddingsJSON(req *EmbeddingRequest, e *Embeddings) ([]byte, error) {
	type embedding struct {
		Object    string `json:"object"`
		Index     int    `json:"index"`
		Embedding any    `json:"embedding"`
	}
	type usage struct {
		PromptTokens int64 `json:"prompt_tokens"`
		TotalTokens  int64 `json:"total_tokens"`
	}
	data := make([]embedding, len(e.Vectors))
	for i, v := range e.Vectors {
		data[i] = embedding{Object: "embedding", Index: i, Embedding: v}
		if req.Base64 {
			b := make([]byte, 0, 4*len(v))
			for _, f := range v {
				b = binary.LittleEndian.AppendUint32(b, math.Float32bits(f))
			}
			data[i].Embedding = base64.StdEncoding.EncodeToString(b)
		}
	}
	var u usage
	if e.Usage != nil {
		u = usage{PromptTokens: e.Usage.PromptTokens, TotalTokens: e.Usage.TotalTokens}
	}
	return json.Marshal(struct {
		Object string      `json:"object"`
		Data   []embedding `json:"data"`
		Model  string      `json:"model"`
		Usage  usage       `json:"usage"`
	}{"list", data, req.Model, u})
}

// Embed implements Embedder: each input's vector is made of the SHA-256 digests of
// the input's text (a token array: its JSON) followed by a block counter, read as
// float32s in [-1, 1) and scaled to unit length; the same input always gives the same
// vector. Its token counts are word counts (token arrays: their length).
func (e echo) Embed(_ context.Context, req *EmbeddingRequest, _ string) (*Embeddings, error) {
	dims := echoDimensions
	if req.Dimensions > 0 {
		dims = req.Dimensions
	}
	if dims > echoMaxDimensions {
		return nil, invalid("dimensions", "must be at most %d for %s", echoMaxDimensions, EchoModel)
	}
	out := &Embeddings{Usage: &Usage{}}
	for _, raw := range req.Inputs {
		text := []byte(raw)
		var s string
		var tokens []int64
		switch {
		case json.Unmarshal(raw, &s) == nil:
			text = []byte(s)
			out.Usage.PromptTokens += int64(len(strings.Fields(s)))
		case json.Unmarshal(raw, &tokens) == nil:
			out.Usage.PromptTokens += int64(len(tokens))
		}
		v := make([]float32, dims)
		var norm float64
		for block := 0; block*8 < dims; block++ {
			digest := sha256.Sum256(binary.BigEndian.AppendUint32(bytes.Clone(text), uint32(block)))
			for j := 0; j < 8 && block*8+j < dims; j++ {
				f := float64(binary.BigEndian.Uint32(digest[4*j:]))/(1<<31) - 1
				v[block*8+j] = float32(f)
				norm += f * f
			}
		}
		norm = math.Sqrt(norm)
		for i := range v {
			v[i] = float32(float64(v[i]) / norm)
		}
		out.Vectors = append(out.Vectors, v)
	}
	out.Usage.TotalTokens = out.Usage.PromptTokens
	return out, nil
}

// Embed implements Embedder: POST <base_url>/embeddings, the vectors asked for as
// floats.
func (u *upstream) Embed(ctx context.Context, req *EmbeddingRequest, model string) (*Embeddings, error) {
	ctx, cancel := context.WithTimeout(ctx, u.cfg.Timeout)
	defer cancel()
	body, err := req.upstreamBody(model)
	if err != nil {
		return nil, err
	}
	res, err := u.post(ctx, "/embeddings", body, false)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(res.Body, maxCompletion+1))
	if err != nil {
		return nil, u.transportError(ctx, err)
	}
	if len(answer) > maxCompletion {
		return nil, providerError(u.name, "answered with embeddings over %d bytes", maxCompletion)
	}
	return embeddingsOf(u.name, answer)
}

// embeddingsOf reads an embeddings list with float vectors that provider answered.
func embeddingsOf(provider string, answer []byte) (*Embeddings, error) {
	var list struct {
		Data []struct {
			Index     int       `json:"index"`
			Embedding []float32 `json:"embedding"`
		} `json:"data"`
		Usage *Usage `json:"usage"`
	}
	if err := json.Unmarshal(answer, &list); err != nil {
		return nil, providerError(provider, "answered with something that is not a list of float embeddings")
	}
	out := &Embeddings{Vectors: make([][]float32, len(list.Data)), Usage: list.Usage}
	for _, d := range list.Data {
		if d.Index < 0 || d.Index >= len(list.Data) || out.Vectors[d.Index] != nil {
			return nil, providerError(provider, "answered embeddings with wrong indexes")
		}
		out.Vectors[d.Index] = d.Embedding
	}
	if out.Usage != nil && out.Usage.TotalTokens == 0 {
		out.Usage.TotalTokens = out.Usage.PromptTokens
	}
	return out, nil
}
