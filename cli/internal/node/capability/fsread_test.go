package capability

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// fsTree is a root with files, links and special files, beside a directory outside it.
type fsTree struct {
	root     string // the root as configured
	realRoot string // the root with symbolic links resolved
	outside  string // a directory outside the root
}

// newFSTree makes:
//
//	outside/secret                   "outside secret"
//	root/a.txt                       "hello, palyra"
//	root/big.txt                     "0123456789abcdefghij" (20 bytes)
//	root/sub/b.txt                   "b"
//	root/sub/deeper/c.txt            "c"
//	root/link-to-a -> a.txt          (stays inside)
//	root/link-to-sub -> sub          (stays inside)
//	root/abs-link-to-a -> <root>/a.txt
//	root/secret -> outside/secret    (escapes)
//	root/passwd -> /etc/passwd       (escapes)
//	root/escape -> outside           (a directory that escapes)
//	root/sub/..b.txt..               "dots"
//	root/sub/up -> ../..             (a directory that escapes)
//	root/dangling -> nope.txt        (missing)
//	root/dangling-outside -> outside/nope
//	root/fifo                        (a FIFO)
func newFSTree(t *testing.T) fsTree {
	t.Helper()
	if runtime.GOOS == "windows" {
		t.Skip("uses symbolic links and FIFOs")
	}
	outside := t.TempDir()
	root := t.TempDir()
	write := func(path, content string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	link := func(target, name string) {
		t.Helper()
		if err := os.Symlink(target, filepath.Join(root, name)); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(outside, "secret"), "outside secret")
	write(filepath.Join(root, "a.txt"), "hello, palyra")
	write(filepath.Join(root, "big.txt"), "0123456789abcdefghij")
	write(filepath.Join(root, "sub", "b.txt"), "b")
	write(filepath.Join(root, "sub", "deeper", "c.txt"), "c")
	write(filepath.Join(root, "sub", "..b.txt.."), "dots")
	link("a.txt", "link-to-a")
	link("sub", "link-to-sub")
	link(filepath.Join(root, "a.txt"), "abs-link-to-a")
	link(filepath.Join(outside, "secret"), "secret")
	link("/etc/passwd", "passwd")
	link(outside, "escape")
	link("../..", "sub/up")
	link("nope.txt", "dangling")
	link(filepath.Join(outside, "nope"), "dangling-outside")
	if err := mkfifo(filepath.Join(root, "fifo")); err != nil {
		t.Fatal(err)
	}
	realRoot, err := filepath.EvalSymlinks(root)
	if err != nil {
		t.Fatal(err)
	}
	return fsTree{root: root, realRoot: realRoot, outside: outside}
}

// readFile runs filesystem.read on input.
func readFile(t *testing.T, r *fileReader, input any) (Result, error) {
	t.Helper()
	b, err := json.Marshal(input)
	if err != nil {
		t.Fatal(err)
	}
	return r.Run(t.Context(), b, nil)
}

// wantContent fails t unless res read want from the file at path.
func wantContent(t *testing.T, res Result, path string, size, offset int64, want string) {
	t.Helper()
	if res.Failed {
		t.Fatalf("result %+v, want success", res)
	}
	var got FileReadResult
	if err := json.Unmarshal(res.JSON, &got); err != nil {
		t.Fatalf("result %s: %v", res.JSON, err)
	}
	content, err := base64.StdEncoding.DecodeString(got.ContentBase64)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(want))
	if string(content) != want || got.Path != path || got.Size != size || got.Offset != offset ||
		got.Length != int64(len(want)) || got.SHA256 != hex.EncodeToString(sum[:]) {
		t.Errorf("result %s (content %q), want %q of %s (size %d, offset %d)", res.JSON, content, want, path, size, offset)
	}
}

func ptr(n int64) *int64 { return &n }

