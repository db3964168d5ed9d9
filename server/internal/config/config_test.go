package config_test

import (
	"bytes"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/spf13/pflag"

	"github.com/palyra/palyra/server/internal/config"
)

// load runs what palyrad does: register the flags, parse args, load. env is the whole
// environment; the process's own is never read.
func load(t *testing.T, args []string, env map[string]string) (*config.Config, error) {
	t.Helper()
	getenv := func(k string) string { return env[k] }
	fs := pflag.NewFlagSet("palyrad", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	config.RegisterFlags(fs, getenv)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("parse %q: %v", args, err)
	}
	return config.Load(fs, getenv)
}

// writeFile writes a TOML file into a fresh temporary directory and returns its path.
func writeFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "palyrad.toml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestDefaults(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		env         map[string]string
		wantDataDir string
	}{
		"XDG_DATA_HOME":              {env: map[string]string{"XDG_DATA_HOME": "/xdg/data", "HOME": "/home/ada"}, wantDataDir: "/xdg/data/palyra"},
		"HOME without XDG_DATA_HOME": {env: map[string]string{"HOME": "/home/ada"}, wantDataDir: "/home/ada/.local/share/palyra"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c, err := load(t, nil, tt.env)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if c.DataDir != tt.wantDataDir {
				t.Errorf("DataDir = %q, want %q", c.DataDir, tt.wantDataDir)
			}
			if c.Listen != "127.0.0.1:7443" {
				t.Errorf("Listen = %q, want 127.0.0.1:7443", c.Listen)
			}
			if c.TLS.ServerCertLifetime != 24*time.Hour {
				t.Errorf("TLS.ServerCertLifetime = %v, want 24h", c.TLS.ServerCertLifetime)
			}
			if c.Log.Level != slog.LevelInfo || c.Log.Format != "text" {
				t.Errorf("Log = %+v, want info/text", c.Log)
			}
			if !c.Database.Embedded() || c.Database.URL != "" {
				t.Errorf("Database = %+v, want the embedded cluster", c.Database)
			}
			if c.Server.MaxMessageBytes != 4<<20 {
				t.Errorf("Server.MaxMessageBytes = %d, want 4MiB", c.Server.MaxMessageBytes)
			}
			if c.MasterKey != "" || c.File != "" || c.TLS.SANs != nil || c.Compat.Models != nil {
				t.Errorf("unexpected non-default values: %+v", c)
			}
			// The help text shows the same default data directory.
			fs := pflag.NewFlagSet("palyrad", pflag.ContinueOnError)
			config.RegisterFlags(fs, func(k string) string { return tt.env[k] })
			if got := fs.Lookup("data-dir").DefValue; got != tt.wantDataDir {
				t.Errorf("--data-dir default in help = %q, want %q", got, tt.wantDataDir)
			}
		})
	}
}

func TestReplicaIDGenerated(t *testing.T) {
	t.Parallel()
	env := map[string]string{"HOME": "/home/ada"}
	seen := map[string]bool{}
	for range 3 {
		c, err := load(t, nil, env)
		if err != nil {
			t.Fatalf("Load: %v", err)
		}
		if len(c.ReplicaID) != 26 {
			t.Errorf("ReplicaID = %q, want a 26-character ULID", c.ReplicaID)
		}
		if _, err := ulid.ParseStrict(c.ReplicaID); err != nil {
			t.Errorf("ReplicaID %q is not a ULID: %v", c.ReplicaID, err)
		}
		if seen[c.ReplicaID] {
			t.Errorf("ReplicaID %q generated twice", c.ReplicaID)
		}
		seen[c.ReplicaID] = true
	}

	c, err := load(t, []string{"--replica-id", "eu-west-1.a"}, env)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if c.ReplicaID != "eu-west-1.a" {
		t.Errorf("ReplicaID = %q, want the one given", c.ReplicaID)
	}
}

