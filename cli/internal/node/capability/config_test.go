package capability

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pelletier/go-toml/v2"
)

// writeConfig writes a node.toml holding content in a new directory and returns its path.
func writeConfig(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), ConfigFile)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	echo, err := exec.LookPath("echo")
	if err != nil {
		t.Skip("no echo on PATH")
	}
	echo, _ = filepath.Abs(echo)
	keyFile := filepath.Join(dir, "llm.key")
	if err := os.WriteFile(keyFile, []byte("sk-local-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	withDefaults := func(f func(*Config)) Config {
		c := DefaultConfig()
		f(&c)
		return c
	}
	tests := map[string]struct {
		content string // "" with missing: no file at all
		missing bool
		want    Config
		wantErr []string // parts of the error; nil: no error
	}{
		"missing file": {missing: true, want: DefaultConfig()},
		"empty file":   {want: DefaultConfig()},
		"empty tables": {content: "[shell]\n[filesystem]\n", want: DefaultConfig()},
		"every setting": {
			content: `
[shell]
allow = ["/bin/echo", "/bin/echo", "` + echo + `"]
work_dir = "` + dir + `/"
env = ["LANG", "TZ"]
timeout = "30s"
max_output_bytes = 1024
kill_grace = "1500ms"

[filesystem]
roots = ["` + dir + `", "` + dir + `/."]
max_bytes = 4096

[llm]
base_url = "http://127.0.0.1:8080/v1/"
api_key_file = "` + keyFile + `"
models = ["llama3.1:8b", "fast = qwen2.5:0.5b-instruct"]
embedding_models = ["org/embed-small"]
timeout = "2m"
max_concurrent = 2

[browser]
enabled = true
executable = "` + echo + `"
timeout = "30s"
max_page_bytes = 1048576
max_concurrent = 3
allow_networks = ["127.0.0.0/8", "::1"]
`,
			want: Config{
				Shell: ShellConfig{
					Allow:          dedupe([]string{"/bin/echo", echo}),
					WorkDir:        dir,
					Env:            []string{"LANG", "TZ"},
					Timeout:        Duration(30 * time.Second),
					MaxOutputBytes: 1024,
					KillGrace:      Duration(1500 * time.Millisecond),
				},
				Filesystem: FilesystemConfig{Roots: []string{dir}, MaxBytes: 4096},
				LLM: LLMConfig{
					BaseURL: "http://127.0.0.1:8080/v1", APIKeyFile: keyFile,
					Models:          []string{"llama3.1:8b", "fast = qwen2.5:0.5b-instruct"},
					EmbeddingModels: []string{"org/embed-small"},
					Timeout:         Duration(2 * time.Minute), MaxConcurrent: 2,
					apiKey: &apiKey{"sk-local-secret"},
				},
				Browser: BrowserConfig{
					Enabled: true, Executable: echo, Timeout: Duration(30 * time.Second), MaxPageBytes: 1 << 20, MaxConcurrent: 3,
					AllowNetworks: []string{"127.0.0.0/8", "::1"},
				},
			},
		},
		"browser errors": {
			content: "[browser]\nexecutable = \"palyra-no-such-browser\"\nmax_concurrent = 0\nallow_networks = [\"10.0.0.0/33\"]\n",
			wantErr: []string{"browser.executable", "browser.max_concurrent", "browser.allow_networks", `"10.0.0.0/33"`},
		},
		"browser timeout as a number": {
			content: "[browser]\ntimeout = 30\n",
			wantErr: []string{"browser.timeout", "invalid duration 30"},
		},
		"bare executable resolved to an absolute path": {
			content: "[shell]\nallow = [\"echo\"]\n",
			want:    withDefaults(func(c *Config) { c.Shell.Allow = []string{echo} }),
		},
		"unknown key": {
			content: "[shell]\nallowed = [\"echo\"]\n",
			wantErr: []string{"unknown settings", "allowed"},
		},
		"unknown table": {
			content: "[network]\nlisten = \"x\"\n",
			wantErr: []string{"unknown settings", "network"},
		},
		"relative root": {
			content: "[filesystem]\nroots = [\"var/log\"]\n",
			wantErr: []string{"filesystem.roots", `"var/log" is not an absolute path`},
		},
		"missing root": {
			content: "[filesystem]\nroots = [\"" + dir + "/nope\"]\n",
			wantErr: []string{"filesystem.roots", "no such file"},
		},
		"root is a file": {
			content: "[filesystem]\nroots = [\"" + file + "\"]\n",
			wantErr: []string{"filesystem.roots", "not a directory"},
		},
		"missing bare executable": {
			content: "[shell]\nallow = [\"palyra-no-such-program\"]\n",
			wantErr: []string{"shell.allow", "palyra-no-such-program", "not found on PATH"},
		},
		"missing absolute executable": {
			content: "[shell]\nallow = [\"" + dir + "/nope\"]\n",
			wantErr: []string{"shell.allow", "no such file"},
		},
		"relative executable": {
			content: "[shell]\nallow = [\"./echo\"]\n",
			wantErr: []string{"shell.allow", `"./echo": want an absolute path or a bare name`},
		},
		"executable not executable": {
			content: "[shell]\nallow = [\"" + file + "\"]\n",
			wantErr: []string{"shell.allow", "not an executable file"},
		},
		"executable is a directory": {
			content: "[shell]\nallow = [\"" + dir + "\"]\n",
			wantErr: []string{"shell.allow", "not an executable file"},
		},
		"relative work_dir": {
			content: "[shell]\nwork_dir = \"tmp\"\n",
			wantErr: []string{"shell.work_dir", "not an absolute path"},
		},
		"invalid env name": {
			content: "[shell]\nenv = [\"A=B\"]\n",
			wantErr: []string{"shell.env", `"A=B"`},
		},
		"duration without unit": {
			content: "[shell]\ntimeout = \"30\"\n",
			wantErr: []string{"invalid duration"},
		},
		"duration as a number": {
			content: "[shell]\ntimeout = 30\n",
			wantErr: []string{"timeout"},
		},
		"zero timeout": {
			content: "[shell]\ntimeout = \"0s\"\n",
			wantErr: []string{"shell.timeout", "not positive"},
		},
		"negative kill_grace": {
			content: "[shell]\nkill_grace = \"-1s\"\n",
			wantErr: []string{"shell.kill_grace", "not positive"},
		},
		"zero max_output_bytes": {
			content: "[shell]\nmax_output_bytes = 0\n",
			wantErr: []string{"shell.max_output_bytes"},
		},
		"zero max_bytes": {
			content: "[filesystem]\nmax_bytes = 0\n",
			wantErr: []string{"filesystem.max_bytes"},
		},
		"several errors at once": {
			content: "[shell]\nallow = [\"./a\"]\n[filesystem]\nroots = [\"b\"]\n",
			wantErr: []string{"shell.allow", "filesystem.roots"},
		},
		"malformed": {
			content: "[shell\n",
			wantErr: []string{ConfigFile},
		},
		"llm base_url not a URL": {
			content: "[llm]\nbase_url = \"127.0.0.1:8080\"\nmodels = [\"m\"]\n",
			wantErr: []string{"llm.base_url", "http or https URL"},
		},
		"llm base_url of another scheme": {
			content: "[llm]\nbase_url = \"unix:///run/llama.sock\"\nmodels = [\"m\"]\n",
			wantErr: []string{"llm.base_url", "http or https URL"},
		},
		"llm base_url without a host": {
			content: "[llm]\nbase_url = \"http:///v1\"\nmodels = [\"m\"]\n",
			wantErr: []string{"llm.base_url", "no host"},
		},
		"llm base_url with a query": {
			content: "[llm]\nbase_url = \"http://127.0.0.1:8080/v1?key=x\"\nmodels = [\"m\"]\n",
			wantErr: []string{"llm.base_url", "query"},
		},
		"llm base_url with credentials": {
			content: "[llm]\nbase_url = \"http://user:hunter2@127.0.0.1:8080/v1\"\nmodels = [\"m\"]\n",
			wantErr: []string{"llm.base_url", "credentials", "llm.api_key_file"},
		},
		"llm without models": {
			content: "[llm]\nbase_url = \"http://127.0.0.1:8080/v1\"\n",
			wantErr: []string{"llm.models", "no model"},
		},
		"llm models without base_url": {
			content: "[llm]\nmodels = [\"m\"]\n",
			wantErr: []string{"llm.base_url", "not set"},
		},
		"llm invalid model name": {
			content: "[llm]\nbase_url = \"http://127.0.0.1:8080/v1\"\nmodels = [\"../etc\", \"a b=c\", \"ok=has space\"]\n",
			wantErr: []string{`llm.models: invalid model name "../etc"`, `invalid model name "a b"`, "without spaces"},
		},
		"llm duplicate model": {
			content: "[llm]\nbase_url = \"http://127.0.0.1:8080/v1\"\nembedding_models = [\"e\", \"e=other\"]\n",
			wantErr: []string{"llm.embedding_models", `"e" is listed twice`},
		},
		"llm relative key file": {
			content: "[llm]\nbase_url = \"http://127.0.0.1:8080/v1\"\nmodels = [\"m\"]\napi_key_file = \"llm.key\"\n",
			wantErr: []string{"llm.api_key_file", "not an absolute path"},
		},
		"llm key file others may read": {
			content: "[llm]\nbase_url = \"http://127.0.0.1:8080/v1\"\nmodels = [\"m\"]\napi_key_file = \"" + file + "\"\n",
			wantErr: []string{"llm.api_key_file", "group or others may access it (mode -rw-r--r--)", "chmod 600"},
		},
		"llm missing key file": {
			content: "[llm]\nbase_url = \"http://127.0.0.1:8080/v1\"\nmodels = [\"m\"]\napi_key_file = \"" + dir + "/none\"\n",
			wantErr: []string{"llm.api_key_file", "no such file"},
		},
		"llm timeout as a number": {
			content: "[llm]\ntimeout = 30\n",
			wantErr: []string{"llm.timeout", "invalid duration"},
		},
		"llm zero max_concurrent": {
			content: "[llm]\nmax_concurrent = 0\n",
			wantErr: []string{"llm.max_concurrent"},
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), ConfigFile)
			if !tt.missing {
				path = writeConfig(t, tt.content)
			}
			got, err := LoadConfig(path)
			if tt.wantErr != nil {
				if err == nil {
					t.Fatalf("LoadConfig = %+v, want an error", got)
				}
				for _, p := range tt.wantErr {
					if !strings.Contains(err.Error(), p) {
						t.Errorf("error %q does not hold %q", err, p)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("LoadConfig: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("LoadConfig =\n%+v\nwant\n%+v", got, tt.want)
			}
			for _, a := range got.Shell.Allow {
				if !filepath.IsAbs(a) {
					t.Errorf("allowed executable %q is not absolute", a)
				}
			}
		})
	}
}

