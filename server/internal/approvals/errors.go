package approvals

import (
	"context"

	"github.com/palyra/palyra/gen/dbsqlc"
	"github.com/palyra/palyra/server/internal/access"
	"github.com/palyra/palyra/server/internal/errdefs"
)

// The package answers with errdefs errors whose messages are safe for any caller; the
// edge's errors.go turns them into Connect codes.

// errNoApproval answers a call about an unknown approval.
func errNoApproval(id string) error {
	return errdefs.New(errdefs.NotFound, "no approval %s", id)
}

// errNotPending refuses a decision on an approval that is not pending: decisions are
// final.
func errNotPending(r dbsqlc.Approval) error {
	return errdefs.New(errdefs.FailedPrecondition, "approval %s is %s, not pending: decisions are final", r.ID, r.State)
}

// principalID names the authenticated caller for decided_by.
func principalID(ctx context.Context) (string, error) {
	p, err := access.Caller(ctx)
	if err != nil {
		return "", err
	}
	return p.ID(), nil
}