func TestFilesystemRead(t *testing.T) {
	t.Parallel()
	tree := newFSTree(t)
	r := newFileReader(FilesystemConfig{Roots: []string{tree.root}}, testLogger(t))
	if !r.Describe().Available {
		t.Fatal("filesystem.read unavailable with a root")
	}
	tests := map[string]struct {
		path string // with the root as %s when absolute
		want string // content
		file string // the resolved file, under the resolved root
	}{
		"relative":                      {path: "a.txt", want: "hello, palyra", file: "a.txt"},
		"relative in a subdirectory":    {path: "sub/deeper/c.txt", want: "c", file: "sub/deeper/c.txt"},
		"relative, not clean":           {path: "./sub//b.txt", want: "b", file: "sub/b.txt"},
		"absolute under the root":       {path: filepath.Join(tree.root, "sub", "b.txt"), want: "b", file: "sub/b.txt"},
		"absolute under the real root":  {path: filepath.Join(tree.realRoot, "a.txt"), want: "hello, palyra", file: "a.txt"},
		"a link that stays inside":      {path: "link-to-a", want: "hello, palyra", file: "a.txt"},
		"an absolute link inside":       {path: "abs-link-to-a", want: "hello, palyra", file: "a.txt"},
		"a linked directory that stays": {path: "link-to-sub/deeper/c.txt", want: "c", file: "sub/deeper/c.txt"},
		"a name with dots":              {path: "sub/..b.txt..", want: "dots", file: "sub/..b.txt.."},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			res, err := readFile(t, r, FileReadInput{Path: tt.path})
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			wantContent(t, res, filepath.Join(tree.realRoot, tt.file), int64(len(tt.want)), 0, tt.want)
		})
	}
}

// TestFilesystemReadRefused reads what must not be read.
func TestFilesystemReadRefused(t *testing.T) {
	t.Parallel()
	tree := newFSTree(t)
	r := newFileReader(FilesystemConfig{Roots: []string{tree.root}}, testLogger(t))
	tests := map[string]struct {
		input any
		want  string // a part of the reason
	}{
		"../../etc/passwd":                 {input: FileReadInput{Path: "../../etc/passwd"}, want: `".."`},
		"dot-dot that stays inside":        {input: FileReadInput{Path: "sub/../a.txt"}, want: `".."`},
		"dot-dot after the root":           {input: FileReadInput{Path: tree.root + "/../" + filepath.Base(tree.outside) + "/secret"}, want: `".."`},
		"an absolute path outside":         {input: FileReadInput{Path: "/etc/passwd"}, want: "outside the node's roots"},
		"an absolute path beside the root": {input: FileReadInput{Path: tree.root + "-other/x"}, want: "outside the node's roots"},
		"the outside file, absolute":       {input: FileReadInput{Path: filepath.Join(tree.outside, "secret")}, want: "outside the node's roots"},
		"a symlink to /etc/passwd":         {input: FileReadInput{Path: "passwd"}, want: "symbolic link"},
		"a symlink to a file outside":      {input: FileReadInput{Path: "secret"}, want: "symbolic link"},
		"a symlink to /etc/passwd, abs":    {input: FileReadInput{Path: filepath.Join(tree.root, "passwd")}, want: "symbolic link"},
		"a symlinked directory escaping":   {input: FileReadInput{Path: "escape/secret"}, want: "symbolic link"},
		"a relative link escaping":         {input: FileReadInput{Path: "sub/up/" + filepath.Base(tree.outside) + "/secret"}, want: "symbolic link"},
		"a FIFO":                           {input: FileReadInput{Path: "fifo"}, want: "a FIFO"},
		"a directory":                      {input: FileReadInput{Path: "sub"}, want: "a directory"},
		"the root itself":                  {input: FileReadInput{Path: "."}, want: "a directory"},
		"the root itself, absolute":        {input: FileReadInput{Path: tree.root}, want: "a directory"},
		"a device outside":                 {input: FileReadInput{Path: "/dev/zero"}, want: "outside the node's roots"},
		"an empty path":                    {input: FileReadInput{}, want: "path is empty"},
		"a NUL byte":                       {input: FileReadInput{Path: "a.txt\x00"}, want: "NUL"},
		"a negative offset":                {input: FileReadInput{Path: "a.txt", Offset: -1}, want: "offset is negative"},
		"a negative length":                {input: FileReadInput{Path: "a.txt", Length: ptr(-1)}, want: "length is negative"},
		"an unknown field":                 {input: map[string]any{"path": "a.txt", "follow": true}, want: "invalid input"},
		"not an object":                    {input: "a.txt", want: "must be a JSON object"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			res, err := readFile(t, r, tt.input)
			wantRefused(t, err, FilesystemReadName, tt.want)
			if res.JSON != nil {
				t.Errorf("result %s", res.JSON)
			}
		})
	}
}

