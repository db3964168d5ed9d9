package auth

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	"github.com/palyra/palyra/cli/internal/client"
	"github.com/palyra/palyra/cli/internal/cmd/deps"
	"github.com/palyra/palyra/cli/internal/output"
	"github.com/palyra/palyra/cli/internal/profile"
	accessv1 "github.com/palyra/palyra/gen/go/palyra/access/v1"
	"github.com/palyra/palyra/internal/cliusage"
)

// maxTokenBytes bounds what login reads from a token file or stdin.
const maxTokenBytes = 64 << 10

func newLoginCommand(d *deps.Deps) *cobra.Command {
	var token, tokenFile string
	c := &cobra.Command{
		Use:   "login",
		Short: "Log in to palyrad with an API token and save it in a profile",
		Long: `login checks an API token against palyrad (WhoAmI) and, only when it works, saves the
server's URL, its CA pinned by fingerprint and the token in a profile, and makes that
profile the current one. The token is never printed.

Trust in the server comes from --ca-file (its CA certificate, <data-dir>/ca.pem) or
--ca-fingerprint (as palyrad logs it at start). Without either, login shows the CA that
the server presents and asks whether to trust it; without a terminal to ask on, it
refuses.

The profile is --profile (or PALYRA_PROFILE), else the current one, else "default".`,
		Example: `  palyra auth login --url https://127.0.0.1:7443 --token-file var/bootstrap-token --ca-file var/ca.pem
  palyra auth login --url https://admin-host:7443 --token-file - --ca-fingerprint sha256:... --profile prod < token.txt`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return login(cmd, d, token, tokenFile)
		},
	}
	c.Flags().StringVar(&token, "token", "", "the API token, plr_... (visible to other users in the process list: prefer --token-file)")
	c.Flags().StringVar(&tokenFile, "token-file", "", "read the API token from this file; - reads it from stdin")
	return c
}

func login(cmd *cobra.Command, d *deps.Deps, flagToken, tokenFile string) error {
	stdin := d.Stdin
	if stdin == nil {
		stdin = strings.NewReader("")
	}
	token, tokenSource, err := readToken(flagToken, tokenFile, stdin)
	if err != nil {
		return err
	}
	path, file, err := d.Profiles()
	if err != nil {
		return err
	}
	name, _, err := d.ProfileName(file)
	if err != nil {
		return err
	}
	if name == "" {
		name = profile.DefaultName
	}
	old, hadProfile := file.Get(name)
	explicit := d.Explicit()
	url := explicit.URL
	if url == "" && hadProfile {
		url = old.URL
	}
	if url == "" {
		return cliusage.Wrap(errors.New("login needs the server: pass --url https://host:7443"))
	}
	var profilePin string
	if hadProfile && client.SameServer(url, old.URL) {
		profilePin = old.CAFingerprint
	}
	source, err := decideTrust(trustInput{
		CAFile:             explicit.CAFile,
		CAFingerprint:      explicit.CAFingerprint,
		ProfileFingerprint: profilePin,
		StdinIsTerminal:    d.StdinIsTerminal,
		StdinHoldsToken:    tokenFile == "-",
	})
	if err != nil {
		return err
	}

	var pin string
	switch source {
	case trustFile:
		ca, err := client.ReadCAFile(explicit.CAFile)
		if err != nil {
			return err
		}
		pin = client.Fingerprint(ca)
	case trustPin:
		pin = explicit.CAFingerprint
	case trustProfile:
		pin = profilePin
	case trustAsk:
		ca, err := client.FetchServerCA(cmd.Context(), url)
		if err != nil {
			return err
		}
		pin = client.Fingerprint(ca)
		// The subject is the unverified server's: escaped.
		output.Fprintf(d.Stderr, "The server's CA is %s (%s). Trust it? [y/N] ", pin, ca.Subject)
		answer, _ := bufio.NewReader(stdin).ReadString('\n')
		if !trustAnswer(answer) {
			return errors.New("the server's CA was not trusted; nothing was saved. Compare its fingerprint with the " +
				"one palyrad logs at start, then log in again (or pass --ca-fingerprint)")
		}
	}

	c, err := client.New(client.Options{
		URL:           url,
		CAFingerprint: pin,
		Token:         token,
		TokenSource:   tokenSource,
		TokenAdvice:   "check the token: it must be the whole plr_... string of a token that is neither revoked nor expired",
	})
	if err != nil {
		return err
	}
	res, err := c.Access.WhoAmI(cmd.Context(), connect.NewRequest(&accessv1.WhoAmIRequest{}))
	if err != nil {
		return err
	}

	// Read the file again: another palyra may have changed it during the call.
	if _, file, err = d.Profiles(); err != nil {
		return err
	}
	if prev, ok := file.Get(name); ok && !client.SameServer(prev.URL, c.URL) {
		fmt.Fprintf(d.Stderr, "profile %s pointed at %s; it now points at %s\n", name, prev.URL, c.URL)
	}
	file.Put(name, profile.Profile{URL: c.URL, Token: token, CAFingerprint: pin})
	file.Current = name
	if err := profile.Save(path, file); err != nil {
		return err
	}
	p := res.Msg.GetPrincipal()
	return output.Print(d.Stdout, d.Output, res.Msg, func(w io.Writer) {
		fmt.Fprintf(w, "Logged in to %s as %s (role %s, user %s); profile %s\n",
			c.URL, p.GetId(), output.Enum(p.GetRole()), p.GetUser(), name)
	})
}

