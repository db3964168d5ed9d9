package audit_test

import (
	"testing"

	"github.com/palyra/palyra/cli/internal/cmd/audit"
	accessv1 "github.com/palyra/palyra/gen/go/palyra/access/v1"
)

// TestAuditVerdict checks the one-line verdict of `palyra audit verify`.
func TestAuditVerdict(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		in   *accessv1.VerifyAuditLogResponse
		want string
	}{
		"intact": {
			in:   &accessv1.VerifyAuditLogResponse{Intact: true, EventsChecked: 42, HeadSequence: 42, HeadHash: "ab12"},
			want: "audit log intact: 42 events, head #42 ab12",
		},
		"empty": {
			in:   &accessv1.VerifyAuditLogResponse{Intact: true},
			want: "audit log intact: 0 events",
		},
		"broken": {
			in:   &accessv1.VerifyAuditLogResponse{EventsChecked: 42, FirstBrokenSequence: 7, Problem: "hash mismatch"},
			want: "audit log BROKEN at event #7: hash mismatch",
		},
	}
	for name, tt := range tests {
		if got := audit.Verdict(tt.in); got != tt.want {
			t.Errorf("%s: Verdict = %q, want %q", name, got, tt.want)
		}
	}
}