func TestFilesystemReadMissing(t *testing.T) {
	t.Parallel()
	tree := newFSTree(t)
	r := newFileReader(FilesystemConfig{Roots: []string{tree.root}}, testLogger(t))
	for name, path := range map[string]string{
		"relative":                  "nope.txt",
		"absolute":                  filepath.Join(tree.root, "nope.txt"),
		"under a file":              "a.txt/x",
		"a dangling link":           "dangling",
		"a dangling link outside":   "dangling-outside",
		"in a missing subdirectory": "nope/x.txt",
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			res, err := readFile(t, r, FileReadInput{Path: path})
			if err != nil || !res.Failed || res.Error == "" || res.JSON != nil {
				t.Fatalf("Run = %+v, %v; want a failed result", res, err)
			}
		})
	}
}

func TestFilesystemReadSize(t *testing.T) {
	t.Parallel()
	tree := newFSTree(t)
	r := newFileReader(FilesystemConfig{Roots: []string{tree.root}, MaxBytes: 8}, testLogger(t))
	big := filepath.Join(tree.realRoot, "big.txt")
	tests := map[string]struct {
		offset int64
		length *int64
		want   string // content; "" with refused
		refuse string // a part of the reason
	}{
		"a file above the cap":            {refuse: "is 20 bytes, above the limit of 8"},
		"a slice within the cap":          {offset: 4, length: ptr(8), want: "456789ab"},
		"a slice from the start":          {length: ptr(3), want: "012"},
		"the tail within the cap":         {offset: 12, want: "cdefghij"},
		"a slice past the end is cut":     {offset: 16, length: ptr(8), want: "ghij"},
		"a slice above the cap":           {offset: 4, length: ptr(9), refuse: "a slice of 9 bytes is above the limit of 8"},
		"the tail above the cap":          {offset: 11, refuse: "a slice of 9 bytes"},
		"an empty slice":                  {offset: 5, length: ptr(0), want: ""},
		"the end of the file":             {offset: 20, want: ""},
		"an offset beyond the end":        {offset: 21, refuse: "beyond the end"},
		"a huge length from a late start": {offset: 19, length: ptr(1 << 62), want: "j"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			res, err := readFile(t, r, FileReadInput{Path: "big.txt", Offset: tt.offset, Length: tt.length})
			if tt.refuse != "" {
				wantRefused(t, err, tt.refuse)
				return
			}
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			wantContent(t, res, big, 20, tt.offset, tt.want)
		})
	}
	t.Run("the default cap", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "f"), make([]byte, DefaultMaxFileBytes+1), 0o644); err != nil {
			t.Fatal(err)
		}
		r := newFileReader(FilesystemConfig{Roots: []string{dir}}, testLogger(t))
		_, err := readFile(t, r, FileReadInput{Path: "f"})
		wantRefused(t, err, "above the limit of 524288")
		res, err := readFile(t, r, FileReadInput{Path: "f", Offset: 1})
		if err != nil || res.Failed {
			t.Fatalf("reading all but the first byte: %+v, %v", res, err)
		}
	})
}

