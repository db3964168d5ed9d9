//go:build !unix

package capability

import "errors"

// mkfifo: no FIFOs here (the tests that need one skip first).
func mkfifo(string) error { return errors.New("no FIFOs on this system") }
