package dispatch

import (
	"errors"
	"fmt"

	"connectrpc.com/connect"
)

// The service answers with Connect errors whose messages are safe for any caller (it is
// the edge of this package, as in pairing). Errors it does not translate (a database
// failure) pass as they are to the control plane's errors.go, which maps store
// sentinels and hides the rest.

// errNoNode answers a call about a node that does not exist.
func errNoNode(id string) error {
	return connect.NewError(connect.CodeNotFound, fmt.Errorf("node %s does not exist", id))
}

// errNoDispatch answers a call about a dispatch that does not exist.
func errNoDispatch(id string) error {
	return connect.NewError(connect.CodeNotFound, fmt.Errorf("dispatch %s does not exist", id))
}

// errInvalid is an InvalidArgument with a message naming the problem.
func errInvalid(format string, args ...any) error {
	return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf(format, args...))
}

// errFailedPrecondition is a FailedPrecondition with a message naming the problem.
func errFailedPrecondition(format string, args ...any) error {
	return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf(format, args...))
}

// errProtocol ends an Attach stream that broke the protocol.
func errProtocol(format string, args ...any) error {
	return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("attach protocol: "+format, args...))
}

// errSessionEnded ends an Attach stream for a cause of the registry.
func errSessionEnded(cause error) error {
	if errors.Is(cause, errShuttingDown) {
		return connect.NewError(connect.CodeUnavailable, cause)
	}
	return connect.NewError(connect.CodeAborted, cause)
}
