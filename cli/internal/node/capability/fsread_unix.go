//go:build unix

package capability

import "syscall"

// readOpenFlags are added to O_RDONLY when filesystem.read opens a file: O_NONBLOCK so
// that a FIFO swapped in after the check cannot block the open (the file is refused
// right after, as it is not regular), O_NOFOLLOW on the last component (os.Root adds it
// too).
const readOpenFlags = syscall.O_NONBLOCK | syscall.O_NOFOLLOW
