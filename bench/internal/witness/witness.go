// Package witness is what the fault suite's dispatches run and what it checks them
// against (bench/faults_test.go): a program that records each run in a file of the
// suite's own, outside the node's state directory, then prints output of a known
// content and size.
//
// The program (bench/cmd/faultwitness) is started by a node's shell.execute as
//
//	faultwitness FILE TOKEN SIZE DELAY_MS
//
// It appends Record(TOKEN, $FAULTS_NODE) to FILE in one write to a file opened with
// O_APPEND (so that the records of concurrent runs never interleave), then writes the
// first half of Output(TOKEN, SIZE) to stdout, sleeps DELAY_MS milliseconds, writes
// the rest and exits 0. A run is thus witnessed before it produces anything, and each
// line of FILE is one start of the program.
package witness

import (
	"bytes"
	"fmt"
	"strings"
)

// NodeEnv is the environment variable that names the node running the program; the
// suite sets it on each node agent, and node.toml passes it through.
const NodeEnv = "FAULTS_NODE"

// Output is what a run prints: TOKEN and a newline, repeated and cut at size bytes.
func Output(token string, size int) []byte {
	line := token + "\n"
	return bytes.Repeat([]byte(line), size/len(line)+1)[:size]
}

// Record is the line a run appends to the witness file.
func Record(token, node string) string {
	return token + " " + node + "\n"
}

// ParseRecord splits a line of the witness file (without its newline) into the token
// and the node.
func ParseRecord(line string) (token, node string, err error) {
	token, node, ok := strings.Cut(line, " ")
	if !ok || token == "" {
		return "", "", fmt.Errorf("malformed witness record %q", line)
	}
	return token, node, nil
}
