package capability

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// FilesystemReadName is the name of the filesystem.read capability.
const FilesystemReadName = "filesystem.read"

// filesystemReadSchema is filesystem.read's input; FileReadInput documents it.
const filesystemReadSchema = `{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "filesystem.read input",
  "type": "object",
  "properties": {
    "path": {
      "description": "The file: relative to one of the node's roots, or absolute under one. '..' is refused.",
      "type": "string",
      "minLength": 1
    },
    "offset": {
      "description": "First byte to read; default 0.",
      "type": "integer",
      "minimum": 0
    },
    "length": {
      "description": "Most bytes to read; default: to the end of the file.",
      "type": "integer",
      "minimum": 0
    }
  },
  "required": ["path"],
  "additionalProperties": false
}`

// FileReadInput is filesystem.read's input.
type FileReadInput struct {
	// Path names the file: absolute under one of the roots, or relative to one (the
	// first root in which it exists). A ".." component is refused.
	Path string `json:"path"`
	// Offset is the first byte to read.
	Offset int64 `json:"offset,omitempty"`
	// Length is the most bytes to read; nil reads to the end of the file.
	Length *int64 `json:"length,omitempty"`
}

// FileReadResult is filesystem.read's result.
type FileReadResult struct {
	// Path is the file's path with every symbolic link resolved.
	Path string `json:"path"`
	// Size is the file's size.
	Size int64 `json:"size"`
	// Offset is the first byte returned.
	Offset int64 `json:"offset"`
	// Length is the number of bytes returned.
	Length int64 `json:"length"`
	// ContentBase64 is the bytes read, in standard base64.
	ContentBase64 string `json:"content_base64"`
	// SHA256 is the SHA-256 of the bytes read, in hex.
	SHA256 string `json:"sha256"`
}

// fileReader is the filesystem.read capability: it reads regular files under its
// roots. A path is checked before anything is opened: ".." components are refused as
// given, the cleaned path must lie under a root, and once every symbolic link of it is
// resolved it must still lie under that root's resolved path. The file is then opened
// through an os.Root on the resolved root, which opens each component relative to its
// parent without following links out of the root, so a link swapped in after the check
// cannot lead outside either; the open file is checked again to be a regular file.
type fileReader struct {
	roots    []string // absolute, cleaned; empty: unavailable
	maxBytes int64
	log      *slog.Logger
}

var _ Capability = (*fileReader)(nil)

// newFileReader returns filesystem.read configured by cfg. A zero max_bytes takes its
// default and one above MaxFileBytesLimit the limit; roots that are not absolute are
// ignored with a warning.
func newFileReader(cfg FilesystemConfig, log *slog.Logger) *fileReader {
	r := &fileReader{maxBytes: cfg.MaxBytes, log: log}
	for _, root := range cfg.Roots {
		if !filepath.IsAbs(root) {
			log.Warn("filesystem.read: ignoring a root that is not an absolute path", "root", root)
			continue
		}
		if root = filepath.Clean(root); !slices.Contains(r.roots, root) {
			r.roots = append(r.roots, root)
		}
	}
	if r.maxBytes <= 0 {
		r.maxBytes = DefaultMaxFileBytes
	}
	r.maxBytes = min(r.maxBytes, MaxFileBytesLimit)
	return r
}

// Describe implements Capability.
func (r *fileReader) Describe() Descriptor {
	return Descriptor{
		Name:        FilesystemReadName,
		Description: "Reads a regular file, or a slice of one, under the directories the node allows.",
		InputSchema: json.RawMessage(filesystemReadSchema),
		Available:   len(r.roots) > 0,
	}
}

// Run implements Capability.
func (r *fileReader) Run(ctx context.Context, input json.RawMessage, _ Output) (Result, error) {
	if len(r.roots) == 0 {
		return Result{}, refusef("%s is not configured on this node: no root directory (filesystem.roots in %s)",
			FilesystemReadName, ConfigFile)
	}
	var in FileReadInput
	if err := decodeInput(FilesystemReadName, input, &in); err != nil {
		return Result{}, err
	}
	switch {
	case in.Path == "":
		return Result{}, refusef("%s: path is empty", FilesystemReadName)
	case strings.IndexByte(in.Path, 0) >= 0:
		return Result{}, refusef("%s: path holds a NUL byte", FilesystemReadName)
	case slices.Contains(strings.FieldsFunc(in.Path, isPathSeparator), ".."):
		return Result{}, refusef(`%s: %q: a path with ".." is never allowed`, FilesystemReadName, in.Path)
	case in.Offset < 0:
		return Result{}, refusef("%s: offset is negative", FilesystemReadName)
	case in.Length != nil && *in.Length < 0:
		return Result{}, refusef("%s: length is negative", FilesystemReadName)
	}
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	root, rel, ok := r.locate(in.Path)
	if !ok {
		return Result{}, refusef("%s: %q is outside the node's roots", FilesystemReadName, in.Path)
	}
	realRoot, err := filepath.EvalSymlinks(root)
	if err != nil {
		return Result{}, fmt.Errorf("%s: root %s: %w", FilesystemReadName, root, err)
	}
	real, err := filepath.EvalSymlinks(filepath.Join(root, rel))
	if err != nil {
		return failed(fmt.Sprintf("%s: %v", in.Path, unwrapPathError(err))), nil
	}
	realRel, ok := within(realRoot, real)
	if !ok {
		return Result{}, refusef("%s: %q leads outside the root %s through a symbolic link", FilesystemReadName, in.Path, root)
	}
	return r.read(in, realRoot, realRel)
}

