// Package deps holds what every palyra command constructor takes: the standard streams,
// the environment, the clock, the global flags and the output format, bound by the root
// command and read when a command runs. It also resolves where and how to connect:
// each setting comes from its flag, else its environment variable, else the selected
// profile (see package profile).
package deps

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/pflag"

	"github.com/palyra/palyra/cli/internal/client"
	"github.com/palyra/palyra/cli/internal/output"
	"github.com/palyra/palyra/cli/internal/profile"
	"github.com/palyra/palyra/internal/cliusage"
)

// Deps are the dependencies of the commands.
type Deps struct {
	// Stdout receives results; Stderr receives progress, questions and errors.
	Stdout, Stderr io.Writer
	// Stdin is read for answers to questions and for `--token-file -`.
	Stdin io.Reader
	// StdinIsTerminal says whether a person can answer on Stdin; without one, commands
	// refuse instead of asking.
	StdinIsTerminal bool
	// StdoutIsTerminal says whether Stdout is a terminal, which acts on control
	// characters: commands that write raw bytes check what they write first.
	StdoutIsTerminal bool
	// Getenv reads the environment.
	Getenv func(string) string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Output is the -o format.
	Output output.Format
	// OpenBrowser opens a URL in the user's browser (browser.Opener); nil when this
	// machine has none.
	OpenBrowser func(ctx context.Context, url string) error

	url, caFile, caFingerprint, profile string
}

// BindGlobalFlags adds the flags every command shares to fs.
func (d *Deps) BindGlobalFlags(fs *pflag.FlagSet) {
	d.Output = output.Table
	fs.VarP(&d.Output, "output", "o", "output format: table or json")
	fs.StringVar(&d.url, "url", "", "palyrad base URL, e.g. https://127.0.0.1:7443 (env PALYRA_URL; default: the profile's)")
	fs.StringVar(&d.caFile, "ca-file", "", "CA certificate (PEM) that issued palyrad's certificate, e.g. var/ca.pem (env PALYRA_CA_FILE)")
	fs.StringVar(&d.caFingerprint, "ca-fingerprint", "", "pin palyrad's CA by its sha256:... fingerprint instead of a CA file (env PALYRA_CA_FINGERPRINT; default: the profile's)")
	fs.StringVar(&d.profile, "profile", "", "`name` of the profile to use, as palyra auth profiles list shows them (env PALYRA_PROFILE; default: the current profile)")
}

// Clock returns the current time.
func (d *Deps) Clock() time.Time {
	if d.Now == nil {
		return time.Now()
	}
	return d.Now()
}

// Explicit are the connection settings given by flags or the environment, without the
// profile's.
type Explicit struct {
	// URL is --url, else PALYRA_URL.
	URL string
	// CAFile and CAFingerprint are --ca-file and --ca-fingerprint when either is given,
	// else PALYRA_CA_FILE and PALYRA_CA_FINGERPRINT: a trust flag replaces the
	// environment's trust setting rather than adding to it.
	CAFile, CAFingerprint string
}

// Explicit returns the connection settings given by flags or the environment.
func (d *Deps) Explicit() Explicit {
	e := Explicit{
		URL:           d.flagOrEnv(d.url, "PALYRA_URL"),
		CAFile:        d.Getenv("PALYRA_CA_FILE"),
		CAFingerprint: d.Getenv("PALYRA_CA_FINGERPRINT"),
	}
	if d.caFile != "" || d.caFingerprint != "" {
		e.CAFile, e.CAFingerprint = d.caFile, d.caFingerprint
	}
	return e
}

// Profiles returns the profile file's path and content; a missing file is empty.
func (d *Deps) Profiles() (string, *profile.File, error) {
	path, err := profile.Path(d.Getenv)
	if err != nil {
		return "", nil, err
	}
	f, err := profile.Load(path)
	if err != nil {
		return "", nil, err
	}
	return path, f, nil
}

// ProfileName returns the selected profile's name: --profile, else PALYRA_PROFILE, else
// the file's current profile ("" when there is none). selected is true when the name
// came from the flag or the environment.
func (d *Deps) ProfileName(f *profile.File) (name string, selected bool, err error) {
	switch {
	case d.profile != "":
		if err := profile.CheckName(d.profile); err != nil {
			return "", true, cliusage.Wrap(fmt.Errorf("--profile: %w", err))
		}
		return d.profile, true, nil
	case d.Getenv("PALYRA_PROFILE") != "":
		name := d.Getenv("PALYRA_PROFILE")
		if err := profile.CheckName(name); err != nil {
			return "", true, fmt.Errorf("PALYRA_PROFILE: %w", err)
		}
		return name, true, nil
	}
	return f.Current, false, nil
}

// Profile returns the selected profile. A profile that was selected but does not exist
// is an error; no profile at all is not (name is then "").
func (d *Deps) Profile() (name string, p *profile.Profile, err error) {
	path, f, err := d.Profiles()
	if err != nil {
		return "", nil, err
	}
	name, _, err = d.ProfileName(f)
	if err != nil || name == "" {
		return "", nil, err
	}
	p, ok := f.Get(name)
	if !ok {
		return "", nil, fmt.Errorf("there is no profile %q in %s; create it with `palyra auth login --profile %s --url ...`, "+
			"or see `palyra auth profiles list`", name, path, name)
	}
	return name, p, nil
}

// Options resolves where and how to connect. Each setting comes from its flag, else its
// environment variable, else the selected profile; the token from PALYRA_TOKEN, else
// the profile. The profile's token and CA pin are used only when the URL is the
// profile's, so that a token never travels to a server it was not stored for.
func (d *Deps) Options() (client.Options, error) {
	e := d.Explicit()
	opts := client.Options{URL: e.URL, CAFile: e.CAFile, CAFingerprint: e.CAFingerprint}
	envToken := d.Getenv("PALYRA_TOKEN")
	if envToken != "" {
		opts.Token, opts.TokenSource = envToken, "PALYRA_TOKEN"
		opts.TokenAdvice = "check PALYRA_TOKEN, or unset it to use the token of your profile (`palyra auth login`)"
	}
	complete := opts.URL != "" && (opts.CAFile != "" || opts.CAFingerprint != "") && opts.Token != ""
	if !complete {
		name, p, err := d.Profile()
		// Without a place for profiles (no HOME) a command given all it needs works.
		if err != nil && (d.profile != "" || d.Getenv("PALYRA_PROFILE") != "" || !errors.Is(err, profile.ErrNoPath)) {
			return client.Options{}, err
		}
		if p != nil {
			if opts.URL == "" {
				opts.URL = p.URL
			}
			if client.SameServer(opts.URL, p.URL) {
				if opts.CAFile == "" && opts.CAFingerprint == "" {
					opts.CAFingerprint = p.CAFingerprint
				}
				if opts.Token == "" && p.Token != "" {
					opts.Token, opts.TokenSource = p.Token, fmt.Sprintf("profile %q", name)
					opts.TokenAdvice = fmt.Sprintf("log in again with `palyra auth login --profile %s`", name)
				}
			}
		}
	}
	if opts.URL == "" {
		return client.Options{}, errors.New("no server given: log in with `palyra auth login --url https://host:7443 --token-file FILE`, " +
			"or pass --url (or set PALYRA_URL)")
	}
	return opts, nil
}

// Client connects to palyrad with the resolved Options.
func (d *Deps) Client() (*client.Client, error) {
	opts, err := d.Options()
	if err != nil {
		return nil, err
	}
	return client.New(opts)
}

func (d *Deps) flagOrEnv(flag, env string) string {
	if flag != "" {
		return flag
	}
	return d.Getenv(env)
}
