// Package deps holds what every palyra command constructor takes: the output streams,
// the environment, the connection flags and the output format, bound by the root
// command and read when a command runs.
package deps

import (
	"errors"
	"io"

	"github.com/spf13/pflag"

	"github.com/palyra/palyra/cli/internal/client"
	"github.com/palyra/palyra/cli/internal/output"
)

// Deps are the dependencies of the commands.
type Deps struct {
	// Stdout receives results; Stderr receives progress and errors.
	Stdout, Stderr io.Writer
	// Getenv reads the environment.
	Getenv func(string) string
	// Output is the -o format.
	Output output.Format

	url, caFile, caFingerprint string
}

// BindGlobalFlags adds the flags every command shares to fs.
func (d *Deps) BindGlobalFlags(fs *pflag.FlagSet) {
	d.Output = output.Table
	fs.VarP(&d.Output, "output", "o", "output format: table or json")
	fs.StringVar(&d.url, "url", "", "palyrad base URL, e.g. https://127.0.0.1:7443 (env PALYRA_URL)")
	fs.StringVar(&d.caFile, "ca-file", "", "CA certificate (PEM) that issued palyrad's certificate, e.g. var/ca.pem (env PALYRA_CA_FILE)")
	fs.StringVar(&d.caFingerprint, "ca-fingerprint", "", "pin palyrad's CA by its sha256:... fingerprint instead of a CA file (env PALYRA_CA_FINGERPRINT)")
}

// Client connects to palyrad with the flags, falling back to PALYRA_URL,
// PALYRA_CA_FILE and PALYRA_CA_FINGERPRINT.
func (d *Deps) Client() (*client.Client, error) {
	opts := client.Options{
		URL:           d.flagOrEnv(d.url, "PALYRA_URL"),
		CAFile:        d.flagOrEnv(d.caFile, "PALYRA_CA_FILE"),
		CAFingerprint: d.flagOrEnv(d.caFingerprint, "PALYRA_CA_FINGERPRINT"),
	}
	if opts.URL == "" {
		return nil, errors.New("no server given: pass --url https://host:7443 or set PALYRA_URL")
	}
	if d.caFile != "" || d.caFingerprint != "" {
		// A flag on the command line replaces the environment's trust setting, not both.
		opts.CAFile, opts.CAFingerprint = d.caFile, d.caFingerprint
	}
	return client.New(opts)
}

func (d *Deps) flagOrEnv(flag, env string) string {
	if flag != "" {
		return flag
	}
	return d.Getenv(env)
}
