package dispatch

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// Capability input schemas come from nodes, so they are untrusted: a schema may not
// refer to any other document (no file or URL is ever read on its behalf), and compiled
// schemas are cached by content, at most maxSchemas of them.
const maxSchemas = 4096

// errExternalRef refuses every $ref to another document.
var errExternalRef = errors.New("references to other documents are not allowed in capability schemas")

// noLoader refuses to load anything.
type noLoader struct{}

// Load implements jsonschema.URLLoader.
func (noLoader) Load(url string) (any, error) { return nil, fmt.Errorf("%w (%s)", errExternalRef, url) }

// schemas compiles and caches input schemas.
type schemas struct {
	mu    sync.Mutex // guards cache
	cache map[[32]byte]*jsonschema.Schema
}

// newSchemas returns an empty cache.
func newSchemas() *schemas { return &schemas{cache: map[[32]byte]*jsonschema.Schema{}} }

// compile compiles a schema given as JSON text.
func (s *schemas) compile(text string) (*jsonschema.Schema, error) {
	key := sha256.Sum256([]byte(text))
	s.mu.Lock()
	if sch, ok := s.cache[key]; ok {
		s.mu.Unlock()
		return sch, nil
	}
	s.mu.Unlock()
	doc, err := jsonschema.UnmarshalJSON(strings.NewReader(text))
	if err != nil {
		return nil, fmt.Errorf("the schema is not JSON: %w", err)
	}
	c := jsonschema.NewCompiler()
	c.UseLoader(noLoader{})
	const loc = "palyra:capability-input"
	if err := c.AddResource(loc, doc); err != nil {
		return nil, fmt.Errorf("the schema is invalid: %w", err)
	}
	sch, err := c.Compile(loc)
	if err != nil {
		return nil, fmt.Errorf("the schema is invalid: %w", err)
	}
	s.mu.Lock()
	if len(s.cache) >= maxSchemas {
		clear(s.cache)
	}
	s.cache[key] = sch
	s.mu.Unlock()
	return sch, nil
}

// validate checks input (JSON text) against a schema (JSON text).
func (s *schemas) validate(schema, input string) error {
	sch, err := s.compile(schema)
	if err != nil {
		return err
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader([]byte(input)))
	if err != nil {
		return fmt.Errorf("the input is not JSON: %w", err)
	}
	if err := sch.Validate(v); err != nil {
		var ve *jsonschema.ValidationError
		if errors.As(err, &ve) {
			return fmt.Errorf("the input does not match the capability's schema: %s", strings.TrimSpace(ve.Error()))
		}
		return err
	}
	return nil
}