func TestFilesystemReadRoots(t *testing.T) {
	t.Parallel()
	first, second := t.TempDir(), t.TempDir()
	for path, content := range map[string]string{
		filepath.Join(first, "both.txt"):    "first",
		filepath.Join(second, "both.txt"):   "second",
		filepath.Join(second, "second.txt"): "only in the second",
	} {
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// A root configured through a symbolic link.
	linkDir := t.TempDir()
	linkedRoot := filepath.Join(linkDir, "root")
	if err := os.Symlink(second, linkedRoot); err != nil {
		t.Fatal(err)
	}
	realFirst, _ := filepath.EvalSymlinks(first)
	realSecond, _ := filepath.EvalSymlinks(second)
	tests := map[string]struct {
		roots []string
		path  string
		want  string
		file  string
	}{
		"relative, in the first root":      {roots: []string{first, second}, path: "both.txt", want: "first", file: filepath.Join(realFirst, "both.txt")},
		"relative, only in the second":     {roots: []string{first, second}, path: "second.txt", want: "only in the second", file: filepath.Join(realSecond, "second.txt")},
		"absolute, in the second":          {roots: []string{first, second}, path: filepath.Join(second, "both.txt"), want: "second", file: filepath.Join(realSecond, "both.txt")},
		"a linked root, relative":          {roots: []string{linkedRoot}, path: "both.txt", want: "second", file: filepath.Join(realSecond, "both.txt")},
		"a linked root, through the link":  {roots: []string{linkedRoot}, path: filepath.Join(linkedRoot, "both.txt"), want: "second", file: filepath.Join(realSecond, "both.txt")},
		"a linked root, by its real path":  {roots: []string{linkedRoot}, path: filepath.Join(second, "both.txt"), want: "second", file: filepath.Join(realSecond, "both.txt")},
		"relative roots are ignored":       {roots: []string{"tmp", first}, path: "both.txt", want: "first", file: filepath.Join(realFirst, "both.txt")},
		"a root given twice, not clean":    {roots: []string{first + "/", first}, path: "both.txt", want: "first", file: filepath.Join(realFirst, "both.txt")},
		"nested roots, the outer matching": {roots: []string{filepath.Dir(first), first}, path: filepath.Join(first, "both.txt"), want: "first", file: filepath.Join(realFirst, "both.txt")},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := newFileReader(FilesystemConfig{Roots: tt.roots}, testLogger(t))
			res, err := readFile(t, r, FileReadInput{Path: tt.path})
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			wantContent(t, res, tt.file, int64(len(tt.want)), 0, tt.want)
		})
	}
}

func TestFilesystemReadUnavailable(t *testing.T) {
	t.Parallel()
	for name, roots := range map[string][]string{
		"no roots":              nil,
		"an empty list":         {},
		"only relative entries": {"var/log", ""},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := newFileReader(FilesystemConfig{Roots: roots}, testLogger(t))
			if r.Describe().Available {
				t.Error("filesystem.read is available without roots")
			}
			for _, path := range []string{"/etc/passwd", "a.txt", "."} {
				_, err := readFile(t, r, FileReadInput{Path: path})
				wantRefused(t, err, "not configured", "filesystem.roots")
			}
		})
	}
}

// TestFilesystemReadSwapped opens what the path checks would have refused, as if a
// link had been swapped in between the check and the open: nothing is read.
func TestFilesystemReadSwapped(t *testing.T) {
	t.Parallel()
	tree := newFSTree(t)
	r := newFileReader(FilesystemConfig{Roots: []string{tree.root}}, testLogger(t))
	for _, rel := range []string{"secret", "passwd", "escape/secret", "sub/up/" + filepath.Base(tree.outside) + "/secret", "fifo", "link-to-a"} {
		t.Run(rel, func(t *testing.T) {
			t.Parallel()
			res, err := r.read(FileReadInput{Path: rel}, tree.realRoot, rel)
			t.Logf("read = %+v, %v", res, err)
			if res.JSON != nil || err == nil && !res.Failed {
				t.Fatalf("read %s = %+v, %v; want nothing read", rel, res, err)
			}
		})
	}
}
