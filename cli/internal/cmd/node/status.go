package node

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/palyra/palyra/cli/internal/client"
	"github.com/palyra/palyra/cli/internal/cmd/deps"
	agent "github.com/palyra/palyra/cli/internal/node"
	"github.com/palyra/palyra/cli/internal/output"
)

// nodeStatus is what `palyra node status` reports; -o json prints it as it is.
type nodeStatus struct {
	// StateDir is the state directory.
	StateDir string `json:"state_dir"`
	// Paired is true when the directory holds a device certificate.
	Paired bool `json:"paired"`
	// DeviceID is the node's device id, once paired.
	DeviceID string `json:"device_id,omitempty"`
	// DeviceName is the name the node paired (or pairs) with.
	DeviceName string `json:"device_name,omitempty"`
	// URL is palyrad's base URL.
	URL string `json:"url,omitempty"`
	// CAFingerprint pins palyrad's CA.
	CAFingerprint string `json:"ca_fingerprint,omitempty"`
	// KeyFingerprint is the SHA-256 of the node's public key.
	KeyFingerprint string `json:"key_fingerprint,omitempty"`
	// CertificateFingerprint is the SHA-256 of the device certificate's DER.
	CertificateFingerprint string `json:"certificate_fingerprint,omitempty"`
	// CertificateExpireTime is when the device certificate expires.
	CertificateExpireTime time.Time `json:"certificate_expire_time,omitzero"`
	// CertificateExpired is true when it has expired: the node must pair again.
	CertificateExpired bool `json:"certificate_expired"`
	// PendingRequest is the pairing request the node waits on, if any.
	PendingRequest *pendingRequest `json:"pending_request,omitempty"`
	// Agent is what the running agent reports; null when none runs.
	Agent *agent.AgentStatus `json:"agent"`
	// SpooledResults counts the results kept until palyrad acknowledges them.
	SpooledResults int `json:"spooled_results"`
}

// pendingRequest is a pairing request that waits for a decision; its secret is not
// reported.
type pendingRequest struct {
	// RequestID identifies it.
	RequestID string `json:"request_id"`
	// ExpireTime is when it expires if no one decides.
	ExpireTime time.Time `json:"expire_time,omitzero"`
}

func newStatusCommand(d *deps.Deps) *cobra.Command {
	var stateDir string
	c := &cobra.Command{
		Use:   "status",
		Short: "Report on this node: pairing, certificate, the running agent and its session",
		Long: `status reads the node's state directory and reports: whether the node is paired, as
which device and with which palyrad; when its certificate expires; the pairing request
it waits on, if any; whether an agent runs on the directory and, if so, whether it is
attached to palyrad (session, last heartbeat, running dispatches, last error); and how
many results wait for palyrad's acknowledgement. It calls nothing: palyra nodes show
reports what palyrad knows about the node.

It exits 0 whether the node is paired or not; a state directory that does not exist
or cannot be read is an error.`,
		Example: `  palyra node status
  palyra node status --state-dir /var/lib/palyra/node -o json`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			path, err := stateDirPath(d, stateDir)
			if err != nil {
				return err
			}
			now := d.Clock()
			st, err := readStatus(agent.NewStateDir(path), now)
			if err != nil {
				return err
			}
			return output.PrintValue(d.Stdout, d.Output, st, func(w io.Writer) { printStatus(w, st, now) })
		},
	}
	c.Flags().StringVar(&stateDir, "state-dir", "", stateDirFlag)
	return c
}

