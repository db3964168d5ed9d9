package deps_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/palyra/palyra/cli/internal/client"
	"github.com/palyra/palyra/cli/internal/cliflag"
	"github.com/palyra/palyra/cli/internal/cmd/deps"
	"github.com/palyra/palyra/cli/internal/output"
	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	"github.com/palyra/palyra/internal/cliusage"
)

// TestList checks what a list command prints for one page, for every page with --all
// and with -o json, and the order of its checks.
func TestList(t *testing.T) {
	t.Parallel()
	// Three pages of two secrets: "" -> "p2" -> "p3" -> end.
	pages := map[string]*controlplanev1.ListSecretsResponse{}
	for i, token := range []string{"", "p2", "p3"} {
		next := fmt.Sprintf("p%d", i+2)
		if i == 2 {
			next = ""
		}
		pages[token] = &controlplanev1.ListSecretsResponse{NextPageToken: next, Secrets: []*controlplanev1.Secret{
			{Name: fmt.Sprintf("s%d", 2*i+1)}, {Name: fmt.Sprintf("s%d", 2*i+2)},
		}}
	}

	tests := map[string]struct {
		args       []string
		json       bool
		checkErr   error
		pageErr    error
		wantOut    string
		wantErrOut string
		wantErr    string
		wantUsage  bool
		wantCalls  int
	}{
		"one page": {
			wantOut:    "NAME\ns1\ns2\n",
			wantErrOut: "more secrets follow: pass --all to list them all\n",
			wantCalls:  1,
		},
		"one page as JSON": {
			json:      true,
			wantOut:   `"nextPageToken": "p2"`,
			wantCalls: 1,
		},
		"--all": {
			args:      []string{"--all"},
			wantOut:   "NAME\ns1\ns2\ns3\ns4\ns5\ns6\n",
			wantCalls: 3,
		},
		"--all as JSON": {
			args:      []string{"--all"},
			json:      true,
			wantOut:   `"nextPageToken": ""`,
			wantCalls: 3,
		},
		"bad --limit": {
			args:      []string{"--limit", "0"},
			wantErr:   "--limit must be between 1 and",
			wantUsage: true,
		},
		"Check before --limit": {
			args:     []string{"--limit", "0"},
			checkErr: errors.New("bad --name"),
			wantErr:  "bad --name",
		},
		"call fails": {
			pageErr:   errors.New("unavailable"),
			wantErr:   "unavailable",
			wantCalls: 1,
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			env := map[string]string{"PALYRA_URL": "https://127.0.0.1:7443", "PALYRA_CA_FINGERPRINT": prodFP, "PALYRA_TOKEN": prodToken}
			var stdout, stderr bytes.Buffer
			d := &deps.Deps{Stdout: &stdout, Stderr: &stderr, Getenv: func(k string) string { return env[k] }, Output: output.Table}
			if tt.json {
				d.Output = output.JSON
			}
			var (
				paging cliflag.Paging
				calls  int
			)
			cmd := &cobra.Command{
				Use: "list",
				RunE: deps.List[*controlplanev1.Secret, *controlplanev1.ListSecretsResponse]{
					Paging: &paging,
					Noun:   "secrets",
					Check:  func() error { return tt.checkErr },
					Page: func(_ context.Context, _ *client.Client, page string) (*controlplanev1.ListSecretsResponse, error) {
						calls++
						if tt.pageErr != nil {
							return nil, tt.pageErr
						}
						return pages[page], nil
					},
					Items: (*controlplanev1.ListSecretsResponse).GetSecrets,
					Response: func(list []*controlplanev1.Secret, next string) *controlplanev1.ListSecretsResponse {
						return &controlplanev1.ListSecretsResponse{Secrets: list, NextPageToken: next}
					},
					Table: func(w io.Writer, list []*controlplanev1.Secret) {
						fmt.Fprintln(w, "NAME")
						for _, s := range list {
							fmt.Fprintln(w, s.GetName())
						}
					},
				}.RunE(d),
				SilenceErrors: true,
				SilenceUsage:  true,
			}
			paging.Bind(cmd.Flags(), "secrets", "every secret")
			cmd.SetArgs(tt.args)
			err := cmd.Execute()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				if got := cliusage.Is(err); got != tt.wantUsage {
					t.Errorf("usage error = %v, want %v", got, tt.wantUsage)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if calls != tt.wantCalls {
				t.Errorf("%d calls, want %d", calls, tt.wantCalls)
			}
			if tt.json {
				if !strings.Contains(stdout.String(), tt.wantOut) {
					t.Errorf("stdout = %q, want it to hold %q", stdout.String(), tt.wantOut)
				}
			} else if stdout.String() != tt.wantOut {
				t.Errorf("stdout = %q, want %q", stdout.String(), tt.wantOut)
			}
			if stderr.String() != tt.wantErrOut {
				t.Errorf("stderr = %q, want %q", stderr.String(), tt.wantErrOut)
			}
		})
	}
}
