package nodes_test

import (
	"strings"
	"testing"

	"github.com/palyra/palyra/cli/internal/cmd/dispatches/dispatchtest"
	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	"github.com/palyra/palyra/internal/termtest"
)

// hostile is what a compromised node could put in a dispatch's error or result to
// take over the terminal of whoever invokes it: clear the screen, move up a line,
// overwrite it, a C1 CSI, a bidi override.
const hostile = "\x1b[2J\x1b[1A\rall good\u009b31m\u202etxt.exe"

// TestInvokeEscapesNodeText checks that what a node reports besides its program's
// output (the error of a failed dispatch, a JSON result) reaches the terminal with its
// control characters escaped, with and without --follow; the program's output itself
// is written as it came, as ssh writes it.
func TestInvokeEscapesNodeText(t *testing.T) {
	t.Parallel()
	b := newBench(t)
	b.disp.Runner = func(req *controlplanev1.CreateDispatchRequest) dispatchtest.Run {
		if req.GetCapability() == "system.info" {
			return dispatchtest.Run{ResultJSON: `{"hostname":"` + hostile + `"}`}
		}
		if strings.Contains(req.GetInputJson(), "colour") {
			return dispatchtest.Run{Output: []dispatchtest.Chunk{{Data: "\x1b[32mgreen\x1b[0m\n"}}}
		}
		return dispatchtest.Run{State: controlplanev1.DispatchState_DISPATCH_STATE_FAILED, Error: "refused: " + hostile}
	}
	for _, follow := range [][]string{nil, {"--follow"}, {"--follow", "-v"}} {
		res := b.invoke(t.Context(), append([]string{"shell.execute", "--input", `{"argv":["x"]}`}, follow...)...)
		if res.Code != 1 || !strings.Contains(res.Stderr, `refused: \x1b[2J\x1b[1A\x0dall good\u009b31m\u202etxt.exe`) {
			t.Errorf("invoke %v: exit %d, stderr %q: want the error, escaped", follow, res.Code, res.Stderr)
		}
		termtest.AssertSafe(t, "invoke "+strings.Join(follow, " "), res.Stdout+res.Stderr)

		res = b.invoke(t.Context(), append([]string{"system.info"}, follow...)...)
		if res.Code != 0 || !strings.Contains(res.Stdout, `"hostname":"\x1b[2J\x1b[1A\x0dall good\u009b31m\u202etxt.exe"`) {
			t.Errorf("invoke system.info %v: exit %d, stdout %q: want the result, escaped", follow, res.Code, res.Stdout)
		}
		termtest.AssertSafe(t, "invoke system.info "+strings.Join(follow, " "), res.Stdout+res.Stderr)

		res = b.invoke(t.Context(), append([]string{"shell.execute", "--input", `{"argv":["colour"]}`}, follow...)...)
		if res.Code != 0 || res.Stdout != "\x1b[32mgreen\x1b[0m\n" {
			t.Errorf("invoke colour %v: exit %d, stdout %q: want the program's output as it came", follow, res.Code, res.Stdout)
		}
	}
}
