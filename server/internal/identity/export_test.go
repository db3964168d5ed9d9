package identity

import (
	"context"
	"time"
)

// Exported for the tests of package identity_test only.

// Renew issues, records and installs a new server certificate now, as Run does when
// renewal is due.
func (s *ServerCertificate) Renew(ctx context.Context) error { return s.renew(ctx) }

// UntilRenewal is the wait Run would start with now.
func (s *ServerCertificate) UntilRenewal() time.Duration { return s.untilRenewal() }

// AuthorityAAD is the associated data that binds a sealed CA key to its row.
var AuthorityAAD = authorityAAD
