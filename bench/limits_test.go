package bench

import (
	"fmt"
	"syscall"
)

// fileLimit is the open-file limit the benchmarks ask for: every attached node holds a
// socket in this process and one in palyrad (which inherits the limit), and 50,000
// nodes is the largest step of BenchmarkIdleNodes the issue asks about.
const fileLimit = 200_000

// raiseFileLimit raises this process's open-file limit (RLIMIT_NOFILE) towards
// fileLimit: the soft limit to the hard one, and the hard one too when the process may
// (root, or CAP_SYS_RESOURCE). It returns the limit in force, and why it is below
// fileLimit when it is.
func raiseFileLimit() (uint64, string) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Sprintf("getrlimit: %v", err)
	}
	if lim.Cur >= fileLimit {
		return lim.Cur, ""
	}
	want := syscall.Rlimit{Cur: fileLimit, Max: max(lim.Max, fileLimit)}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err == nil {
		return want.Cur, ""
	}
	// Not allowed past the hard limit: take all of it.
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Sprintf("setrlimit: %v", err)
	}
	return lim.Cur, fmt.Sprintf("the hard limit is %d and this process may not raise it", lim.Max)
}