func dedupe(list []string) []string {
	var out []string
	for _, s := range list {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

func TestLoadConfigRefusesWritableByOthers(t *testing.T) {
	t.Parallel()
	if runtime.GOOS == "windows" {
		t.Skip("no permission bits")
	}
	for name, mode := range map[string]os.FileMode{"group": 0o620, "others": 0o602} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			path := writeConfig(t, "")
			if err := os.Chmod(path, mode); err != nil {
				t.Fatal(err)
			}
			if _, err := LoadConfig(path); err == nil || !strings.Contains(err.Error(), "chmod go-w") {
				t.Fatalf("LoadConfig error = %v, want a refusal", err)
			}
		})
	}
	t.Run("readable by others", func(t *testing.T) {
		t.Parallel()
		path := writeConfig(t, "")
		if err := os.Chmod(path, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadConfig(path); err != nil {
			t.Fatalf("LoadConfig: %v", err)
		}
	})
}

func TestDefaultConfig(t *testing.T) {
	t.Parallel()
	c := DefaultConfig()
	if len(c.Shell.Allow) != 0 || len(c.Filesystem.Roots) != 0 {
		t.Errorf("DefaultConfig allows %v and %v, want nothing", c.Shell.Allow, c.Filesystem.Roots)
	}
	if c.Shell.WorkDir != os.TempDir() || time.Duration(c.Shell.Timeout) != 10*time.Minute ||
		c.Shell.MaxOutputBytes != 16<<20 || time.Duration(c.Shell.KillGrace) != 5*time.Second ||
		c.Filesystem.MaxBytes != 512<<10 {
		t.Errorf("DefaultConfig = %+v", c)
	}
}

