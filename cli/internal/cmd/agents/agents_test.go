package agents_test

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/palyra/palyra/cli/internal/cmd/agents"
	agentsv1 "github.com/palyra/palyra/gen/go/palyra/agents/v1"
	"github.com/palyra/palyra/internal/cliusage"
)

// TestParseTool checks the --tool syntax: options after the capability, values holding
// commas, and what it refuses.
func TestParseTool(t *testing.T) {
	t.Parallel()
	good := map[string]*agentsv1.Tool{
		"system.info":                      {Capability: "system.info"},
		"shell.execute,name=sh,policy=ask": {Capability: "shell.execute", Name: "sh", Policy: agentsv1.ToolPolicy_TOOL_POLICY_ASK},
		"shell.execute,selector=env=prod,zone in (a,b),policy=deny": {Capability: "shell.execute",
			Target: &agentsv1.Tool_NodeSelector{NodeSelector: "env=prod,zone in (a,b)"}, Policy: agentsv1.ToolPolicy_TOOL_POLICY_DENY},
		"system.info,node=01jd0000000000000000000001,description=host facts, uptime": {Capability: "system.info",
			Target: &agentsv1.Tool_NodeId{NodeId: "01JD0000000000000000000001"}, Description: "host facts, uptime"},
		"system.info,selector=": {Capability: "system.info", Target: &agentsv1.Tool_NodeSelector{}},
		"browser.navigate,profile=shop,policy=ask": {Capability: "browser.navigate", BrowserProfile: "shop",
			Policy: agentsv1.ToolPolicy_TOOL_POLICY_ASK},
	}
	for in, want := range good {
		got, err := agents.ParseTool(in)
		if err != nil || !proto.Equal(got, want) {
			t.Errorf("ParseTool(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "name=x", "system.info,flavour=mint", "system.info,policy=sometimes", "system.info,policy=unspecified",
		"system.info,node=web-1", "system.info,node=01JD0000000000000000000001,selector=a=b", "system.info,name=a,name=b", "browser.navigate,profile=a,profile=b"} {
		if _, err := agents.ParseTool(bad); !cliusage.Is(err) {
			t.Errorf("ParseTool(%q) = %v, want a usage error", bad, err)
		}
	}
}

// TestParseRef tells agent ids from names.
func TestParseRef(t *testing.T) {
	t.Parallel()
	for in, want := range map[string][2]string{
		"helper":                     {"", "helper"},
		"01JD0000000000000000000001": {"01JD0000000000000000000001", ""},
		"01jd0000000000000000000001": {"", "01jd0000000000000000000001"}, // a valid name too: names win
	} {
		if id, name, err := agents.ParseRef(in); err != nil || id != want[0] || name != want[1] {
			t.Errorf("ParseRef(%q) = %q, %q, %v", in, id, name, err)
		}
	}
	for _, bad := range []string{"", "Helper", "-a", "a_b"} {
		if _, _, err := agents.ParseRef(bad); !cliusage.Is(err) {
			t.Errorf("ParseRef(%q) = %v, want a usage error", bad, err)
		}
	}
}
