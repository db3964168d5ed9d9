// Package node is `palyra node`: the commands of the node agent, run on the machines
// that palyrad manages. pair pairs the machine with palyrad, run runs the agent (pairing
// first when needed), status reports on the state directory and a running agent, and
// install and uninstall manage its systemd unit. The agent's state and logic are in
// package cli/internal/node.
package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"regexp"
	"runtime"
	"time"

	"github.com/spf13/cobra"

	"github.com/palyra/palyra/cli/internal/client"
	"github.com/palyra/palyra/cli/internal/cmd/deps"
	agent "github.com/palyra/palyra/cli/internal/node"
	"github.com/palyra/palyra/cli/internal/output"
	nodev1 "github.com/palyra/palyra/gen/go/palyra/node/v1"
	"github.com/palyra/palyra/internal/buildinfo"
	"github.com/palyra/palyra/internal/cliusage"
)

// NewCommand returns `palyra node` and its subcommands.
func NewCommand(d *deps.Deps) *cobra.Command {
	c := &cobra.Command{
		Use:   "node",
		Short: "Run this machine as a node of palyrad: pair it, run the agent, install it as a service",
		Long: `node is the node agent: the commands run on a machine that palyrad manages. pair pairs
the machine with palyrad; run runs the agent, which attaches to palyrad and runs the
dispatches its capabilities allow (pairing first if needed); status reports on the
node and its agent; install and uninstall manage a systemd unit that runs the agent.

The node's key, certificate, configuration (node.toml) and state live in the state
directory (--state-dir, default $XDG_STATE_HOME/palyra/node).`,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	c.AddCommand(newPairCommand(d), newRunCommand(d), newStatusCommand(d), newInstallCommand(d), newUninstallCommand(d))
	return c
}

// stateDirFlag is the help of every --state-dir flag.
const stateDirFlag = "the node's state directory (default $XDG_STATE_HOME/palyra/node)"

// stateDirPath returns the state directory: flag when given, else the default.
func stateDirPath(d *deps.Deps, flag string) (string, error) {
	if flag != "" {
		return flag, nil
	}
	dir, err := agent.DefaultStateDir(d.Getenv)
	if err != nil {
		return "", cliusage.Wrap(err)
	}
	return dir, nil
}

// The forms of what a node sends about itself, as StartPairing checks them.
var (
	deviceNamePattern   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._ -]*$`)
	agentVersionPattern = regexp.MustCompile(`^[A-Za-z0-9._+-]{0,64}$`)
)

// pairFlags are the flags of `node pair`.
type pairFlags struct {
	pin, qrURI, name, stateDir string
	force                      bool
}

func newPairCommand(d *deps.Deps) *cobra.Command {
	var f pairFlags
	c := &cobra.Command{
		Use:   "pair",
		Short: "Pair this machine with palyrad and wait for an administrator's approval",
		Long: `pair makes this machine a node of palyrad. It checks palyrad's CA against the pinned
fingerprint (--ca-fingerprint or --ca-file; a QR pairing URI carries it), generates an
ECDSA P-256 key in the state directory (it never leaves this machine), sends a
certificate signing request with the pairing code, and waits for an administrator to
approve it. It prints the request id and the key's fingerprint, which the administrator
compares before approving. Once approved it stores the certificate and the CA and exits 0;
a rejected or expired request exits 1 with the reason.

Ctrl-C stops waiting but leaves the request pending: run palyra node pair again (with
the same --state-dir) to resume waiting on it. A machine that is paired already pairs
again only with --force, with a new key.`,
		Example: `  palyra node pair --url https://admin-host:7443 --pin 48213907 --ca-fingerprint sha256:...
  palyra node pair --qr-uri 'palyra://pair?url=...&code=...&ca=sha256:...' --name build-01
  palyra node pair          # resume waiting on a pending request`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return pair(cmd, d, f) },
	}
	bindPairFlags(c, &f)
	c.Flags().BoolVar(&f.force, "force", false, "pair again although this machine is paired or waits on a request, with a new key")
	return c
}

// bindPairFlags adds the flags that pair and run share.
func bindPairFlags(c *cobra.Command, f *pairFlags) {
	c.Flags().StringVar(&f.pin, "pin", "", "the PIN pairing code the administrator gave you")
	c.Flags().StringVar(&f.qrURI, "qr-uri", "", "the palyra://pair?... URI of a QR pairing code (it carries the URL and the CA fingerprint)")
	c.Flags().StringVar(&f.name, "name", "", "the name the administrator sees, 1 to 64 letters, digits, '.', '_', '-' or spaces (default: the host name)")
	c.Flags().StringVar(&f.stateDir, "state-dir", "", stateDirFlag)
}

func pair(cmd *cobra.Command, d *deps.Deps, f pairFlags) error {
	res, err := pairNode(cmd.Context(), d, f, "pair")
	if err != nil {
		return err
	}
	return output.PrintValue(d.Stdout, d.Output, res, func(w io.Writer) { printPaired(w, res) })
}