// TestPrecedence shows, for settings of each kind, that the file overrides the default,
// the environment overrides the file and a flag overrides both.
func TestPrecedence(t *testing.T) {
	t.Parallel()
	type layer struct {
		file string            // TOML
		env  map[string]string // PALYRA_* variables
		args []string          // flags
		want any
	}
	tests := map[string]struct {
		get            func(c *config.Config) any
		file, env, flg layer
	}{
		"listen": {
			get:  func(c *config.Config) any { return c.Listen },
			file: layer{file: `listen = "127.0.0.1:1001"`, want: "127.0.0.1:1001"},
			env:  layer{env: map[string]string{"PALYRA_LISTEN": "127.0.0.1:1002"}, want: "127.0.0.1:1002"},
			flg:  layer{args: []string{"--listen", "[::1]:1003"}, want: "[::1]:1003"},
		},
		"log.level": {
			get:  func(c *config.Config) any { return c.Log.Level },
			file: layer{file: "[log]\nlevel = \"debug\"", want: slog.LevelDebug},
			env:  layer{env: map[string]string{"PALYRA_LOG_LEVEL": "warn"}, want: slog.LevelWarn},
			flg:  layer{args: []string{"--log-level=error"}, want: slog.LevelError},
		},
		"tls.server_cert_lifetime": {
			get:  func(c *config.Config) any { return c.TLS.ServerCertLifetime },
			file: layer{file: "[tls]\nserver_cert_lifetime = \"2h\"", want: 2 * time.Hour},
			env:  layer{env: map[string]string{"PALYRA_TLS_SERVER_CERT_LIFETIME": "72h"}, want: 72 * time.Hour},
			flg:  layer{args: []string{"--tls-server-cert-lifetime", "1h30m"}, want: 90 * time.Minute},
		},
		"server.max_message_bytes": {
			get:  func(c *config.Config) any { return c.Server.MaxMessageBytes },
			file: layer{file: "[server]\nmax_message_bytes = \"16MiB\"", want: 16 << 20},
			env:  layer{env: map[string]string{"PALYRA_SERVER_MAX_MESSAGE_BYTES": "1KiB"}, want: 1 << 10},
			flg:  layer{args: []string{"--server-max-message-bytes", "4MiB"}, want: 4 << 20},
		},
		"server.max_message_bytes as a TOML integer": {
			get:  func(c *config.Config) any { return c.Server.MaxMessageBytes },
			file: layer{file: "[server]\nmax_message_bytes = 8192", want: 8192},
			env:  layer{env: map[string]string{"PALYRA_SERVER_MAX_MESSAGE_BYTES": "2 MiB"}, want: 2 << 20},
			flg:  layer{args: []string{"--server-max-message-bytes=65536"}, want: 65536},
		},
		"tls.sans": {
			get:  func(c *config.Config) any { return c.TLS.SANs },
			file: layer{file: "[tls]\nsans = [\"palyra.example.com\", \"10.0.0.1\"]", want: []string{"palyra.example.com", "10.0.0.1"}},
			env:  layer{env: map[string]string{"PALYRA_TLS_SANS": "a.example, b.example"}, want: []string{"a.example", "b.example"}},
			flg:  layer{args: []string{"--tls-san", "a", "--tls-san", "b"}, want: []string{"a", "b"}},
		},
		"compat.models": {
			get:  func(c *config.Config) any { return c.Compat.Models },
			file: layer{file: "[compat]\nmodels = [\"gpt-4o\"]", want: []string{"gpt-4o"}},
			env:  layer{env: map[string]string{"PALYRA_COMPAT_MODELS": "llama3:8b,mistral/7b"}, want: []string{"llama3:8b", "mistral/7b"}},
			flg:  layer{args: []string{"--compat-model", "qwen2.5", "--compat-model", "phi-3"}, want: []string{"qwen2.5", "phi-3"}},
		},
		"database.url": {
			get:  func(c *config.Config) any { return c.Database.URL },
			file: layer{file: "[database]\nurl = \"postgres://file@db1.example/palyra\"", want: "postgres://file@db1.example/palyra"},
			env:  layer{env: map[string]string{"PALYRA_DATABASE_URL": "postgres://env@db2.example/palyra"}, want: "postgres://env@db2.example/palyra"},
			flg:  layer{args: []string{"--database-url", "postgres://flag@db3.example/palyra"}, want: "postgres://flag@db3.example/palyra"},
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			path := writeFile(t, tt.file.file)
			merge := func(layers ...layer) map[string]string {
				env := map[string]string{"HOME": "/home/ada", "PALYRA_CONFIG": path}
				for _, l := range layers {
					for k, v := range l.env {
						env[k] = v
					}
				}
				return env
			}
			steps := map[string]struct {
				args []string
				env  map[string]string
				want any
			}{
				"file":                 {env: merge(), want: tt.file.want},
				"env over file":        {env: merge(tt.env), want: tt.env.want},
				"flag over env, file":  {args: tt.flg.args, env: merge(tt.env), want: tt.flg.want},
				"flag over file alone": {args: tt.flg.args, env: merge(), want: tt.flg.want},
			}
			for step, s := range steps {
				c, err := load(t, s.args, s.env)
				if err != nil {
					t.Errorf("%s: Load: %v", step, err)
					continue
				}
				if got := tt.get(c); !reflect.DeepEqual(got, s.want) {
					t.Errorf("%s: got %#v, want %#v", step, got, s.want)
				}
				if c.File != path {
					t.Errorf("%s: File = %q, want %q", step, c.File, path)
				}
			}
		})
	}
}

