package pairing

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/palyra/palyra/cli/internal/client"
	"github.com/palyra/palyra/cli/internal/cliflag"
	"github.com/palyra/palyra/cli/internal/cmd/deps"
	"github.com/palyra/palyra/cli/internal/output"
	"github.com/palyra/palyra/cli/internal/qrterm"
	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	"github.com/palyra/palyra/internal/cliusage"
)

// methods maps the --method names to the API's pairing methods.
var methods = map[string]controlplanev1.PairingMethod{
	"pin": controlplanev1.PairingMethod_PAIRING_METHOD_PIN,
	"qr":  controlplanev1.PairingMethod_PAIRING_METHOD_QR,
}

// The bounds of a code's lifetime and PIN length, as palyrad enforces them.
const (
	minTTL                     = 30 * time.Second
	maxTTL                     = 24 * time.Hour
	minPINDigits, maxPINDigits = 6, 12
)

func newCodeCreateCommand(d *deps.Deps) *cobra.Command {
	var (
		method    = cliflag.NewChoice("pin", "qr")
		ttl       cliflag.Duration
		label     string
		pinDigits uint32
	)
	c := &cobra.Command{
		Use:   "create",
		Short: "Create a single-use pairing code and print it once",
		Long: `create makes a pairing code and prints it with the command that the node's operator
runs. A PIN is a few digits to type; a QR code is a random token in a
palyra://pair?url=...&code=...&ca=sha256:... URI, drawn in the terminal, which also
tells the node where palyrad is and which CA to pin. The code is shown once.`,
		Example: `  palyra pairing codes create --method pin --ttl 10m --label build-box
  palyra pairing codes create --method qr --ttl 30m
  palyra pairing codes create --pin-digits 12 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if method.Value == "" {
				method.Value = "pin"
			}
			req := &controlplanev1.CreatePairingCodeRequest{Method: methods[method.Value], Label: label}
			if n := utf8.RuneCountInString(label); n > 64 {
				return cliusage.Wrap(fmt.Errorf("--label is %d characters long; at most 64", n))
			}
			if ttl.Value != 0 {
				if ttl.Value < minTTL || ttl.Value > maxTTL {
					return cliusage.Wrap(fmt.Errorf("--ttl must be between 30s and 24h, got %s", ttl.Value))
				}
				req.Ttl = durationpb.New(ttl.Value)
			}
			if cmd.Flags().Changed("pin-digits") {
				if method.Value != "pin" {
					return cliusage.Wrap(errors.New("--pin-digits goes with --method pin only"))
				}
				if pinDigits < minPINDigits || pinDigits > maxPINDigits {
					return cliusage.Wrap(fmt.Errorf("--pin-digits must be between %d and %d, got %d", minPINDigits, maxPINDigits, pinDigits))
				}
				req.PinDigits = pinDigits
			}
			c, err := d.Client()
			if err != nil {
				return err
			}
			res, err := c.Pairing.CreatePairingCode(cmd.Context(), connect.NewRequest(req))
			if err != nil {
				return err
			}
			msg := res.Msg
			fmt.Fprintln(d.Stderr, "The code is shown once: palyrad keeps only its hash.")
			if err := output.Print(d.Stdout, d.Output, msg, func(w io.Writer) { createdTable(w, msg) }); err != nil || d.Output == output.JSON {
				return err
			}
			if msg.GetPairingUri() != "" {
				qr, err := qrterm.Render(msg.GetPairingUri())
				if err != nil {
					return err
				}
				fmt.Fprintf(d.Stdout, "\n%s", qr)
			}
			fmt.Fprintf(d.Stdout, "\nOn the node, run:\n  %s\n", NodeCommand(c.URL, msg))
			if msg.GetPairingUri() == "" && isLoopback(c.URL) {
				fmt.Fprintf(d.Stderr, "%s is this machine's own address: give the node an address at which it reaches palyrad.\n", c.URL)
			}
			return nil
		},
	}
	c.Flags().Var(method, "method", "pin (digits to type) or qr (a URI and a QR code to scan or paste) (default pin)")
	c.Flags().Var(&ttl, "ttl", "how long the code works, 30s to 24h, e.g. 10m (default: palyrad's, 10m)")
	c.Flags().StringVar(&label, "label", "", "what the code is for, e.g. the node it is meant for (at most 64 characters)")
	c.Flags().Uint32Var(&pinDigits, "pin-digits", 0, "length of the PIN, 6 to 12 (default: palyrad's, 8)")
	return c
}

// NodeCommand returns the command that the node's operator runs to pair with the code
// in res and then run the agent: `palyra node run --qr-uri '<uri>'` for a QR code, else
// `palyra node run --url <url> --pin <pin> --ca-fingerprint <fp>` with the URL the CLI
// reached palyrad at. (`palyra node pair` with the same flags pairs only.)
func NodeCommand(serverURL string, res *controlplanev1.CreatePairingCodeResponse) string {
	if res.GetPairingUri() != "" {
		return "palyra node run --qr-uri " + output.ShellQuote(res.GetPairingUri())
	}
	fp := res.GetCaFingerprint()
	if fp == "" {
		fp = "sha256:..."
	}
	return fmt.Sprintf("palyra node run --url %s --pin %s --ca-fingerprint %s", output.ShellQuote(serverURL), output.ShellQuote(res.GetCode()), fp)
}

// isLoopback reports whether the URL's host is a loopback address or localhost.
func isLoopback(rawURL string) bool {
	u, err := url.Parse(rawURL)
	if err != nil {
		return false
	}
	if strings.EqualFold(u.Hostname(), "localhost") {
		return true
	}
	ip := net.ParseIP(u.Hostname())
	return ip != nil && ip.IsLoopback()
}

// createdTable writes a new code: its description, the secret and the CA to pin.
func createdTable(w io.Writer, res *controlplanev1.CreatePairingCodeResponse) {
	pc := res.GetPairingCode()
	row := func(k, v string) { fmt.Fprintf(w, "%s\t%s\n", k, v) }
	row("ID", pc.GetId())
	row("Method", output.Enum(pc.GetMethod()))
	row("Expires", output.Time(pc.GetExpireTime(), "-"))
	row("Label", output.Cell(pc.GetLabel()))
	row("Code", res.GetCode())
	if res.GetPairingUri() != "" {
		row("URI", res.GetPairingUri())
	}
	row("CA fingerprint", output.Cell(res.GetCaFingerprint()))
}

func newCodeListCommand(d *deps.Deps) *cobra.Command {
	var (
		active bool
		paging cliflag.Paging
	)
	c := &cobra.Command{
		Use:   "list",
		Short: "List pairing codes, newest first, without their secrets",
		Example: `  palyra pairing codes list --active
  palyra pairing codes list --all -o json`,
		Args: cobra.NoArgs,
		RunE: deps.List[*controlplanev1.PairingCode, *controlplanev1.ListPairingCodesResponse]{
			Paging: &paging,
			Noun:   "codes",
			Page: func(ctx context.Context, c *client.Client, page string) (*controlplanev1.ListPairingCodesResponse, error) {
				return deps.Msg(c.Pairing.ListPairingCodes(ctx, connect.NewRequest(&controlplanev1.ListPairingCodesRequest{
					PageSize: paging.Limit, ActiveOnly: active, PageToken: page,
				})))
			},
			Items: (*controlplanev1.ListPairingCodesResponse).GetPairingCodes,
			Response: func(codes []*controlplanev1.PairingCode, next string) *controlplanev1.ListPairingCodesResponse {
				return &controlplanev1.ListPairingCodesResponse{PairingCodes: codes, NextPageToken: next}
			},
			Table: codeListTable,
		}.RunE(d),
	}
	c.Flags().BoolVar(&active, "active", false, "list only the codes that can still be used")
	paging.Bind(c.Flags(), "codes", "every code")
	return c
}

func codeListTable(w io.Writer, codes []*controlplanev1.PairingCode) {
	fmt.Fprintln(w, "ID\tMETHOD\tSTATE\tLABEL\tEXPIRES\tFAILED\tCREATED BY\tREQUEST")
	for _, c := range codes {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", c.GetId(), output.Enum(c.GetMethod()), output.Enum(c.GetState()),
			output.Cell(c.GetLabel()), output.Time(c.GetExpireTime(), "-"), c.GetFailedAttempts(),
			output.Cell(c.GetCreatedBy()), output.Cell(c.GetRequestId()))
	}
}

func newCodeDeleteCommand(d *deps.Deps) *cobra.Command {
	return &cobra.Command{
		Use:     "delete ID",
		Short:   "Withdraw a pairing code that has not been used",
		Example: "  palyra pairing codes delete 01JD5ZJ8Q0W1X2Y3Z4A5B6C7D8",
		Args:    cobra.ExactArgs(1),
		RunE: deps.ByID[*controlplanev1.DeletePairingCodeResponse]{
			ParseID: parseCodeID,
			Call: func(ctx context.Context, c *client.Client, id string) (*controlplanev1.DeletePairingCodeResponse, error) {
				return deps.Msg(c.Pairing.DeletePairingCode(ctx, connect.NewRequest(&controlplanev1.DeletePairingCodeRequest{Id: id})))
			},
			Table: func(w io.Writer, m *controlplanev1.DeletePairingCodeResponse) { codeTable(w, m.GetPairingCode()) },
		}.RunE(d),
	}
}