// printPaired says that the node has paired.
func printPaired(w io.Writer, res *agent.PairResult) {
	fmt.Fprintf(w, "paired as device %s; certificate valid until %s\n", res.DeviceID, res.CertificateExpireTime.UTC().Format(time.RFC3339))
}

// pairNode pairs the node as `palyra node <command>` with the flags f, or resumes the
// request it waits on: it checks the flags, prints the progress on stderr and returns
// the paired node. command ("pair" or "run") is what the messages tell to run again.
func pairNode(ctx context.Context, d *deps.Deps, f pairFlags, command string) (*agent.PairResult, error) {
	dirPath, err := stateDirPath(d, f.stateDir)
	if err != nil {
		return nil, err
	}
	opts, err := pairOptions(d, f)
	if err != nil {
		return nil, err
	}
	dir := agent.NewStateDir(dirPath)
	opts.Dir = dir
	paired, err := dir.Paired()
	if err != nil {
		return nil, err
	}
	var pending *agent.Pending
	if !f.force {
		if pending, err = dir.Pending(); err != nil {
			return nil, err
		}
	}
	switch {
	case paired && !f.force:
		// Pair refuses, saying how to pair again.
	case pending != nil:
		if f.pin != "" || f.qrURI != "" {
			fmt.Fprintf(d.Stderr, "pairing request %s is pending already: the pairing code given is not used (--force starts over)\n", pending.RequestID)
		}
	default:
		needs := "pair needs"
		if command != "pair" {
			needs = "this node is not paired yet: " + command + " needs"
		}
		if err := needFreshSettings(opts, needs); err != nil {
			return nil, err
		}
	}
	resume := "palyra node " + command
	if f.stateDir != "" {
		resume += " --state-dir " + output.ShellQuote(f.stateDir)
	}
	opts.Events = func(e agent.Event) { printEvent(d.Stderr, e, resume) }
	res, err := agent.Pair(ctx, opts)
	var interrupted *agent.InterruptedError
	if errors.As(err, &interrupted) {
		return nil, fmt.Errorf("interrupted: pairing request %s stays pending; run `%s` to resume waiting on it", interrupted.RequestID, resume)
	}
	return res, err
}

// pairOptions checks the command line and turns it into PairOptions (without the state
// directory). Mistakes are usage errors.
func pairOptions(d *deps.Deps, f pairFlags) (agent.PairOptions, error) {
	e := d.Explicit()
	o := agent.PairOptions{URL: e.URL, Force: f.force, Platform: runtime.GOOS + "/" + runtime.GOARCH, Now: d.Now}
	if v := buildinfo.Version(); agentVersionPattern.MatchString(v) {
		o.AgentVersion = v
	}
	switch {
	case e.CAFile != "" && e.CAFingerprint != "":
		return o, cliusage.Wrap(errors.New("give either --ca-file or --ca-fingerprint, not both"))
	case e.CAFile != "":
		ca, err := client.ReadCAFile(e.CAFile)
		if err != nil {
			return o, cliusage.Wrap(err)
		}
		o.CAFingerprint = client.Fingerprint(ca)
	case e.CAFingerprint != "":
		if !client.ValidFingerprint(e.CAFingerprint) {
			return o, cliusage.Wrap(fmt.Errorf("--ca-fingerprint must look like sha256:<64 lower-case hex digits>, got %q", e.CAFingerprint))
		}
		o.CAFingerprint = e.CAFingerprint
	}
	switch {
	case f.pin != "" && f.qrURI != "":
		return o, cliusage.Wrap(errors.New("give either --pin or --qr-uri, not both"))
	case f.pin != "":
		if !agent.ValidPIN(f.pin) {
			return o, cliusage.Wrap(errors.New("--pin must be the 6 to 12 digits the administrator gave you"))
		}
		o.Code.PIN = f.pin
	case f.qrURI != "":
		u, err := agent.ParsePairingURI(f.qrURI)
		if err != nil {
			return o, cliusage.Wrap(fmt.Errorf("--qr-uri: %w", err))
		}
		if o.URL != "" && !client.SameServer(o.URL, u.URL) {
			return o, cliusage.Wrap(fmt.Errorf("--url %s is not the server in --qr-uri (%s): drop --url (and PALYRA_URL)", o.URL, u.URL))
		}
		if o.CAFingerprint != "" && o.CAFingerprint != u.CAFingerprint {
			return o, cliusage.Wrap(fmt.Errorf("the CA given (%s) is not the one in --qr-uri (%s)", o.CAFingerprint, u.CAFingerprint))
		}
		o.URL, o.CAFingerprint, o.Code.QR = u.URL, u.CAFingerprint, u.Code
	}
	if o.URL != "" {
		if u, err := url.Parse(o.URL); err != nil || u.Scheme != "https" || u.Host == "" {
			return o, cliusage.Wrap(fmt.Errorf("--url must look like https://host:7443, got %q", o.URL))
		}
	}
	name, fromHost := f.name, false
	if name == "" {
		host, err := os.Hostname()
		if err != nil {
			return o, cliusage.Wrap(fmt.Errorf("cannot read the host name (%v): pass --name", err))
		}
		name, fromHost = host, true
	}
	if len(name) > 64 || !deviceNamePattern.MatchString(name) {
		what := "--name"
		if fromHost {
			what = "the host name " + fmt.Sprintf("%q", name)
		}
		return o, cliusage.Wrap(fmt.Errorf("%s cannot be a device name: use 1 to 64 letters, digits, '.', '_', '-' or spaces, "+
			"starting with a letter or digit (pass --name)", what))
	}
	o.DeviceName = name
	return o, nil
}

