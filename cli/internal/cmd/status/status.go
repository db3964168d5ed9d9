// Package status is `palyra status`: what the daemon reports about itself.
package status

import (
	"fmt"
	"io"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	"github.com/palyra/palyra/cli/internal/cmd/deps"
	"github.com/palyra/palyra/cli/internal/output"
	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
)

// NewCommand returns `palyra status`.
func NewCommand(d *deps.Deps) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the daemon's version, uptime, database, CA and listener",
		Example: `  palyra status                # after palyra auth login
  palyra status --profile prod -o json
  PALYRA_TOKEN=plr_... palyra status --url https://127.0.0.1:7443 --ca-file var/ca.pem`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := d.Client()
			if err != nil {
				return err
			}
			res, err := c.Status.GetStatus(cmd.Context(), connect.NewRequest(&controlplanev1.GetStatusRequest{}))
			if err != nil {
				return err
			}
			return output.Print(d.Stdout, d.Output, res.Msg, func(w io.Writer) { table(w, res.Msg) })
		},
	}
}

func table(w io.Writer, s *controlplanev1.GetStatusResponse) {
	row := func(k, v string) { fmt.Fprintf(w, "%s\t%s\n", k, v) }
	row("Version", s.GetVersion())
	row("Replica", fmt.Sprintf("%s on %s", s.GetReplicaId(), s.GetHostname()))
	row("Listen", s.GetListenAddress())
	row("Uptime", fmt.Sprintf("%s (since %s)", s.GetUptime().AsDuration().Round(time.Second), s.GetStartTime().AsTime().Format(time.RFC3339)))
	row("Database", database(s.GetDatabase()))
	row("CA", certificate(s.GetCertificateAuthority()))
	row("Server certificate", certificate(s.GetServerCertificate())+", renewed automatically")
}

func database(db *controlplanev1.DatabaseStatus) string {
	kind := "external"
	if db.GetEmbedded() {
		kind = "embedded"
	}
	if db.GetState() != controlplanev1.DatabaseState_DATABASE_STATE_AVAILABLE {
		return fmt.Sprintf("UNAVAILABLE (%s): %s", kind, db.GetError())
	}
	version, _, _ := strings.Cut(db.GetServerVersion(), " ")
	return fmt.Sprintf("available (%s, PostgreSQL %s, schema version %d, ping %s)",
		kind, version, db.GetSchemaVersion(), db.GetPingLatency().AsDuration().Round(10*time.Microsecond))
}

func certificate(c *controlplanev1.CertificateInfo) string {
	return fmt.Sprintf("%s (%s, expires %s)", c.GetFingerprint(), c.GetSubject(), c.GetNotAfter().AsTime().Format(time.RFC3339))
}
