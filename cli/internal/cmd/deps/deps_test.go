package deps_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/palyra/palyra/cli/internal/client"
	"github.com/palyra/palyra/cli/internal/cmd/deps"
	"github.com/palyra/palyra/cli/internal/profile"
	"github.com/palyra/palyra/internal/cliusage"
)

const (
	prodToken = "plr_01JD5ZJ8Q0W1X2Y3Z4A5B6C7D8_prod"
	devToken  = "plr_01JD5ZJ8Q0W1X2Y3Z4A5B6C7D9_dev"
	envToken  = "plr_01JD5ZJ8Q0W1X2Y3Z4A5B6C7DA_env"
	prodFP    = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	devFP     = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
	flagFP    = "sha256:3333333333333333333333333333333333333333333333333333333333333333"
)

// TestProfileResolution checks where each connection setting comes from: its flag,
// else its environment variable, else the selected profile, whose token and pin go
// only to the profile's own server.
func TestProfileResolution(t *testing.T) {
	t.Parallel()
	config := t.TempDir()
	f := &profile.File{Current: "prod"}
	f.Put("prod", profile.Profile{URL: "https://prod:7443", Token: prodToken, CAFingerprint: prodFP})
	f.Put("dev", profile.Profile{URL: "https://127.0.0.1:7443", Token: devToken, CAFingerprint: devFP})
	if err := profile.Save(filepath.Join(config, "palyra", profile.FileName), f); err != nil {
		t.Fatal(err)
	}

	tests := map[string]struct {
		args      []string
		env       map[string]string
		noConfig  bool
		want      client.Options // TokenAdvice is not compared
		wantErr   string
		wantUsage bool
	}{
		"current profile": {
			want: client.Options{URL: "https://prod:7443", CAFingerprint: prodFP, Token: prodToken, TokenSource: `profile "prod"`},
		},
		"--profile": {
			args: []string{"--profile", "dev"},
			want: client.Options{URL: "https://127.0.0.1:7443", CAFingerprint: devFP, Token: devToken, TokenSource: `profile "dev"`},
		},
		"PALYRA_PROFILE": {
			env:  map[string]string{"PALYRA_PROFILE": "dev"},
			want: client.Options{URL: "https://127.0.0.1:7443", CAFingerprint: devFP, Token: devToken, TokenSource: `profile "dev"`},
		},
		"--profile over PALYRA_PROFILE": {
			args: []string{"--profile", "prod"},
			env:  map[string]string{"PALYRA_PROFILE": "dev"},
			want: client.Options{URL: "https://prod:7443", CAFingerprint: prodFP, Token: prodToken, TokenSource: `profile "prod"`},
		},
		"PALYRA_TOKEN over the profile": {
			env:  map[string]string{"PALYRA_TOKEN": envToken},
			want: client.Options{URL: "https://prod:7443", CAFingerprint: prodFP, Token: envToken, TokenSource: "PALYRA_TOKEN"},
		},
		"trust flag over the profile's pin": {
			args: []string{"--ca-fingerprint", flagFP},
			want: client.Options{URL: "https://prod:7443", CAFingerprint: flagFP, Token: prodToken, TokenSource: `profile "prod"`},
		},
		"trust flag replaces the environment's": {
			args: []string{"--ca-fingerprint", flagFP},
			env:  map[string]string{"PALYRA_CA_FILE": "/ca.pem"},
			want: client.Options{URL: "https://prod:7443", CAFingerprint: flagFP, Token: prodToken, TokenSource: `profile "prod"`},
		},
		"environment trust over the profile's pin": {
			env:  map[string]string{"PALYRA_CA_FILE": "/ca.pem"},
			want: client.Options{URL: "https://prod:7443", CAFile: "/ca.pem", Token: prodToken, TokenSource: `profile "prod"`},
		},
		"same server, other spelling": {
			args: []string{"--url", "https://PROD:7443/"},
			want: client.Options{URL: "https://PROD:7443/", CAFingerprint: prodFP, Token: prodToken, TokenSource: `profile "prod"`},
		},
		"another server gets neither token nor pin": {
			args: []string{"--url", "https://elsewhere:7443"},
			want: client.Options{URL: "https://elsewhere:7443"},
		},
		"PALYRA_URL of another server": {
			env:  map[string]string{"PALYRA_URL": "https://elsewhere:7443", "PALYRA_CA_FINGERPRINT": flagFP},
			want: client.Options{URL: "https://elsewhere:7443", CAFingerprint: flagFP},
		},
		"--url over PALYRA_URL": {
			args: []string{"--url", "https://prod:7443"},
			env:  map[string]string{"PALYRA_URL": "https://elsewhere:7443"},
			want: client.Options{URL: "https://prod:7443", CAFingerprint: prodFP, Token: prodToken, TokenSource: `profile "prod"`},
		},
		"unknown profile": {
			args:    []string{"--profile", "nope"},
			wantErr: `no profile "nope"`,
		},
		"bad profile name": {
			args:      []string{"--profile", "No!"},
			wantErr:   "invalid profile name",
			wantUsage: true,
		},
		"no configuration, everything given": {
			noConfig: true,
			args:     []string{"--url", "https://x:7443", "--ca-file", "/ca.pem"},
			env:      map[string]string{"PALYRA_TOKEN": envToken},
			want:     client.Options{URL: "https://x:7443", CAFile: "/ca.pem", Token: envToken, TokenSource: "PALYRA_TOKEN"},
		},
		"no configuration, no token": {
			noConfig: true,
			args:     []string{"--url", "https://x:7443", "--ca-file", "/ca.pem"},
			want:     client.Options{URL: "https://x:7443", CAFile: "/ca.pem"},
		},
		"no configuration, no URL": {
			noConfig: true,
			wantErr:  "no server given",
		},
		"no configuration, --profile": {
			noConfig: true,
			args:     []string{"--profile", "prod", "--url", "https://x:7443"},
			wantErr:  "XDG_CONFIG_HOME or HOME",
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			env := map[string]string{"XDG_CONFIG_HOME": config}
			if tt.noConfig {
				env = map[string]string{}
			}
			for k, v := range tt.env {
				env[k] = v
			}
			d := &deps.Deps{Getenv: func(k string) string { return env[k] }}
			fs := pflag.NewFlagSet("palyra", pflag.ContinueOnError)
			d.BindGlobalFlags(fs)
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			got, err := d.Options()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Options = %+v, %v; want an error with %q", got, err, tt.wantErr)
				}
				if cliusage.Is(err) != tt.wantUsage {
					t.Errorf("usage error %v, want %v", cliusage.Is(err), tt.wantUsage)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got.TokenAdvice = ""
			if got != tt.want {
				t.Errorf("Options =\n  %+v\nwant\n  %+v", got, tt.want)
			}
		})
	}
}
