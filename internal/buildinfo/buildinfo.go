// Package buildinfo reports which build of Palyra is running. It is shared by palyrad and
// the palyra CLI, so it depends on nothing but the standard library.
package buildinfo

import "runtime/debug"

// version is set at link time by the Makefile:
//
//	-ldflags "-X github.com/palyra/palyra/internal/buildinfo.version=$(git describe ...)"
var version string

// Version returns the build version: the one stamped at link time, else the module
// version Go recorded (for `go install ...@vX`), else "devel".
func Version() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}
