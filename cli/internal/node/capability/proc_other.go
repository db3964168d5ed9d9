//go:build !unix

package capability

import (
	"errors"
	"os"
	"syscall"
)

// processGroupAttr: without process groups, a run's children are not stopped with it.
func processGroupAttr() *syscall.SysProcAttr { return nil }

// terminateGroup kills p: there is no SIGTERM here.
func terminateGroup(p *os.Process) error { return killProcess(p) }

// killGroup kills p.
func killGroup(p *os.Process) error { return killProcess(p) }

func killProcess(p *os.Process) error {
	if err := p.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	return nil
}

// exitStatus returns the program's exit status; no signal ends a program here.
func exitStatus(ps *os.ProcessState) (code int, signal string) { return ps.ExitCode(), "" }
