//go:build unix

package capability

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// processGroupAttr puts a run's program in a process group of its own, so that its
// children are stopped with it.
func processGroupAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

// terminateGroup sends SIGTERM to the process group that p leads.
func terminateGroup(p *os.Process) error { return signalGroup(p, syscall.SIGTERM) }

// killGroup sends SIGKILL to the process group that p leads.
func killGroup(p *os.Process) error { return signalGroup(p, syscall.SIGKILL) }

// signalGroup signals the process group that p leads; a group that no longer exists is
// not an error. The group keeps p's pid as its id as long as any member lives, even once
// p has been reaped: the kernel does not reuse an id that still names a group. Only once
// the group is empty could the id be reused, and a signal then reach another group, if a
// new process got that pid and made itself a group leader in the moment between p's exit
// and this call.
func signalGroup(p *os.Process, sig syscall.Signal) error {
	err := syscall.Kill(-p.Pid, sig)
	if err == nil || errors.Is(err, syscall.ESRCH) {
		return nil
	}
	return fmt.Errorf("signal %v to process group %d: %w", sig, p.Pid, err)
}

// exitStatus returns how a program ended: its exit status, or 128 plus the number of the
// signal that ended it, and that signal's name.
func exitStatus(ps *os.ProcessState) (code int, signal string) {
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		sig := ws.Signal()
		return 128 + int(sig), signalName(sig)
	}
	return ps.ExitCode(), ""
}

// signalName names the common signals as kill -l does ("SIGTERM"), others by number.
func signalName(sig syscall.Signal) string {
	switch sig {
	case syscall.SIGHUP:
		return "SIGHUP"
	case syscall.SIGINT:
		return "SIGINT"
	case syscall.SIGQUIT:
		return "SIGQUIT"
	case syscall.SIGABRT:
		return "SIGABRT"
	case syscall.SIGKILL:
		return "SIGKILL"
	case syscall.SIGSEGV:
		return "SIGSEGV"
	case syscall.SIGPIPE:
		return "SIGPIPE"
	case syscall.SIGTERM:
		return "SIGTERM"
	}
	return fmt.Sprintf("signal %d", int(sig))
}
