package apiserver_test

import (
	"errors"
	"testing"

	"buf.build/go/protovalidate"
	"google.golang.org/protobuf/proto"

	accessv1 "github.com/palyra/palyra/gen/go/palyra/access/v1"
	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	nodev1 "github.com/palyra/palyra/gen/go/palyra/node/v1"
)

// TestULIDRule checks the one definition of a ULID id field, the predefined rule
// palyra.options.v1.ulid, as the validate interceptor applies it (the global
// validator): a ULID passes; anything else, or an empty required id, is refused with
// the rule's id and the message the former pattern rule gave; an empty optional id
// (ignore = IGNORE_IF_ZERO_VALUE) passes.
func TestULIDRule(t *testing.T) {
	t.Parallel()
	const ulid = "01JD5ZJ8Q0W1X2Y3Z4A5B6C7D8"
	tests := []struct {
		name  string
		msg   proto.Message
		valid bool
	}{
		{"a ULID", &controlplanev1.GetNodeRequest{Id: ulid}, true},
		{"a ULID in the node API", &nodev1.DispatchAccepted{DispatchId: ulid}, true},
		{"a ULID in the access API", &accessv1.GetTokenRequest{Id: ulid}, true},
		{"lower case", &controlplanev1.GetNodeRequest{Id: "01jd5zj8q0w1x2y3z4a5b6c7d8"}, false},
		{"25 characters", &controlplanev1.GetNodeRequest{Id: ulid[1:]}, false},
		{"27 characters", &controlplanev1.GetNodeRequest{Id: ulid + "0"}, false},
		{"a letter Crockford's base32 leaves out", &controlplanev1.GetNodeRequest{Id: "01JD5ZJ8Q0W1X2Y3Z4A5B6C7DU"}, false},
		{"empty where required", &nodev1.DispatchAccepted{}, false},
		{"malformed in the access API", &accessv1.RevokeTokenRequest{Id: "nope"}, false},
		{"empty where optional", &controlplanev1.ListDispatchesRequest{}, true},
		{"a ULID where optional", &controlplanev1.ListDispatchesRequest{NodeId: ulid}, true},
		{"malformed where optional", &controlplanev1.ListDispatchesRequest{NodeId: "nope"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := protovalidate.Validate(tt.msg)
			if tt.valid {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var ve *protovalidate.ValidationError
			if !errors.As(err, &ve) || len(ve.Violations) != 1 {
				t.Fatalf("got %v, want one violation", err)
			}
			v := ve.Violations[0].Proto
			if v.GetRuleId() != "string.ulid" || v.GetMessage() != "does not match regex pattern `^[0-9A-HJKMNP-TV-Z]{26}$`" {
				t.Errorf("violation %v", v)
			}
		})
	}
}
