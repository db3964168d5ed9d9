// Package masterkey is `palyra master-key`: where a master key rotation stands, and the
// re-wrap that completes one (after `palyrad master-key rotate` and a restart of every
// replica with the new keys).
package masterkey

import (
	"fmt"
	"io"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	"github.com/palyra/palyra/cli/internal/cmd/deps"
	"github.com/palyra/palyra/cli/internal/output"
	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
)

// NewCommand returns `palyra master-key` and its subcommands.
func NewCommand(d *deps.Deps) *cobra.Command {
	c := &cobra.Command{
		Use:   "master-key",
		Short: "Show a master key rotation, re-wrap the keys to the new master key",
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	c.AddCommand(newStatusCommand(d), newRewrapCommand(d))
	return c
}

func newStatusCommand(d *deps.Deps) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the key-encryption keys in use, the replicas and their keys, the last re-wrap",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := d.Client()
			if err != nil {
				return err
			}
			res, err := c.MasterKey.GetMasterKeyStatus(cmd.Context(), connect.NewRequest(&controlplanev1.GetMasterKeyStatusRequest{}))
			if err != nil {
				return err
			}
			return output.Print(d.Stdout, d.Output, res.Msg, func(w io.Writer) { statusTable(w, res.Msg) })
		},
	}
}

func newRewrapCommand(d *deps.Deps) *cobra.Command {
	return &cobra.Command{
		Use:   "rewrap",
		Short: "Re-wrap every wrapped key to the primary master key",
		Long: `rewrap re-wraps every wrapped key (the CA's sealed key, ...) to the primary master key
of the replica that answers, without touching the data they protect (it needs the
masterkey.rotate permission: owners). It is refused while a live replica does not have
that key as its primary, naming the replicas; it may be repeated.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := d.Client()
			if err != nil {
				return err
			}
			res, err := c.MasterKey.RewrapKeys(cmd.Context(), connect.NewRequest(&controlplanev1.RewrapKeysRequest{}))
			if err != nil {
				return err
			}
			return output.Print(d.Stdout, d.Output, res.Msg, func(w io.Writer) {
				fmt.Fprintf(w, "re-wrapped to %s (re-wrap %s)\n", res.Msg.GetRewrap().GetKekId(), res.Msg.GetRewrap().GetId())
				fmt.Fprintln(w, "KIND\tRE-WRAPPED")
				for _, u := range res.Msg.GetRewrapped() {
					fmt.Fprintf(w, "%s\t%d\n", output.Cell(u.GetKind()), u.GetCount())
				}
			})
		},
	}
}

// statusTable writes the status as three tables.
func statusTable(w io.Writer, st *controlplanev1.GetMasterKeyStatusResponse) {
	fmt.Fprintf(w, "replica %s holds %s (primary first)\n\n", st.GetReplicaId(), output.List(st.GetKekIds()))
	fmt.Fprintln(w, "KIND\tKEK\tWRAPPED KEYS")
	for _, u := range st.GetUsage() {
		fmt.Fprintf(w, "%s\t%s\t%d\n", output.Cell(u.GetKind()), u.GetKekId(), u.GetCount())
	}
	fmt.Fprintln(w, "\nREPLICA\tHOST\tVERSION\tLIVE\tKEKS\tLAST SEEN")
	for _, r := range st.GetReplicas() {
		fmt.Fprintf(w, "%s\t%s\t%s\t%v\t%s\t%s\n", r.GetReplicaId(), output.Cell(r.GetHostname()), output.Cell(r.GetVersion()),
			r.GetLive(), output.List(r.GetKekIds()), output.Time(r.GetLastSeenTime(), "-"))
	}
	if rw := st.GetLastRewrap(); rw != nil {
		fmt.Fprintf(w, "\nlast re-wrap %s to %s by %s: started %s, finished %s, %d keys\n", rw.GetId(), rw.GetKekId(),
			output.Cell(rw.GetStartedBy()), output.Time(rw.GetStartTime(), "-"), output.Time(rw.GetFinishTime(), "no"), rw.GetRewrapped())
	}
}
