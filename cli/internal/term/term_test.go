package term_test

import (
	"os"
	"testing"

	"github.com/palyra/palyra/cli/internal/term"
)

// TestCLINoTerminal checks what scripts give palyra as stdin: /dev/null (a character
// device, but no terminal), a pipe, a file, or nothing.
func TestCLINoTerminal(t *testing.T) {
	t.Parallel()
	null, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	file, err := os.CreateTemp(t.TempDir(), "stdin")
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	for name, f := range map[string]*os.File{"/dev/null": null, "pipe": r, "file": file, "nil": nil} {
		if term.IsTerminal(f) {
			t.Errorf("%s is taken for a terminal", name)
		}
	}
}
