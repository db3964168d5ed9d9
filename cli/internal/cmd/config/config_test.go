package config_test

import (
	"crypto/rand"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/palyra/palyra/cli/internal/cmd/cmdtest"
	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	"github.com/palyra/palyra/internal/eventually"
	"github.com/palyra/palyra/internal/termtest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	cmdtest.RemoveBuilt()
	os.Exit(code)
}

// TestConfigCommands runs every `palyra config` command against two real palyrad
// replicas on one database: a change through A shows on B with source database, a
// stale revision and bad values are refused, export → apply round-trips, history shows
// the revisions and rollback restores one.
func TestConfigCommands(t *testing.T) {
	t.Parallel()
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	masterKey := base64.StdEncoding.EncodeToString(key)
	dbURL := cmdtest.Database(t)
	a := cmdtest.StartReplica(t, dbURL, masterKey)
	b := cmdtest.StartReplica(t, dbURL, masterKey)
	if a.Owner == "" {
		a, b = b, a // the second to start found the owner made
	}
	envA, envB := a.Env(a.Owner), b.Env(a.Owner)

	res := cmdtest.Expect(t, envA, 0, "config", "get")
	cmdtest.WantRow(t, "get", res.Stdout, "KEY", "VALUE", "SOURCE", "RUNTIME")
	cmdtest.WantRow(t, "get", res.Stdout, "nodes.heartbeat_interval", "15s", "default", "yes")
	cmdtest.WantRow(t, "get", res.Stdout, "listen", "127.0.0.1:0", "flag", "no")
	cmdtest.WantRow(t, "get", res.Stdout, "master_key", "(set)", "environment", "no")
	cmdtest.WantOutput(t, "get stderr", res.Stderr, "configuration revision 0")

	res = cmdtest.Expect(t, envA, 0, "config", "set", "nodes.heartbeat_interval", "20s", "--reason", "issue 12")
	cmdtest.WantRow(t, "set", res.Stdout, "nodes.heartbeat_interval", "set", "15s", "20s")
	cmdtest.WantOutput(t, "set stderr", res.Stderr, "configuration revision 1")
	eventually.True(t, "B shows the new value from the database", func() bool {
		res := cmdtest.Run(t.Context(), envB, "config", "get", "nodes.heartbeat_interval")
		return res.Code == 0 && strings.Join(strings.Fields(res.Stdout), " ") == "KEY VALUE SOURCE RUNTIME nodes.heartbeat_interval 20s database (revision 1) yes"
	})

	// Refusals change nothing.
	res = cmdtest.Expect(t, envA, 1, "config", "set", "nodes.heartbeat_interval", "25s", "--expected-revision", "0")
	cmdtest.WantOutput(t, "stale set", res.Stderr, "revision 1, not 0")
	res = cmdtest.Expect(t, envA, 1, "config", "set", "nodes.heartbeat_interval", "fast")
	cmdtest.WantOutput(t, "bad value", res.Stderr, "nodes.heartbeat_interval", "duration")
	res = cmdtest.Expect(t, envA, 1, "config", "set", "pairing.pin_digits", "20")
	cmdtest.WantOutput(t, "out of range", res.Stderr, "pairing.pin_digits", "between 6 and 12")
	res = cmdtest.Expect(t, envA, 1, "config", "set", "listen", "0.0.0.0:1")
	cmdtest.WantOutput(t, "bootstrap", res.Stderr, "bootstrap", "--listen", "PALYRA_LISTEN")
	res = cmdtest.Expect(t, envA, 1, "config", "unset", "nodes.heartbeat_intervl")
	cmdtest.WantOutput(t, "unknown key", res.Stderr, `did you mean "nodes.heartbeat_interval"`)
	cmdtest.Expect(t, envA, 2, "config", "set", "nodes.heartbeat_interval")
	cmdtest.Expect(t, envA, 2, "config", "rollback", "zero")

	// Export, edit, diff, apply: one revision for the file.
	res = cmdtest.Expect(t, envA, 0, "config", "export")
	exported := res.Stdout
	cmdtest.WantOutput(t, "export", exported, "[nodes]", "heartbeat_interval = '20s'", "pin_digits = 8", "[log]", "level = 'info'")
	file := filepath.Join(t.TempDir(), "runtime.toml")
	edited := strings.Replace(strings.Replace(exported, "'20s'", "'30s'", 1), "level = 'info'", "level = 'debug'", 1)
	if err := os.WriteFile(file, []byte(edited), 0o600); err != nil {
		t.Fatal(err)
	}
	res = cmdtest.Expect(t, envA, 0, "config", "diff", "-f", file)
	// Every key of the file is stored; two change their effective values.
	cmdtest.WantRow(t, "diff", res.Stdout, "log.level", "set", "info", "debug")
	cmdtest.WantRow(t, "diff", res.Stdout, "nodes.heartbeat_interval", "set", "20s", "30s")
	cmdtest.WantRow(t, "diff", res.Stdout, "pairing.pin_digits", "set", "8", "8")
	res = cmdtest.Expect(t, envA, 0, "config", "apply", "-f", file, "--dry-run")
	cmdtest.WantOutput(t, "dry run", res.Stderr, "would make configuration revision 2")
	cmdtest.Expect(t, envA, 0, "config", "history")
	res = cmdtest.Expect(t, envA, 0, "config", "apply", "-f", file, "--reason", "from file")
	cmdtest.WantOutput(t, "apply", res.Stderr, "configuration revision 2")
	// Applying the same file again changes nothing.
	res = cmdtest.Expect(t, envA, 0, "config", "apply", "-f", file)
	cmdtest.WantOutput(t, "apply again", res.Stderr, "nothing to change")
	// The export of the applied state round-trips to the file.
	res = cmdtest.Expect(t, envB, 0, "config", "export")
	if strings.SplitN(res.Stdout, "\n", 2)[1] != strings.SplitN(edited, "\n", 2)[1] {
		t.Errorf("export after apply:\n%s\nwant the applied file:\n%s", res.Stdout, edited)
	}
	res = cmdtest.Expect(t, envA, 0, "config", "diff", "-f", file)
	cmdtest.WantOutput(t, "diff after apply", res.Stderr, "no differences")

	res = cmdtest.Expect(t, envA, 0, "config", "history", "-o", "json")
	var hist controlplanev1.ListConfigRevisionsResponse
	if err := protojson.Unmarshal([]byte(res.Stdout), &hist); err != nil || len(hist.GetRevisions()) != 2 ||
		hist.GetRevisions()[0].GetReason() != "from file" || hist.GetRevisions()[0].GetChangeCount() != 8 {
		t.Errorf("history: %v\n%s", err, res.Stdout)
	}
	res = cmdtest.Expect(t, envA, 0, "config", "history", "2")
	cmdtest.WantRow(t, "history 2", res.Stdout, "2")
	cmdtest.WantRow(t, "history 2", res.Stdout, "nodes.heartbeat_interval", "set", "20s", "30s")
	cmdtest.WantRow(t, "history 2", res.Stdout, "pairing.pin_digits", "set", "-", "8")

	res = cmdtest.Expect(t, envB, 0, "config", "rollback", "1", "--reason", "too slow")
	cmdtest.WantOutput(t, "rollback", res.Stderr, "configuration revision 3")
	cmdtest.WantRow(t, "rollback", res.Stdout, "nodes.heartbeat_interval", "set", "30s", "20s")
	cmdtest.WantRow(t, "rollback", res.Stdout, "log.level", "unset", "debug", "info")
	eventually.True(t, "A back at revision 1's values", func() bool {
		res := cmdtest.Run(t.Context(), envA, "config", "get", "-o", "json")
		var cfg controlplanev1.GetConfigResponse
		if res.Code != 0 || protojson.Unmarshal([]byte(res.Stdout), &cfg) != nil || cfg.GetRevision() != 3 {
			return false
		}
		for _, s := range cfg.GetSettings() {
			if s.GetKey() == "nodes.heartbeat_interval" {
				return s.GetValue().GetText() == "20s"
			}
		}
		return false
	})
	res = cmdtest.Expect(t, envA, 0, "config", "unset", "nodes.heartbeat_interval", "--reason", "\x1b]0;owned\x07 done")
	cmdtest.WantRow(t, "unset", res.Stdout, "nodes.heartbeat_interval", "unset", "20s", "15s")
	res = cmdtest.Expect(t, envA, 0, "config", "history")
	termtest.AssertSafe(t, "history", res.Stdout+res.Stderr)
	cmdtest.WantRow(t, "history", res.Stdout, "4")
}
