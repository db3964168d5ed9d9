package flags_test

import (
	"testing"

	"github.com/palyra/palyra/cli/internal/cmd/flags"
	"github.com/palyra/palyra/internal/cliusage"
)

// TestFlagSetArgs checks the arguments of `palyra flags set`: anything but a key and
// on/off (or true/false, enable/disable) is a usage error.
func TestFlagSetArgs(t *testing.T) {
	t.Parallel()
	good := map[[2]string]bool{
		{"compat_api", "on"}: true, {"compat_api", "true"}: true, {"compat_api", "enable"}: true,
		{"compat_streaming", "off"}: false, {"compat_streaming", "false"}: false, {"x1", "disable"}: false,
	}
	for args, want := range good {
		key, enabled, err := flags.ParseSetArgs(args[:])
		if err != nil || key != args[0] || enabled != want {
			t.Errorf("ParseSetArgs(%q) = %q, %v, %v; want %v", args, key, enabled, err, want)
		}
	}
	bad := [][]string{
		{}, {"compat_api"}, {"compat_api", "on", "now"},
		{"compat_api", "maybe"}, {"compat_api", "yes"}, {"compat_api", ""},
		{"Compat_API", "on"}, {"compat-api", "on"}, {"1flag", "on"}, {"", "on"},
	}
	for _, args := range bad {
		if _, _, err := flags.ParseSetArgs(args); !cliusage.Is(err) {
			t.Errorf("ParseSetArgs(%q) = %v, want a usage error", args, err)
		}
	}
}
