// Package output prints API responses for the palyra CLI: a human table by default, or
// the protojson form of the response with -o json, for scripts.
package output

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// Format is the value of the -o flag.
type Format string

// The formats.
const (
	Table Format = "table"
	JSON  Format = "json"
)

// String implements pflag.Value.
func (f *Format) String() string { return string(*f) }

// Set implements pflag.Value.
func (f *Format) Set(v string) error {
	switch Format(v) {
	case Table, JSON:
		*f = Format(v)
		return nil
	}
	return fmt.Errorf("must be table or json")
}

// Type implements pflag.Value.
func (f *Format) Type() string { return "table|json" }

// Print writes msg as JSON, or as the table that table writes. Table columns are
// separated by tabs; Print aligns them.
func Print(w io.Writer, f Format, msg proto.Message, table func(w io.Writer)) error {
	if f == JSON {
		b, err := protojson.MarshalOptions{EmitUnpopulated: true}.Marshal(msg)
		if err != nil {
			return fmt.Errorf("encode JSON: %w", err)
		}
		// protojson varies its whitespace on purpose; scripts diff and grep this
		// output, so it is re-indented into one stable form.
		var out bytes.Buffer
		if err := json.Indent(&out, b, "", "  "); err != nil {
			return fmt.Errorf("encode JSON: %w", err)
		}
		out.WriteByte('\n')
		_, err = out.WriteTo(w)
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	table(tw)
	return tw.Flush()
}
