//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package node

import "os"

// lockStateDir cannot lock on this system: it only makes sure the directory exists.
// Run one agent per state directory.
func lockStateDir(s *StateDir) (unlock func(), err error) {
	if err := s.mkdir(); err != nil {
		return nil, err
	}
	return func() {}, nil
}

// processAlive reports whether a process with this id exists, as well as this system
// tells.
func processAlive(pid int) bool {
	p, err := os.FindProcess(pid)
	if err != nil {
		return false
	}
	p.Release()
	return true
}
