package dispatch

import (
	"errors"

	"github.com/palyra/palyra/server/internal/errdefs"
)

// The package answers with errdefs errors whose messages are safe for any caller; the
// edge's errors.go turns them into Connect codes. Errors it does not classify (a database
// failure) pass as they are: the edge maps store sentinels and hides the rest.

// errNoNode answers a call about a node that does not exist.
func errNoNode(id string) error {
	return errdefs.New(errdefs.NotFound, "node %s does not exist", id)
}

// errNoDispatch answers a call about a dispatch that does not exist.
func errNoDispatch(id string) error {
	return errdefs.New(errdefs.NotFound, "dispatch %s does not exist", id)
}

// errInvalid is an InvalidArgument with a message naming the problem.
func errInvalid(format string, args ...any) error {
	return errdefs.New(errdefs.Invalid, format, args...)
}

// errFailedPrecondition is a FailedPrecondition with a message naming the problem.
func errFailedPrecondition(format string, args ...any) error {
	return errdefs.New(errdefs.FailedPrecondition, format, args...)
}

// errNoBrowserProfiles refuses a dispatch of a browser capability on a palyrad that
// serves no browser profiles.
func errNoBrowserProfiles(capability string) error {
	return errFailedPrecondition("this palyrad serves no browser profiles, which capability %s needs", capability)
}

// errProtocol ends an Attach stream that broke the protocol.
func errProtocol(format string, args ...any) error {
	return errdefs.New(errdefs.Invalid, "attach protocol: "+format, args...)
}

// errSessionEnded ends an Attach stream for a cause of the registry.
func errSessionEnded(cause error) error {
	if errors.Is(cause, errShuttingDown) {
		return errdefs.Wrap(cause, errdefs.Unavailable, "%s", cause)
	}
	return errdefs.Wrap(cause, errdefs.Aborted, "%s", cause)
}
