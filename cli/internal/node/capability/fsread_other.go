//go:build !unix

package capability

// readOpenFlags: no extra flags where O_NONBLOCK and O_NOFOLLOW do not exist; os.Root
// still keeps the open under the root.
const readOpenFlags = 0
