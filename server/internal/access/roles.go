package access

import (
	"fmt"
	"slices"

	accessv1 "github.com/palyra/palyra/gen/go/palyra/access/v1"
)

// Role is a named set of permissions, given to API tokens.
type Role string

// The roles, from the most to the least privileged.
const (
	// Owner holds every permission.
	Owner Role = "owner"
	// Admin holds every permission but the owner-only ones.
	Admin Role = "admin"
	// Operator reads, dispatches and uses the OpenAI-compatible API. It cannot manage
	// tokens, pair, approve or revoke nodes, change flags, read the configuration or
	// read the audit log.
	Operator Role = "operator"
)

// ownerOnly are the permissions that only owners hold: changing the daemon's
// configuration (which includes its security settings), reading secrets in clear and
// re-wrapping the keys that protect them to another master key.
var ownerOnly = []Permission{ConfigWrite, SecretsRead, MasterKeyRotate}

// operatorPermissions are the operator's permissions.
var operatorPermissions = []Permission{StatusRead, NodesRead, NodesDispatch, CompatModelsRead, CompatChatCreate,
	CompatEmbeddingsCreate, CompatResponsesCreate, AgentsRead, AgentsRun, ApprovalsRead, BrowserRead}

// roleDescriptions say what each role is for, in the order of ListRoles.
var roleDescriptions = []struct {
	role        Role
	description string
}{
	{Owner, "Everything, including the daemon's configuration and secrets in clear."},
	{Admin, "Everything but the owner-only permissions (config.write, secrets.read, masterkey.rotate)."},
	{Operator, "Read, dispatch to nodes and use the OpenAI-compatible API; no token management, approval, revocation, flags, configuration or audit."},
}

// ParseRole parses a role name.
func ParseRole(s string) (Role, error) {
	switch r := Role(s); r {
	case Owner, Admin, Operator:
		return r, nil
	}
	return "", fmt.Errorf("unknown role %q: the roles are owner, admin and operator", s)
}

// Permissions returns the permissions the role grants.
func (r Role) Permissions() PermissionSet {
	set := PermissionSet{}
	switch r {
	case Owner:
		for _, p := range catalog {
			set[Permission(p.Name)] = true
		}
	case Admin:
		for _, p := range catalog {
			if !slices.Contains(ownerOnly, Permission(p.Name)) {
				set[Permission(p.Name)] = true
			}
		}
	case Operator:
		for _, p := range operatorPermissions {
			set[p] = true
		}
	}
	return set
}

// Proto returns the role's protobuf enum value.
func (r Role) Proto() accessv1.Role {
	switch r {
	case Owner:
		return accessv1.Role_ROLE_OWNER
	case Admin:
		return accessv1.Role_ROLE_ADMIN
	case Operator:
		return accessv1.Role_ROLE_OPERATOR
	}
	return accessv1.Role_ROLE_UNSPECIFIED
}

// RoleFromProto maps the protobuf enum to a role.
func RoleFromProto(r accessv1.Role) (Role, bool) {
	switch r {
	case accessv1.Role_ROLE_OWNER:
		return Owner, true
	case accessv1.Role_ROLE_ADMIN:
		return Admin, true
	case accessv1.Role_ROLE_OPERATOR:
		return Operator, true
	}
	return "", false
}

// PermissionSet is a set of permissions.
type PermissionSet map[Permission]bool

// Has reports whether p is in the set.
func (s PermissionSet) Has(p Permission) bool { return s[p] }

// Missing returns, sorted, the permissions of s that other lacks.
func (s PermissionSet) Missing(other PermissionSet) []Permission {
	var out []Permission
	for p := range s {
		if !other[p] {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

// Names returns the permission names, sorted.
func (s PermissionSet) Names() []string {
	out := make([]string, 0, len(s))
	for p := range s {
		out = append(out, string(p))
	}
	slices.Sort(out)
	return out
}

// checkScopes refuses, with a *ScopeError, the first scope that is not a permission of
// role r.
func checkScopes(r Role, scopes []Permission) error {
	perms := r.Permissions()
	for i, s := range scopes {
		if !perms[s] {
			return &ScopeError{Index: i, Scope: s, Role: r}
		}
	}
	return nil
}

// effective returns a role's permissions narrowed to scopes, or all of them when there
// are no scopes.
func effective(r Role, scopes []Permission) PermissionSet {
	perms := r.Permissions()
	if len(scopes) == 0 {
		return perms
	}
	out := PermissionSet{}
	for _, s := range scopes {
		if perms[s] {
			out[s] = true
		}
	}
	return out
}
