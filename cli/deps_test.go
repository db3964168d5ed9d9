package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies enforces the CLI's dependency rule: it talks to palyrad only through
// the generated API (gen/go) and uses only its own packages and the shared internal/
// ones, never the daemon's code (server/) or its database layer (gen/dbsqlc).
func TestDependencies(t *testing.T) {
	t.Parallel()
	const module = "github.com/palyra/palyra"
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", module+"/cli").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	allowed := []string{module + "/cli", module + "/gen/go/", module + "/internal/"}
	checked := 0
	for _, pkg := range strings.Fields(string(out)) {
		if !strings.HasPrefix(pkg, module+"/") && pkg != module {
			continue
		}
		checked++
		ok := false
		for _, prefix := range allowed {
			ok = ok || strings.HasPrefix(pkg, prefix)
		}
		if !ok {
			t.Errorf("the CLI depends on %s; it may use only %v", pkg, allowed)
		}
	}
	if checked < 5 {
		t.Fatalf("only %d project packages found in the CLI's dependencies; is go list working?", checked)
	}
}