func TestWriteDefaultConfig(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "state", ConfigFile)
	if err := WriteDefaultConfig(path); err != nil {
		t.Fatalf("WriteDefaultConfig: %v", err)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" && info.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", info.Mode().Perm())
	}
	got, err := LoadConfig(path)
	if err != nil {
		t.Fatalf("LoadConfig of the template: %v", err)
	}
	if !reflect.DeepEqual(got, DefaultConfig()) {
		t.Errorf("the template loads as %+v, want DefaultConfig()", got)
	}

	before, _ := os.ReadFile(path)
	if err := WriteDefaultConfig(path); !errors.Is(err, fs.ErrExist) {
		t.Errorf("second WriteDefaultConfig = %v, want fs.ErrExist", err)
	}
	if after, _ := os.ReadFile(path); string(after) != string(before) {
		t.Error("the second WriteDefaultConfig changed the file")
	}
}

// TestConfigTemplateKeys uncomments every "# key = value" line of the template and
// decodes the result strictly: each setting it shows exists, and shows its default.
func TestConfigTemplateKeys(t *testing.T) {
	t.Parallel()
	setting := regexp.MustCompile(`(?m)^# ([a-z_]+ = .*|\[\[shell\.program\]\])$`)
	uncommented := setting.ReplaceAllString(defaultConfigTemplate, "$1")
	if n := len(setting.FindAllString(defaultConfigTemplate, -1)); n != 29 {
		t.Errorf("the template shows %d settings and tables, want all 20 settings, 2 [[shell.program]] tables and their 7 settings", n)
	}
	var c Config
	if err := toml.NewDecoder(strings.NewReader(uncommented)).DisallowUnknownFields().Decode(&c); err != nil {
		t.Fatalf("the uncommented template: %v", err)
	}
	checkExamplePrograms(t, "the template", c.Shell.Programs)
	d := DefaultConfig()
	if c.Shell.Timeout != d.Shell.Timeout || c.Shell.MaxOutputBytes != d.Shell.MaxOutputBytes ||
		c.Shell.KillGrace != d.Shell.KillGrace || c.Filesystem.MaxBytes != d.Filesystem.MaxBytes ||
		c.LLM.Timeout != d.LLM.Timeout || c.LLM.MaxConcurrent != d.LLM.MaxConcurrent ||
		c.Browser.Timeout != d.Browser.Timeout || c.Browser.MaxPageBytes != d.Browser.MaxPageBytes ||
		c.Browser.MaxConcurrent != d.Browser.MaxConcurrent {
		t.Errorf("the template shows %+v, defaults are %+v", c, d)
	}
}