func TestConfigFileFlagOverEnvironment(t *testing.T) {
	t.Parallel()
	fromEnv := writeFile(t, `listen = "127.0.0.1:2001"`)
	fromFlag := writeFile(t, `listen = "127.0.0.1:2002"`)
	tests := map[string]struct {
		args       []string
		env        map[string]string
		wantFile   string
		wantListen string
	}{
		"no file":        {wantFile: "", wantListen: "127.0.0.1:7443"},
		"PALYRA_CONFIG":  {env: map[string]string{"PALYRA_CONFIG": fromEnv}, wantFile: fromEnv, wantListen: "127.0.0.1:2001"},
		"--config":       {args: []string{"--config", fromFlag}, wantFile: fromFlag, wantListen: "127.0.0.1:2002"},
		"--config wins":  {args: []string{"--config", fromFlag}, env: map[string]string{"PALYRA_CONFIG": fromEnv}, wantFile: fromFlag, wantListen: "127.0.0.1:2002"},
		"--config empty": {args: []string{"--config="}, env: map[string]string{"PALYRA_CONFIG": fromEnv}, wantFile: "", wantListen: "127.0.0.1:7443"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			env := map[string]string{"HOME": "/home/ada"}
			for k, v := range tt.env {
				env[k] = v
			}
			c, err := load(t, tt.args, env)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if c.File != tt.wantFile || c.Listen != tt.wantListen {
				t.Errorf("File, Listen = %q, %q; want %q, %q", c.File, c.Listen, tt.wantFile, tt.wantListen)
			}
		})
	}
}

