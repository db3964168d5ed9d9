// Package access is palyrad's access control: the permission catalog that every RPC's
// `(palyra.options.v1.access)` option refers to, roles, API tokens, console sessions,
// the interceptor that enforces every RPC's rule, the bootstrap of the first owner
// token, and the handlers of AccessService and SessionService.
package access

import (
	"slices"

	accessv1 "github.com/palyra/palyra/gen/go/palyra/access/v1"
	"github.com/palyra/palyra/server/internal/ratelimit"
)

// Permission names one right in the catalog, e.g. "nodes.approve".
type Permission string

// The permission catalog. Roles and API token scopes are sets of these; every RPC that
// is neither public, nor open to any authenticated caller, nor device-only names one.
const (
	StatusRead       Permission = "status.read"
	NodesRead        Permission = "nodes.read"
	NodesPair        Permission = "nodes.pair"
	NodesApprove     Permission = "nodes.approve"
	NodesRevoke      Permission = "nodes.revoke"
	NodesDispatch    Permission = "nodes.dispatch"
	TokensManage     Permission = "tokens.manage"
	FlagsManage      Permission = "flags.manage"
	AuditRead        Permission = "audit.read"
	ConfigRead       Permission = "config.read"
	ConfigWrite      Permission = "config.write"
	SecretsRead      Permission = "secrets.read"
	SecretsList      Permission = "secrets.list"
	SecretsWrite     Permission = "secrets.write"
	CompatModelsRead Permission = "compat.models.read"
	CompatChatCreate Permission = "compat.chat.create"
	// CompatEmbeddingsCreate and CompatResponsesCreate are the embeddings and responses
	// of the OpenAI-compatible API.
	CompatEmbeddingsCreate Permission = "compat.embeddings.create"
	CompatResponsesCreate  Permission = "compat.responses.create"
	// CompatUsageRead reads the token usage and budgets of the OpenAI-compatible API.
	CompatUsageRead Permission = "compat.usage.read"
	MasterKeyRotate Permission = "masterkey.rotate"
	// AgentsRead, AgentsWrite and AgentsRun are the agents and their runs; ApprovalsRead
	// and ApprovalsDecide the approvals of their tool calls.
	AgentsRead      Permission = "agents.read"
	AgentsWrite     Permission = "agents.write"
	AgentsRun       Permission = "agents.run"
	ApprovalsRead   Permission = "approvals.read"
	ApprovalsDecide Permission = "approvals.decide"
	// BrowserRead and BrowserWrite are the browser profiles.
	BrowserRead  Permission = "browser.read"
	BrowserWrite Permission = "browser.write"
)

// catalog describes every permission, sorted by name.
var catalog = []*accessv1.Permission{
	{Name: string(AgentsRead), Description: "List and show agents, and list, show and watch their runs."},
	{Name: string(AgentsRun), Description: "Run agents, and cancel one's own runs."},
	{Name: string(AgentsWrite), Description: "Create, change and delete agents, set the default agent, and cancel anyone's runs."},
	{Name: string(ApprovalsDecide), Description: "Approve or deny the tool calls of agents that wait for a human."},
	{Name: string(ApprovalsRead), Description: "List, show and watch the approvals of agents' tool calls."},
	{Name: string(AuditRead), Description: "Read and verify the audit log."},
	{Name: string(BrowserRead), Description: "List and show browser profiles (never their state)."},
	{Name: string(BrowserWrite), Description: "Create, change and delete browser profiles, and reset their state."},
	{Name: string(CompatChatCreate), Description: "Create chat completions through the OpenAI-compatible API."},
	{Name: string(CompatEmbeddingsCreate), Description: "Create embeddings through the OpenAI-compatible API."},
	{Name: string(CompatModelsRead), Description: "List the models of the OpenAI-compatible API."},
	{Name: string(CompatResponsesCreate), Description: "Create responses (the Responses API) through the OpenAI-compatible API."},
	{Name: string(CompatUsageRead), Description: "Read every API token's usage and budget of the OpenAI-compatible API."},
	{Name: string(ConfigRead), Description: "Read the daemon's configuration."},
	{Name: string(ConfigWrite), Description: "Change the daemon's configuration."},
	{Name: string(FlagsManage), Description: "Turn feature flags on and off."},
	{Name: string(MasterKeyRotate), Description: "Re-wrap every wrapped key to the primary master key (the end of a master key rotation)."},
	{Name: string(NodesApprove), Description: "Approve or reject pairing requests, which issues device certificates."},
	{Name: string(NodesDispatch), Description: "Dispatch capabilities to nodes, and watch and cancel dispatches."},
	{Name: string(NodesPair), Description: "Create, list and delete pairing codes."},
	{Name: string(NodesRead), Description: "List and show nodes, pairing requests and dispatches."},
	{Name: string(NodesRevoke), Description: "Revoke devices and certificates, and force certificate rotation."},
	{Name: string(SecretsList), Description: "List secrets and read their metadata, never their values."},
	{Name: string(SecretsRead), Description: "Read secrets."},
	{Name: string(SecretsWrite), Description: "Create, change and delete secrets."},
	{Name: string(StatusRead), Description: "Read the daemon's status."},
	{Name: string(TokensManage), Description: "Create, list, rotate and revoke API tokens."},
}

// NewFailureLimiter returns the limit on failed authentication per remote address: 20
// failures, then one every 3 seconds.
func NewFailureLimiter() *ratelimit.Keyed {
	return ratelimit.NewKeyed(ratelimit.Options{Burst: 20, PerMinute: 20})
}

// Known reports whether p is in the catalog.
func Known(p Permission) bool {
	return slices.ContainsFunc(catalog, func(c *accessv1.Permission) bool { return c.Name == string(p) })
}
