package daemon

import (
	"fmt"
	"math"
	"syscall"

	"github.com/palyra/palyra/server/internal/config"
)

// maxConnections returns the listener's total cap on connections and the open-file
// limit it was checked against. The cap is server.max_connections, or when that is 0
// what the limit leaves after the database pool and config.FileReserve; a configured cap
// the limit cannot hold is refused, so that a full listener never leaves the database
// pool, or a file, without a descriptor. (Go raised the soft limit to the hard one at
// start.)
func maxConnections(cfg *config.Config) (int, uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, 0, fmt.Errorf("daemon: open-file limit: %w", err)
	}
	reserved := uint64(cfg.Database.MaxConns) + config.FileReserve
	room := 0
	if lim.Cur > reserved {
		room = int(min(lim.Cur-reserved, math.MaxInt32))
	}
	switch want := cfg.Server.MaxConnections; {
	case room == 0:
		return 0, lim.Cur, fmt.Errorf("daemon: the open-file limit (%d) leaves no descriptor for connections after %d for the database pool and files; "+
			"raise it (ulimit -n, or LimitNOFILE= in a systemd unit)", lim.Cur, reserved)
	case want == 0:
		return room, lim.Cur, nil
	case want > room:
		return 0, lim.Cur, fmt.Errorf("daemon: server.max_connections is %d, but the open-file limit (%d) leaves %d descriptors after %d for the database pool and files; "+
			"raise the limit (ulimit -n, or LimitNOFILE= in a systemd unit) or lower server.max_connections", want, lim.Cur, room, reserved)
	default:
		return want, lim.Cur, nil
	}
}