// read reads the file rel under the resolved root realRoot.
func (r *fileReader) read(in FileReadInput, realRoot, rel string) (Result, error) {
	dir, err := os.OpenRoot(realRoot)
	if err != nil {
		return Result{}, fmt.Errorf("%s: open root %s: %w", FilesystemReadName, realRoot, err)
	}
	defer dir.Close()
	path := filepath.Join(realRoot, rel)
	// A first look without opening: opening a device or a FIFO may block or act.
	info, err := dir.Lstat(rel)
	if err != nil {
		return failed(fmt.Sprintf("%s: %v", in.Path, unwrapPathError(err))), nil
	}
	if !info.Mode().IsRegular() {
		return Result{}, refusef("%s: %q is not a regular file (%s)", FilesystemReadName, in.Path, fileKind(info.Mode()))
	}
	f, err := dir.OpenFile(rel, os.O_RDONLY|readOpenFlags, 0)
	if err != nil {
		return failed(fmt.Sprintf("%s: %v", in.Path, unwrapPathError(err))), nil
	}
	defer f.Close()
	// Again on what was opened: it may have been replaced since the look.
	info, err = f.Stat()
	if err != nil {
		return Result{}, fmt.Errorf("%s: stat %s: %w", FilesystemReadName, path, err)
	}
	if !info.Mode().IsRegular() {
		return Result{}, refusef("%s: %q is not a regular file (%s)", FilesystemReadName, in.Path, fileKind(info.Mode()))
	}
	size := info.Size()
	if in.Offset > size {
		return Result{}, refusef("%s: offset %d is beyond the end of %q (%d bytes)", FilesystemReadName, in.Offset, in.Path, size)
	}
	n := size - in.Offset
	if in.Length != nil && *in.Length < n {
		n = *in.Length
	}
	if n > r.maxBytes {
		if in.Offset == 0 && in.Length == nil {
			return Result{}, refusef("%s: %q is %d bytes, above the limit of %d (filesystem.max_bytes): read it in slices with offset and length",
				FilesystemReadName, in.Path, size, r.maxBytes)
		}
		return Result{}, refusef("%s: a slice of %d bytes is above the limit of %d (filesystem.max_bytes)",
			FilesystemReadName, n, r.maxBytes)
	}
	buf := make([]byte, n)
	m, err := f.ReadAt(buf, in.Offset)
	if err != nil && !errors.Is(err, io.EOF) { // EOF: the file shrank meanwhile
		return failed(fmt.Sprintf("%s: read: %v", in.Path, unwrapPathError(err))), nil
	}
	buf = buf[:m]
	sum := sha256.Sum256(buf)
	b, err := json.Marshal(FileReadResult{
		Path:          path,
		Size:          size,
		Offset:        in.Offset,
		Length:        int64(m),
		ContentBase64: base64.StdEncoding.EncodeToString(buf),
		SHA256:        hex.EncodeToString(sum[:]),
	})
	if err != nil {
		return Result{}, fmt.Errorf("%s: encode the result: %w", FilesystemReadName, err)
	}
	return Result{JSON: b}, nil
}

// locate returns the root that path is under and path relative to it; ok is false when
// path is under none. An absolute path is matched against each root as configured, then
// as resolved through symbolic links; a relative path is taken relative to the first
// root in which it exists (or the first root, when none has it).
func (r *fileReader) locate(path string) (root, rel string, ok bool) {
	if !filepath.IsAbs(path) {
		rel = filepath.Clean(path)
		for _, root := range r.roots {
			if _, err := os.Lstat(filepath.Join(root, rel)); err == nil {
				return root, rel, true
			}
		}
		return r.roots[0], rel, true
	}
	path = filepath.Clean(path)
	for _, root := range r.roots {
		if rel, ok := within(root, path); ok {
			return root, rel, true
		}
	}
	for _, root := range r.roots {
		real, err := filepath.EvalSymlinks(root)
		if err != nil {
			continue
		}
		if rel, ok := within(real, path); ok {
			return real, rel, true
		}
	}
	return "", "", false
}

// within returns path relative to dir when path is dir or under it; both are clean and
// absolute.
func within(dir, path string) (string, bool) {
	rel, err := filepath.Rel(dir, path)
	if err != nil || !filepath.IsLocal(rel) && rel != "." {
		return "", false
	}
	return rel, true
}

// failed is a Result of a capability that ran but did not succeed.
func failed(why string) Result { return Result{Failed: true, Error: why} }

// fileKind names the kind of a file that is not regular.
func fileKind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeSymlink != 0:
		return "a symbolic link"
	case m&fs.ModeNamedPipe != 0:
		return "a FIFO"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a device"
	}
	return "an irregular file"
}
