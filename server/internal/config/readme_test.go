package config

import (
	"os"
	"strings"
	"testing"
)

// TestREADMEDocumentsEverySetting keeps the configuration table of README.md in step
// with the settings table: every setting's file key, flag and environment variable must
// appear in one row (a template's key alone, with no flag and no variable), marked
// *(runtime)* exactly when the setting is a runtime one.
func TestREADMEDocumentsEverySetting(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]string{}
	for _, line := range strings.Split(string(readme), "\n") {
		if strings.HasPrefix(line, "| `") || strings.HasPrefix(line, "| — |") {
			rows[line] = line
		}
	}
	for _, s := range settings {
		found := false
		for row := range rows {
			hasKey := strings.Contains(row, "`"+s.key+"`") || s.secret
			hasFlag := strings.Contains(row, "`--"+s.flagName()+"`") || s.secret
			hasEnv := strings.Contains(row, "`"+s.envName()+"`")
			if s.template() {
				hasFlag, hasEnv = strings.HasPrefix(row, "| `"+s.key+"` | — | — |"), true
			}
			if hasKey && hasFlag && hasEnv {
				found = true
				if marked := strings.Contains(row, "*(runtime)*"); marked != s.runtime {
					t.Errorf("README.md's row of %s says runtime %v, the settings table %v", s.key, marked, s.runtime)
				}
			}
		}
		if !found {
			t.Errorf("README.md has no configuration row with `%s`, `--%s` and `%s`", s.key, s.flagName(), s.envName())
		}
	}
}
