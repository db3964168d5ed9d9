package audit

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	accessv1 "github.com/palyra/palyra/gen/go/palyra/access/v1"
)

// TestListTableShowsSummaries: a summary row names the procedures refused and how many
// refusals since when; an ordinary row its procedure and target.
func TestListTableShowsSummaries(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 12, 5, 10, 0, 59, 0, time.UTC)
	var b bytes.Buffer
	listTable(&b, []*accessv1.AuditEvent{
		{Sequence: 2, Time: timestamppb.New(at), Principal: "anonymous", Outcome: accessv1.AuditOutcome_AUDIT_OUTCOME_FAILURE,
			Code: "resource_exhausted", RemoteAddress: "192.0.2.1", ReplicaId: "r1",
			Summary: &accessv1.AuditSummary{Count: 32517, FirstTime: timestamppb.New(at.Add(-59 * time.Second)),
				Procedures: []string{"/a.S/List", "/a.S/WhoAmI"}}},
		{Sequence: 1, Time: timestamppb.New(at), Principal: "token:x", Procedure: "/a.S/Create", Target: "token:y",
			Outcome: accessv1.AuditOutcome_AUDIT_OUTCOME_SUCCESS, Code: "ok", RemoteAddress: "192.0.2.2"},
	})
	want := []string{
		"SEQ\tTIME\tPRINCIPAL\tPROCEDURE\tTARGET\tOUTCOME\tCODE\tREMOTE\tREPLICA",
		"2\t2026-12-05T10:00:59Z\tanonymous\t/a.S/List,/a.S/WhoAmI\t32517 refusals since 2026-12-05T10:00:00Z\tfailure\tresource_exhausted\t192.0.2.1\tr1",
		"1\t2026-12-05T10:00:59Z\ttoken:x\t/a.S/Create\ttoken:y\tsuccess\tok\t192.0.2.2\t-",
	}
	if got := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n"); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("table:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