// readToken reads the token from --token or --token-file (where "-" is stdin), trimmed
// of surrounding white space, and says where it came from. It never puts the token in
// an error.
func readToken(flagToken, file string, stdin io.Reader) (token, source string, err error) {
	switch {
	case flagToken != "" && file != "":
		return "", "", cliusage.Wrap(errors.New("give either --token or --token-file, not both"))
	case flagToken != "":
		token, source = strings.TrimSpace(flagToken), "--token"
	case file == "-":
		b, err := io.ReadAll(io.LimitReader(stdin, maxTokenBytes))
		if err != nil {
			return "", "", fmt.Errorf("read the token from stdin: %w", err)
		}
		token, source = strings.TrimSpace(string(b)), "stdin"
	case file != "":
		f, err := os.Open(file)
		if err != nil {
			return "", "", fmt.Errorf("read the token: %w", err)
		}
		defer f.Close()
		b, err := io.ReadAll(io.LimitReader(f, maxTokenBytes))
		if err != nil {
			return "", "", fmt.Errorf("read the token: %w", err)
		}
		token, source = strings.TrimSpace(string(b)), file
	default:
		return "", "", cliusage.Wrap(errors.New("login needs an API token: pass --token-file FILE (- for stdin) or --token plr_..."))
	}
	if token == "" {
		return "", "", fmt.Errorf("the token from %s is empty", source)
	}
	if !strings.HasPrefix(token, "plr_") || strings.ContainsAny(token, " \t\r\n") {
		return "", "", fmt.Errorf("the token from %s does not look like a Palyra API token (one line, plr_<id>_<secret>)", source)
	}
	return token, source, nil
}

// trustSource is how login comes to trust the server.
type trustSource int

const (
	trustFile    trustSource = iota + 1 // pin the certificate in --ca-file
	trustPin                            // pin --ca-fingerprint
	trustProfile                        // keep the pin of the profile, saved for the same URL
	trustAsk                            // show the CA the server presents and ask
)

// trustInput is what decides how login trusts the server.
type trustInput struct {
	// CAFile and CAFingerprint are the trust flags (or their environment variables).
	CAFile, CAFingerprint string
	// ProfileFingerprint is the pin of the profile being replaced, when it is for the
	// same URL.
	ProfileFingerprint string
	// StdinIsTerminal says whether a person can answer a question on stdin.
	StdinIsTerminal bool
	// StdinHoldsToken says that stdin carried the token, so it cannot answer.
	StdinHoldsToken bool
}

// decideTrust chooses how to trust the server: the CA file or fingerprint given, else
// the pin saved for the same server, else asking a person; it refuses to ask when no
// one can answer, rather than wait for an answer that never comes.
func decideTrust(in trustInput) (trustSource, error) {
	switch {
	case in.CAFile != "" && in.CAFingerprint != "":
		return 0, cliusage.Wrap(errors.New("give either --ca-file or --ca-fingerprint, not both"))
	case in.CAFile != "":
		return trustFile, nil
	case in.CAFingerprint != "":
		if !client.ValidFingerprint(in.CAFingerprint) {
			return 0, cliusage.Wrap(fmt.Errorf("--ca-fingerprint must look like sha256:<64 lower-case hex digits>, got %q", in.CAFingerprint))
		}
		return trustPin, nil
	case in.ProfileFingerprint != "":
		return trustProfile, nil
	case in.StdinHoldsToken:
		return 0, errors.New("cannot ask whether to trust the server's CA: stdin carries the token. " +
			"Pass --ca-fingerprint sha256:... (palyrad logs it at start as ca_fingerprint) or --ca-file <data-dir>/ca.pem")
	case !in.StdinIsTerminal:
		return 0, errors.New("cannot ask whether to trust the server's CA: stdin is not a terminal. " +
			"Pass --ca-fingerprint sha256:... (palyrad logs it at start as ca_fingerprint) or --ca-file <data-dir>/ca.pem")
	}
	return trustAsk, nil
}

// trustAnswer reports whether an answer to "Trust it? [y/N]" is yes.
func trustAnswer(line string) bool {
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return true
	}
	return false
}
