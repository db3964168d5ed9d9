// faultwitness is the program the fault suite's dispatches run: it records its start
// in a witness file, then prints output of a known content and size. Package
// bench/internal/witness describes it.
package main

import (
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/palyra/palyra/bench/internal/witness"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "faultwitness:", err)
		os.Exit(2)
	}
}

func run(args []string) error {
	if len(args) != 4 {
		return fmt.Errorf("usage: faultwitness FILE TOKEN SIZE DELAY_MS")
	}
	file, token := args[0], args[1]
	size, err := strconv.Atoi(args[2])
	if err != nil || size < 0 {
		return fmt.Errorf("SIZE %q is not a byte count", args[2])
	}
	delay, err := strconv.Atoi(args[3])
	if err != nil || delay < 0 {
		return fmt.Errorf("DELAY_MS %q is not a number of milliseconds", args[3])
	}
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	// One write of a short line to an O_APPEND file: concurrent runs never interleave.
	if _, err := f.WriteString(witness.Record(token, os.Getenv(witness.NodeEnv))); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	out := witness.Output(token, size)
	if _, err := os.Stdout.Write(out[:size/2]); err != nil {
		return err
	}
	time.Sleep(time.Duration(delay) * time.Millisecond)
	_, err = os.Stdout.Write(out[size/2:])
	return err
}
