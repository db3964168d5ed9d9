package capability

import (
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
)

// Limits of a Descriptor; they match palyra.node.v1.Capability, so that a hello built
// from a registry is never refused for its capabilities.
const (
	// MaxNameLen is the longest capability name.
	MaxNameLen = 128
	// MaxDescriptionLen is the longest description.
	MaxDescriptionLen = 512
	// MaxSchemaLen is the longest input schema.
	MaxSchemaLen = 65536
	// MaxCapabilities is the most capabilities a registry holds.
	MaxCapabilities = 256
	// MaxModels is the most models a capability announces.
	MaxModels = 256
	// MaxModelNameLen is the longest model name.
	MaxModelNameLen = 128
)

// modelNamePattern is what an announced model name looks like (palyra.node.v1.Capability
// models): slash-separated segments of letters, digits and ".:_@+-", each starting with
// a letter or digit, e.g. "llama3.1:8b" or "qwen/qwen2.5-7b-instruct". No segment is
// "." or "..".
var modelNamePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:@+-]*(/[A-Za-z0-9][A-Za-z0-9._:@+-]*)*$`)

// checkModelName refuses a model name the hello's validation would refuse.
func checkModelName(name string) error {
	if len(name) > MaxModelNameLen || !modelNamePattern.MatchString(name) {
		return fmt.Errorf("invalid model name %q: want slash-separated segments of letters, digits and \".:_@+-\", "+
			"each starting with a letter or digit, at most %d bytes", name, MaxModelNameLen)
	}
	return nil
}

// namePattern is what a capability name looks like: dot-separated lower-case words,
// e.g. "shell.execute".
var namePattern = regexp.MustCompile(`^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$`)

// Registry holds the capabilities of a node. It is fixed when it is made and safe for
// concurrent use.
type Registry struct {
	byName map[string]Capability
	names  []string // sorted
}

// NewRegistry returns a registry of caps. It refuses a nil capability, an invalid or
// duplicate name, a description or schema too long for the hello, a schema that is not
// a JSON object, and more than MaxCapabilities capabilities.
func NewRegistry(caps ...Capability) (*Registry, error) {
	if len(caps) > MaxCapabilities {
		return nil, fmt.Errorf("capability registry: %d capabilities, at most %d", len(caps), MaxCapabilities)
	}
	r := &Registry{byName: make(map[string]Capability, len(caps))}
	for i, c := range caps {
		if c == nil {
			return nil, fmt.Errorf("capability registry: capability %d is nil", i)
		}
		d := c.Describe()
		if err := checkDescriptor(d); err != nil {
			return nil, fmt.Errorf("capability registry: %w", err)
		}
		if _, dup := r.byName[d.Name]; dup {
			return nil, fmt.Errorf("capability registry: %q registered twice", d.Name)
		}
		r.byName[d.Name] = c
		r.names = append(r.names, d.Name)
	}
	sort.Strings(r.names)
	return r, nil
}

// checkDescriptor checks what the hello's validation would refuse.
func checkDescriptor(d Descriptor) error {
	if len(d.Name) > MaxNameLen || !namePattern.MatchString(d.Name) {
		return fmt.Errorf("invalid capability name %q: want dot-separated lower-case words (%s), at most %d bytes",
			d.Name, namePattern, MaxNameLen)
	}
	if len(d.Description) > MaxDescriptionLen {
		return fmt.Errorf("%s: description of %d bytes, at most %d", d.Name, len(d.Description), MaxDescriptionLen)
	}
	if len(d.Models) > MaxModels {
		return fmt.Errorf("%s: %d models, at most %d", d.Name, len(d.Models), MaxModels)
	}
	seen := map[string]bool{}
	for _, m := range d.Models {
		if err := checkModelName(m); err != nil {
			return fmt.Errorf("%s: %w", d.Name, err)
		}
		if seen[m] {
			return fmt.Errorf("%s: model %q announced twice", d.Name, m)
		}
		seen[m] = true
	}
	if d.InputSchema != nil {
		if len(d.InputSchema) > MaxSchemaLen {
			return fmt.Errorf("%s: input schema of %d bytes, at most %d", d.Name, len(d.InputSchema), MaxSchemaLen)
		}
		var schema map[string]any
		if err := json.Unmarshal(d.InputSchema, &schema); err != nil || schema == nil {
			return fmt.Errorf("%s: the input schema is not a JSON object", d.Name)
		}
	}
	return nil
}

// Lookup returns the capability called name.
func (r *Registry) Lookup(name string) (Capability, bool) {
	c, ok := r.byName[name]
	return c, ok
}

// Descriptors returns the descriptors of every capability, sorted by name. Each is asked
// anew, so a capability's availability is current.
func (r *Registry) Descriptors() []Descriptor {
	ds := make([]Descriptor, 0, len(r.names))
	for _, name := range r.names {
		d := r.byName[name].Describe()
		d.Name = name // the name it was registered under, whatever Describe says now
		ds = append(ds, d)
	}
	return ds
}
