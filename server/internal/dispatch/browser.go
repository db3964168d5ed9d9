package dispatch

import (
	"context"
	"strings"

	nodev1 "github.com/palyra/palyra/gen/go/palyra/node/v1"
)

// browserPrefix begins the names of the browser capabilities, whose dispatches browse
// with a browser profile (package browser).
const browserPrefix = "browser."

// IsBrowser reports whether capability is a browser capability: its dispatches browse
// with a browser profile, and its output is a screenshot.
func IsBrowser(capability string) bool { return strings.HasPrefix(capability, browserPrefix) }

// BrowserProfiles is what dispatches of the browser capabilities need of the browser
// profiles (browser.Profiles). The input they are given is the dispatch's, as stored.
type BrowserProfiles interface {
	// CheckInput refuses, when a dispatch is created, an input that names no existing
	// profile or a URL outside its allowed domains (Invalid, naming the input's field).
	CheckInput(ctx context.Context, capability, input string) error
	// Profile resolves the profile the input names, its newest state included, each time
	// the dispatch is sent. A domain error fails the dispatch with its message instead of
	// sending it; another error ends the node's stream (the dispatch is sent again).
	Profile(ctx context.Context, dispatchID, input string) (*nodev1.BrowserProfile, error)
	// SaveState stores the state a result from device deviceID carries as the profile's
	// next version before the result is recorded, at most once per dispatch. An error
	// ends the node's stream (the node sends the result again).
	SaveState(ctx context.Context, deviceID, dispatchID, input string, state *nodev1.BrowserState) error
}
