package access

import (
	"slices"
	"strings"
	"testing"
)

func TestRoles(t *testing.T) {
	t.Parallel()
	all := PermissionSet{}
	for _, p := range catalog {
		all[Permission(p.Name)] = true
	}
	cases := map[Role]struct {
		has, lacks []Permission
	}{
		Owner: {has: []Permission{ConfigWrite, SecretsRead, TokensManage, FlagsManage, NodesApprove}},
		Admin: {
			has: []Permission{TokensManage, FlagsManage, NodesApprove, NodesRevoke, AuditRead, SecretsWrite, SecretsList, ConfigRead, CompatUsageRead,
				AgentsRead, AgentsWrite, AgentsRun, ApprovalsRead, ApprovalsDecide},
			lacks: []Permission{ConfigWrite, SecretsRead, MasterKeyRotate},
		},
		Operator: {
			has: []Permission{StatusRead, NodesRead, NodesDispatch, CompatModelsRead, CompatChatCreate, CompatEmbeddingsCreate, CompatResponsesCreate,
				AgentsRead, AgentsRun, ApprovalsRead},
			lacks: []Permission{TokensManage, NodesApprove, NodesRevoke, NodesPair, FlagsManage, AuditRead, ConfigRead, ConfigWrite, SecretsRead, SecretsWrite, SecretsList, MasterKeyRotate, CompatUsageRead,
				AgentsWrite, ApprovalsDecide},
		},
	}
	for role, tc := range cases {
		perms := role.Permissions()
		for _, p := range tc.has {
			if !perms.Has(p) {
				t.Errorf("%s lacks %s", role, p)
			}
		}
		for _, p := range tc.lacks {
			if perms.Has(p) {
				t.Errorf("%s has %s", role, p)
			}
		}
		if missing := perms.Missing(all); len(missing) > 0 {
			t.Errorf("%s grants permissions outside the catalog: %v", role, missing)
		}
		if r, err := ParseRole(string(role)); err != nil || r != role {
			t.Errorf("ParseRole(%q) = %q, %v", role, r, err)
		}
		if back, ok := RoleFromProto(role.Proto()); !ok || back != role {
			t.Errorf("proto round trip of %s gives %s", role, back)
		}
	}
	if len(Owner.Permissions()) != len(catalog) {
		t.Errorf("owner holds %d of %d permissions", len(Owner.Permissions()), len(catalog))
	}
	if _, err := ParseRole("root"); err == nil {
		t.Error("ParseRole accepted root")
	}
}

func TestEffectivePermissions(t *testing.T) {
	t.Parallel()
	// Scopes narrow a role; a scope the role does not grant adds nothing.
	got := effective(Operator, []Permission{NodesRead, TokensManage}).Names()
	if !slices.Equal(got, []string{"nodes.read"}) {
		t.Errorf("operator scoped to nodes.read and tokens.manage: %v", got)
	}
	if got := effective(Admin, nil); len(got) != len(Admin.Permissions()) {
		t.Errorf("no scopes must keep the role's permissions: %v", got.Names())
	}
}

func TestTokenFormat(t *testing.T) {
	t.Parallel()
	id, secret := newSecret()
	token := formatToken(id, secret)
	if !strings.HasPrefix(token, "plr_"+id+"_") || len(secret)*5 < 128 {
		t.Fatalf("token %q: want plr_<id>_<secret> with at least 128 bits", token)
	}
	if gotID, gotSecret, ok := parseToken(token); !ok || gotID != id || gotSecret != secret {
		t.Errorf("parseToken(%q) = %q, %q, %v", token, gotID, gotSecret, ok)
	}
	if _, other := newSecret(); other == secret {
		t.Error("two secrets are equal")
	}
	for _, bad := range []string{
		"", "plr_", "plr__x", "abc_" + id + "_" + secret, "plr_" + id, "plr_" + id + "_",
		"plr_" + strings.ToLower(id) + "_x", "plr_" + id[:25] + "_x", "plr_" + id + "_" + strings.Repeat("a", 129),
	} {
		if _, _, ok := parseToken(bad); ok {
			t.Errorf("parseToken accepted %q", bad)
		}
	}
	// Hashes are bound to the kind and the id.
	h := hashSecret(kindToken, id, secret)
	if slices.Equal(h, hashSecret(kindSession, id, secret)) || slices.Equal(h, hashSecret(kindToken, "other", secret)) || len(h) != 32 {
		t.Error("hashSecret is not bound to kind and id")
	}
}