// TestLoadErrors checks that every rejected value is reported with the setting's key and
// where the value came from. In the file cases, {file} stands for the file's path.
func TestLoadErrors(t *testing.T) {
	t.Parallel()
	const password = "s3cr3t-Pa55"
	tests := map[string]struct {
		args    []string
		env     map[string]string
		file    string // TOML; written to a file named by --config when set
		want    []string
		notWant []string
	}{
		"bad duration from a flag": {
			args: []string{"--tls-server-cert-lifetime", "soon"},
			want: []string{"tls.server_cert_lifetime", "flag --tls-server-cert-lifetime", `"soon"`},
		},
		"duration below range from the environment": {
			env:  map[string]string{"PALYRA_TLS_SERVER_CERT_LIFETIME": "30m"},
			want: []string{"tls.server_cert_lifetime", "environment variable PALYRA_TLS_SERVER_CERT_LIFETIME", "between 1h0m0s and 2160h0m0s"},
		},
		"duration above range in the file": {
			file: "[server]\nshutdown_timeout = \"11m\"",
			want: []string{"server.shutdown_timeout", "file {file}", "between 0s and 10m0s"},
		},
		"negative duration": {
			args: []string{"--server-read-header-timeout=-1s"},
			want: []string{"server.read_header_timeout", "flag --server-read-header-timeout", "between 1s and 5m0s"},
		},
		"pprof listener off loopback": {
			args: []string{"--debug-pprof-listen", "0.0.0.0:6060"},
			want: []string{"debug.pprof_listen", "flag --debug-pprof-listen", "loopback", "no authentication"},
		},
		"pprof listener not host:port": {
			env:  map[string]string{"PALYRA_DEBUG_PPROF_LISTEN": "6060"},
			want: []string{"debug.pprof_listen", "environment variable PALYRA_DEBUG_PPROF_LISTEN", "host:port"},
		},
		"integer out of range": {
			args: []string{"--database-max-conns", "0"},
			want: []string{"database.max_conns", "flag --database-max-conns", "between 1 and 1000"},
		},
		"integer not a number": {
			env:  map[string]string{"PALYRA_SERVER_MAX_CONCURRENT_STREAMS": "many"},
			want: []string{"server.max_concurrent_streams", "environment variable PALYRA_SERVER_MAX_CONCURRENT_STREAMS", "whole number"},
		},
		"size above range": {
			env:  map[string]string{"PALYRA_SERVER_MAX_MESSAGE_BYTES": "65MiB"},
			want: []string{"server.max_message_bytes", "environment variable PALYRA_SERVER_MAX_MESSAGE_BYTES", "between 1024 and 67108864 bytes"},
		},
		"size below range": {
			args: []string{"--server-max-message-bytes", "1023"},
			want: []string{"server.max_message_bytes", "flag --server-max-message-bytes", "between 1024 and 67108864 bytes"},
		},
		"size that overflows": {
			// 2^54+1 KiB is 2^64+1024 bytes, which wraps around to 1KiB in an int.
			args: []string{"--server-max-message-bytes", "18014398509481985KiB"},
			want: []string{"server.max_message_bytes", "flag --server-max-message-bytes", "between 1024 and 67108864 bytes"},
		},
		"size with an unknown unit": {
			file: "[server]\nmax_message_bytes = \"4MB\"",
			want: []string{"server.max_message_bytes", "file {file}", `"4MB"`},
		},
		"listen without a port": {
			args: []string{"--listen", "localhost"},
			want: []string{"listen", "flag --listen", "must be host:port"},
		},
		"listen port out of range": {
			env:  map[string]string{"PALYRA_LISTEN": "127.0.0.1:70000"},
			want: []string{"listen", "environment variable PALYRA_LISTEN", `port "70000"`},
		},
		"listen host invalid": {
			file: `listen = "bad_host!:7443"`,
			want: []string{"listen", "file {file}", `host "bad_host!"`},
		},
		"invalid SAN from a flag": {
			args: []string{"--tls-san", "ok.example", "--tls-san", "not a name"},
			want: []string{"tls.sans", "flag --tls-san", `"not a name"`},
		},
		"invalid SAN from the environment": {
			env:  map[string]string{"PALYRA_TLS_SANS": "ok.example, -bad-.example"},
			want: []string{"tls.sans", "environment variable PALYRA_TLS_SANS", `"-bad-.example"`},
		},
		"invalid model id": {
			args: []string{"--compat-model", "gpt 4"},
			want: []string{"compat.models", "flag --compat-model", `"gpt 4" is not a valid model id`},
		},
		"duplicate model id": {
			file: "[compat]\nmodels = [\"a\", \"b\", \"a\"]",
			want: []string{"compat.models", "file {file}", `model "a" is listed twice`},
		},
		"duplicate model id from the environment": {
			env:  map[string]string{"PALYRA_COMPAT_MODELS": "a,a"},
			want: []string{"compat.models", "environment variable PALYRA_COMPAT_MODELS", "listed twice"},
		},
		"bad log level": {
			env:  map[string]string{"PALYRA_LOG_LEVEL": "loud"},
			want: []string{"log.level", "environment variable PALYRA_LOG_LEVEL", `got "loud"`},
		},
		"bad log format": {
			args: []string{"--log-format", "xml"},
			want: []string{"log.format", "flag --log-format", `got "xml"`},
		},
		"bad replica id": {
			args: []string{"--replica-id", "a b"},
			want: []string{"replica_id", "flag --replica-id", `"a b"`},
		},
		"empty data dir": {
			args: []string{"--data-dir="},
			want: []string{"data_dir", "flag --data-dir", "must not be empty"},
		},
		"unknown key in the file": {
			file: "[tls]\nsanz = [\"a.example\"]",
			want: []string{`unknown setting "tls.sanz"`, "{file}"},
		},
		"TOML syntax error": {
			file: "listen = \"127.0.0.1:1\"\n\n[log]\nlevel = \"debug\n",
			want: []string{"{file}:4:15:", "basic strings cannot have new lines"},
		},
		"TOML duplicate key": {
			file: "listen = \"127.0.0.1:1\"\nlisten = \"127.0.0.1:2\"\n",
			want: []string{"{file}:2:1:", "listen is already defined"},
		},
		"list where a string belongs": {
			file: `listen = ["127.0.0.1:1"]`,
			want: []string{"listen", "file {file}", "unsupported value type"},
		},
		"string where a list belongs": {
			file: "[tls]\nsans = \"a.example\"",
			want: []string{"tls.sans", "file {file}", "must be a list of strings"},
		},
		"numbers in a list of strings": {
			file: "[compat]\nmodels = [1, 2]",
			want: []string{"compat.models", "file {file}", "must be a list of strings"},
		},
		"float where a size belongs": {
			file: "[server]\nmax_message_bytes = 1.5",
			want: []string{"server.max_message_bytes", "file {file}", "unsupported value type float64"},
		},
		"master key in the file": {
			file:    "master_key = \"bm90IGEgcmVhbCBrZXkgYnV0IHNlY3JldCBhbnl3YXk=\"",
			want:    []string{"master_key", "file {file}", "environment variable PALYRA_MASTER_KEY"},
			notWant: []string{"bm90IGEgcmVhbCBrZXkgYnV0IHNlY3JldCBhbnl3YXk="},
		},
		"malformed database URL from a flag": {
			args:    []string{"--database-url", "postgres://palyra:" + password + "@db.example:notaport/palyra"},
			want:    []string{"database.url", "flag --database-url", "not a valid PostgreSQL URL"},
			notWant: []string{password},
		},
		"malformed database URL from the environment": {
			env:     map[string]string{"PALYRA_DATABASE_URL": "postgres://palyra:" + password + "@db.example/palyra?sslmode=sometimes"},
			want:    []string{"database.url", "environment variable PALYRA_DATABASE_URL", "not a valid PostgreSQL URL"},
			notWant: []string{password},
		},
		"malformed database URL in the file": {
			file:    "[database]\nurl = \"postgres://palyra:" + password + "@db.example:99999/palyra\"",
			want:    []string{"database.url", "file {file}", "not a valid PostgreSQL URL"},
			notWant: []string{password},
		},
		"missing config file from a flag": {
			args: []string{"--config", "/nonexistent/palyrad.toml"},
			want: []string{"read configuration file", "/nonexistent/palyrad.toml", "no such file"},
		},
		"missing config file from the environment": {
			env:  map[string]string{"PALYRA_CONFIG": "/nonexistent/env.toml"},
			want: []string{"read configuration file", "/nonexistent/env.toml"},
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			env := map[string]string{"HOME": "/home/ada"}
			for k, v := range tt.env {
				env[k] = v
			}
			args := tt.args
			path := ""
			if tt.file != "" {
				path = writeFile(t, tt.file)
				args = append([]string{"--config", path}, args...)
			}
			c, err := load(t, args, env)
			if err == nil {
				t.Fatalf("Load succeeded with %+v, want an error", c)
			}
			msg := err.Error()
			for _, w := range tt.want {
				if w = strings.ReplaceAll(w, "{file}", path); !strings.Contains(msg, w) {
					t.Errorf("error %q does not contain %q", msg, w)
				}
			}
			for _, nw := range tt.notWant {
				if strings.Contains(msg, nw) {
					t.Errorf("error %q contains %q", msg, nw)
				}
			}
		})
	}
}