// needFreshSettings checks that a new pairing has all it needs: palyrad's URL, its CA
// pinned and a code. A node must not pair with a daemon it has not pinned. needs begins
// the messages ("pair needs").
func needFreshSettings(o agent.PairOptions, needs string) error {
	switch {
	case o.Code.PIN == "" && o.Code.QR == "":
		return cliusage.Wrap(fmt.Errorf("%s a pairing code: --pin with --url and --ca-fingerprint (or --ca-file), "+
			"or --qr-uri, as `palyra pairing codes create` printed them", needs))
	case o.URL == "":
		return cliusage.Wrap(errors.New("--pin needs --url: the address of palyrad (e.g. https://admin-host:7443)"))
	case o.CAFingerprint == "":
		return cliusage.Wrap(fmt.Errorf("%s palyrad's CA pinned: pass --ca-fingerprint sha256:... or --ca-file ca.pem, "+
			"as the administrator gave them; a node does not pair with a daemon it cannot verify", needs))
	}
	return nil
}

// printEvent writes pairing progress on w (stderr), escaping what palyrad sent (ids,
// fingerprints, errors). resume is the command that resumes.
func printEvent(w io.Writer, e agent.Event, resume string) {
	switch e := e.(type) {
	case agent.Waiting:
		if e.Resumed {
			output.Fprintf(w, "resuming pairing request %s with %s\n", e.RequestID, e.URL)
		}
		output.Fprintf(w, "waiting for approval (request %s, key %s)\n", e.RequestID, e.KeyFingerprint)
		if e.ServerKeyFingerprint != "" && e.ServerKeyFingerprint != e.KeyFingerprint {
			output.Fprintf(w, "WARNING: palyrad reports the key fingerprint %s for this request, but this node's key is %s: "+
				"the request must not be approved; have it rejected\n", e.ServerKeyFingerprint, e.KeyFingerprint)
		}
		choice := ""
		switch e.DeviceClaim {
		case nodev1.DeviceClaim_DEVICE_CLAIM_PROVEN:
			output.Fprintf(w, "pairing again as device %s: palyrad checked that this node holds the device's key\n", e.PreviousDeviceID)
		case nodev1.DeviceClaim_DEVICE_CLAIM_UNPROVEN:
			output.Fprintf(w, "palyrad could not check that this node is device %s (it no longer has a certificate of the device that "+
				"counts): the approver must choose to give it that device's identity, or pair it as a new device\n", e.PreviousDeviceID)
			choice = " --replace-device " + e.PreviousDeviceID
		case nodev1.DeviceClaim_DEVICE_CLAIM_REVOKED:
			output.Fprintf(w, "device %s is revoked: only an approver's reinstatement lets this node back under its id\n", e.PreviousDeviceID)
			choice = " --replace-device " + e.PreviousDeviceID + " --reinstate"
		case nodev1.DeviceClaim_DEVICE_CLAIM_NEW:
			if e.PreviousDeviceID != "" {
				output.Fprintf(w, "palyrad knows no device %s: this node pairs as a new device\n", e.PreviousDeviceID)
			}
		}
		output.Fprintf(w, "On the admin machine, check that the request shows this key fingerprint, then approve it:\n"+
			"  palyra pairing requests approve %s --expect-fingerprint %s%s\n"+
			"or reject it:\n"+
			"  palyra pairing requests reject %s --reason \"...\"\n", e.RequestID, e.KeyFingerprint, choice, e.RequestID)
		if !e.ExpireTime.IsZero() {
			output.Fprintf(w, "The request expires at %s. ", e.ExpireTime.UTC().Format(time.RFC3339))
		}
		output.Fprintf(w, "Ctrl-C stops waiting; `%s` resumes.\n", resume)
	case agent.StateChanged:
		if e.State != nodev1.PairingState_PAIRING_STATE_PENDING_APPROVAL {
			output.Fprintf(w, "pairing request is %s\n", output.Enum(e.State))
		}
	case agent.Retrying:
		output.Fprintf(w, "lost touch with palyrad (%v); retrying in %s\n", e.Err, e.Delay.Round(100*time.Millisecond))
	case agent.Polling:
		output.Fprintf(w, "watching the request keeps failing; asking every %s instead\n", e.Interval)
	}
}