// readStatus reads the status of the node in dir as of now.
func readStatus(dir *agent.StateDir, now time.Time) (*nodeStatus, error) {
	path := dir.Path()
	info, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("there is no node state directory %s: no node was paired there; pair one with `palyra node pair`, "+
			"or pass the --state-dir of the node", path)
	case err != nil:
		return nil, fmt.Errorf("cannot read the node state directory: %w", err)
	case !info.IsDir():
		return nil, fmt.Errorf("%s is not a directory: pass the --state-dir of the node", path)
	}
	if _, err := os.ReadDir(path); err != nil {
		return nil, fmt.Errorf("cannot read the node state directory: %w", err)
	}
	host, err := dir.Host()
	if err != nil {
		return nil, err
	}
	st := &nodeStatus{
		StateDir: path, DeviceName: host.DeviceName, URL: host.URL, CAFingerprint: host.CAFingerprint, KeyFingerprint: host.KeyFingerprint,
	}
	if st.Paired, err = dir.Paired(); err != nil {
		return nil, err
	}
	if st.Paired {
		cert, err := dir.Certificate()
		if err != nil {
			return nil, err
		}
		st.DeviceID = host.DeviceID
		st.CertificateFingerprint = client.Fingerprint(cert)
		st.CertificateExpireTime = cert.NotAfter.UTC()
		st.CertificateExpired = now.After(cert.NotAfter)
	}
	pending, err := dir.Pending()
	if err != nil {
		return nil, err
	}
	if pending != nil {
		st.PendingRequest = &pendingRequest{RequestID: pending.RequestID, ExpireTime: pending.ExpireTime.UTC()}
	}
	if st.Agent, err = dir.AgentStatus(); err != nil {
		return nil, err
	}
	if st.SpooledResults, err = dir.SpooledResults(); err != nil {
		return nil, fmt.Errorf("cannot read the result spool: %w", err)
	}
	return st, nil
}

// printStatus writes the table of status.
func printStatus(w io.Writer, st *nodeStatus, now time.Time) {
	row := func(k, v string) { fmt.Fprintf(w, "%s\t%s\n", k, v) }
	at := func(t time.Time) string { return t.UTC().Format(time.RFC3339) }
	ago := func(t time.Time) string { return at(t) + " (" + output.Age(now.Sub(t)) + " ago)" }
	row("State directory", st.StateDir)
	switch {
	case st.Paired:
		row("Paired", fmt.Sprintf("yes, as device %s (%s)", output.Cell(st.DeviceID), output.Cell(st.DeviceName)))
	case st.PendingRequest != nil:
		row("Paired", "no: waiting for the approval of pairing request "+st.PendingRequest.RequestID)
	default:
		row("Paired", "no: pair with `palyra node pair`, or `palyra node run` with a pairing code")
	}
	row("palyrad", output.Cell(st.URL))
	if st.Paired {
		if st.CertificateExpired {
			row("Certificate", fmt.Sprintf("EXPIRED at %s: pair again with `palyra node pair --force`", ago(st.CertificateExpireTime)))
		} else {
			row("Certificate", fmt.Sprintf("valid until %s (%s left), renewed by the running agent",
				at(st.CertificateExpireTime), output.Age(st.CertificateExpireTime.Sub(now))))
		}
	}
	if p := st.PendingRequest; p != nil {
		switch {
		case p.ExpireTime.IsZero():
			row("Pending request", p.RequestID)
		case now.After(p.ExpireTime):
			row("Pending request", fmt.Sprintf("%s, expired at %s: `palyra node pair --force` starts over", p.RequestID, at(p.ExpireTime)))
		default:
			row("Pending request", fmt.Sprintf("%s, expires at %s", p.RequestID, at(p.ExpireTime)))
		}
	}
	if a := st.Agent; a == nil {
		row("Agent", "not running")
	} else {
		row("Agent", fmt.Sprintf("running (pid %d, since %s)", a.PID, ago(a.StartedAt)))
		if a.Attached {
			row("Session", fmt.Sprintf("attached since %s (session %s)", ago(a.AttachedSince), output.Cell(a.SessionID)))
		} else {
			row("Session", "not attached")
		}
		if !a.LastHeartbeat.IsZero() {
			row("Last heartbeat", ago(a.LastHeartbeat))
		}
		row("Running dispatches", fmt.Sprint(a.Running))
		if a.LastError != "" {
			row("Last error", output.Cell(a.LastError))
		}
	}
	row("Spooled results", fmt.Sprintf("%d awaiting acknowledgement", st.SpooledResults))
}