func TestLogValueHidesSecrets(t *testing.T) {
	t.Parallel()
	const (
		password  = "hunter2-Sup3rSecret"
		masterKey = "q83vEjRWeJASNFZ4kBI0VniQEjRWeJASNFZ4kBI0VnA="
	)
	tests := map[string]struct {
		databaseURL  string
		wantDatabase string
	}{
		"URL": {
			databaseURL:  "postgres://palyra:" + password + "@db.example.com:5433/palyra_prod?sslmode=require",
			wantDatabase: "external (postgres://db.example.com:5433/palyra_prod)",
		},
		"keyword/value string": {
			databaseURL:  "host=db.example.com port=5433 user=palyra password=" + password + " dbname=palyra_prod",
			wantDatabase: "external (postgres://db.example.com:5433/palyra_prod)",
		},
		"embedded": {
			wantDatabase: "embedded",
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c, err := load(t, []string{"--replica-id", "r1"}, map[string]string{
				"HOME":                "/home/ada",
				"PALYRA_DATABASE_URL": tt.databaseURL,
				"PALYRA_MASTER_KEY":   masterKey,
			})
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if c.MasterKey != masterKey || c.Database.URL != tt.databaseURL {
				t.Fatalf("the secrets were not loaded: %+v", c)
			}
			var buf bytes.Buffer
			log := slog.New(slog.NewJSONHandler(&buf, nil))
			log.Info("value", "config", *c)
			log.Info("pointer", "config", c)
			out := buf.String()
			for _, secret := range []string{password, masterKey} {
				if strings.Contains(out, secret) {
					t.Errorf("log output contains the secret %q:\n%s", secret, out)
				}
			}
			if got := strings.Count(out, `"database":"`+tt.wantDatabase+`"`); got != 2 {
				t.Errorf("log output does not say database %q in both records:\n%s", tt.wantDatabase, out)
			}
			if got := strings.Count(out, `"master_key":"environment"`); got != 2 {
				t.Errorf("log output does not say where the master key came from:\n%s", out)
			}
			if !strings.Contains(out, `"replica_id":"r1"`) {
				t.Errorf("log output lacks the replica id:\n%s", out)
			}
		})
	}
}

func TestMasterKeyIsEnvironmentOnly(t *testing.T) {
	t.Parallel()
	if help := config.EnvironmentOnly(); !strings.Contains(help, "PALYRA_MASTER_KEY") {
		t.Errorf("EnvironmentOnly() = %q, want it to mention PALYRA_MASTER_KEY", help)
	}
	fs := pflag.NewFlagSet("palyrad", pflag.ContinueOnError)
	config.RegisterFlags(fs, func(string) string { return "" })
	fs.VisitAll(func(f *pflag.Flag) {
		if strings.Contains(f.Name, "master") {
			t.Errorf("flag --%s exists; the master key must not be settable on the command line", f.Name)
		}
	})
	if fs.Lookup("master-key") != nil {
		t.Error("flag --master-key exists")
	}
	fs.SetOutput(io.Discard)
	if err := fs.Parse([]string{"--master-key", "x"}); err == nil {
		t.Error("parsing --master-key succeeded, want an unknown flag error")
	}
}