// checkExamplePrograms checks the [[shell.program]] tables of an example: their rules
// compile, and a program that runs other programs (make) has literal rules and a pinned
// directory, so that the example hands out no shell.
func checkExamplePrograms(t *testing.T, where string, programs []ProgramConfig) {
	t.Helper()
	for _, p := range programs {
		_, why := runsByName(p.Path)
		for _, r := range p.Args {
			if _, err := r.compiled(); err != nil {
				t.Errorf("%s: the rules of %s: %v", where, p.Path, err)
			}
			if why != "" && !r.literal() {
				t.Errorf("%s gives %s, which runs other programs, a pattern", where, p.Path)
			}
		}
		if why != "" && (p.Args == nil || len(p.WorkDirs) == 0 || p.Unsafe) {
			t.Errorf("%s allows %s, which runs other programs, without literal rules and work_dirs", where, p.Path)
		}
	}
}

// TestREADMEShellExample decodes the node.toml example of README.md strictly and checks
// that it hands out no shell.
func TestREADMEShellExample(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../../../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, _ := strings.Cut(string(readme), "**What `shell.execute` may run**")
	_, block, ok := strings.Cut(section, "```toml\n")
	block, _, ok2 := strings.Cut(block, "```")
	if !ok || !ok2 {
		t.Fatal("README.md: no toml example under What `shell.execute` may run")
	}
	var c Config
	if err := toml.NewDecoder(strings.NewReader(block)).DisallowUnknownFields().Decode(&c); err != nil {
		t.Fatalf("README.md's example: %v", err)
	}
	if len(c.Shell.Programs) == 0 {
		t.Fatal("README.md's example has no [[shell.program]] table")
	}
	for _, a := range c.Shell.Allow {
		if _, why := runsByName(a); why != "" {
			t.Errorf("README.md's example allows %s, which runs other programs, with any arguments", a)
		}
	}
	checkExamplePrograms(t, "README.md's example", c.Shell.Programs)
}

func TestDurationText(t *testing.T) {
	t.Parallel()
	var d Duration
	if err := d.UnmarshalText([]byte("1h30m")); err != nil || time.Duration(d) != 90*time.Minute {
		t.Fatalf("UnmarshalText = %v, %v", d, err)
	}
	if b, _ := d.MarshalText(); string(b) != "1h30m0s" {
		t.Errorf("MarshalText = %s", b)
	}
}

func TestPathLookup(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "tool"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		pathEnv, program, want string
	}{
		"the agent's PATH":             {pathEnv: dir, program: "tool", want: filepath.Join(dir, "tool")},
		"no PATH: the default PATH":    {pathEnv: "", program: "sh", want: "sh"},
		"relative directories skipped": {pathEnv: ".", program: "tool"},
		"not found":                    {pathEnv: dir, program: "sh"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			got, err := pathLookup(tc.pathEnv)(tc.program)
			if tc.want == "" {
				if err == nil {
					t.Errorf("found %q, want none", got)
				}
				return
			}
			wantDirs := filepath.SplitList(tc.pathEnv)
			if tc.pathEnv == "" {
				wantDirs = filepath.SplitList(defaultPATH)
			}
			if err != nil || filepath.Base(got) != filepath.Base(tc.want) || !slices.Contains(wantDirs, filepath.Dir(got)) {
				t.Errorf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}
