package auth

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/palyra/palyra/internal/cliusage"
)

const fp = "sha256:fabd539369598d55ccae908a97924477f9eca9b3cd0fba7275d7da5a67503870"

// TestAuthTrustDecision checks how login comes to trust the server, and that it never
// asks a question that no one can answer.
func TestAuthTrustDecision(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		in        trustInput
		want      trustSource
		wantUsage bool
		wantErr   string
	}{
		"CA file":                      {in: trustInput{CAFile: "ca.pem"}, want: trustFile},
		"CA file without a terminal":   {in: trustInput{CAFile: "ca.pem", StdinHoldsToken: true}, want: trustFile},
		"fingerprint":                  {in: trustInput{CAFingerprint: fp}, want: trustPin},
		"fingerprint over the profile": {in: trustInput{CAFingerprint: fp, ProfileFingerprint: "sha256:" + strings.Repeat("1", 64)}, want: trustPin},
		"both":                         {in: trustInput{CAFile: "ca.pem", CAFingerprint: fp}, wantUsage: true, wantErr: "not both"},
		"malformed fingerprint":        {in: trustInput{CAFingerprint: "sha256:ABC"}, wantUsage: true, wantErr: "sha256:<64"},
		"upper-case fingerprint":       {in: trustInput{CAFingerprint: strings.ToUpper(fp)}, wantUsage: true, wantErr: "lower-case"},
		"saved pin of the same server": {in: trustInput{ProfileFingerprint: fp}, want: trustProfile},
		"ask a person":                 {in: trustInput{StdinIsTerminal: true}, want: trustAsk},
		"no terminal":                  {in: trustInput{}, wantErr: "stdin is not a terminal. Pass --ca-fingerprint"},
		"stdin carries the token":      {in: trustInput{StdinIsTerminal: true, StdinHoldsToken: true}, wantErr: "stdin carries the token. Pass --ca-fingerprint"},
	}
	for name, tt := range tests {
		got, err := decideTrust(tt.in)
		switch {
		case tt.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%s: decideTrust = %v, %v; want an error with %q", name, got, err, tt.wantErr)
			}
			if cliusage.Is(err) != tt.wantUsage {
				t.Errorf("%s: usage error %v, want %v", name, cliusage.Is(err), tt.wantUsage)
			}
		case err != nil || got != tt.want:
			t.Errorf("%s: decideTrust = %v, %v; want %v", name, got, err, tt.want)
		}
	}
}

// TestAuthTrustAnswer checks that only a yes trusts.
func TestAuthTrustAnswer(t *testing.T) {
	t.Parallel()
	for _, yes := range []string{"y\n", "Y\n", "yes\n", " YES \r\n", "y"} {
		if !trustAnswer(yes) {
			t.Errorf("trustAnswer(%q) = false", yes)
		}
	}
	for _, no := range []string{"", "\n", "n\n", "no\n", "yep\n", "sure\n", "ye\n", "y y\n"} {
		if trustAnswer(no) {
			t.Errorf("trustAnswer(%q) = true", no)
		}
	}
}

// TestAuthReadToken checks where login reads the token from, and that no error ever
// repeats the token.
func TestAuthReadToken(t *testing.T) {
	t.Parallel()
	const token = "plr_01JD5ZJ8Q0W1X2Y3Z4A5B6C7D8_c2VjcmV0c2VjcmV0"
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good", "\n  "+token+"\n\n")
	empty := write("empty", " \n")
	wrong := write("wrong", "password123\n")
	twoLines := write("two", token+"\n"+token+"\n")

	tests := map[string]struct {
		flag, file, stdin string
		want, wantSource  string
		wantUsage         bool
		wantErr           string
	}{
		"flag":               {flag: " " + token + " ", want: token, wantSource: "--token"},
		"file":               {file: good, want: token, wantSource: good},
		"stdin":              {file: "-", stdin: token + "\n", want: token, wantSource: "stdin"},
		"both":               {flag: token, file: good, wantUsage: true, wantErr: "not both"},
		"neither":            {wantUsage: true, wantErr: "--token-file"},
		"empty file":         {file: empty, wantErr: "is empty"},
		"empty stdin":        {file: "-", wantErr: "from stdin is empty"},
		"missing file":       {file: filepath.Join(dir, "nope"), wantErr: "no such file"},
		"not a token":        {file: wrong, wantErr: "does not look like a Palyra API token"},
		"two lines":          {file: twoLines, wantErr: "does not look like a Palyra API token"},
		"token with a space": {flag: "plr_01JD5ZJ8Q0W1X2Y3Z4A5B6C7D8_a b", wantErr: "does not look like"},
	}
	for name, tt := range tests {
		got, source, err := readToken(tt.flag, tt.file, strings.NewReader(tt.stdin))
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%s: readToken = %v; want an error with %q", name, err, tt.wantErr)
			} else if strings.Contains(err.Error(), "c2VjcmV0") || strings.Contains(err.Error(), "password123") {
				t.Errorf("%s: the error shows the token: %v", name, err)
			}
			if cliusage.Is(err) != tt.wantUsage {
				t.Errorf("%s: usage error %v, want %v", name, cliusage.Is(err), tt.wantUsage)
			}
			continue
		}
		if err != nil || got != tt.want || source != tt.wantSource {
			t.Errorf("%s: readToken = %q, %q, %v; want %q from %q", name, got, source, err, tt.want, tt.wantSource)
		}
	}
}

// TestAuthTokenID checks the id that logout names from a token.
func TestAuthTokenID(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"plr_01JD5ZJ8Q0W1X2Y3Z4A5B6C7D8_secret": "01JD5ZJ8Q0W1X2Y3Z4A5B6C7D8",
		"plr_short_secret":                      "",
		"01JD5ZJ8Q0W1X2Y3Z4A5B6C7D8":            "",
		"":                                      "",
	} {
		if got := tokenID(in); got != want {
			t.Errorf("tokenID(%q) = %q, want %q", in, got, want)
		}
	}
}
