package dispatches

import (
	"bytes"
	"encoding/json"
	"fmt"
	"image/png"
	"io"
	"os"
	"strings"

	"github.com/palyra/palyra/cli/internal/output"
	controlplanev1 "github.com/palyra/palyra/gen/go/palyra/controlplane/v1"
	nodev1 "github.com/palyra/palyra/gen/go/palyra/node/v1"
)

// This file is the screenshots of browser.* dispatches: their output is a PNG image,
// located by the result's "screenshot", which palyra never writes to the terminal. It
// cuts it out of the output into a file, says where on stderr, and prints the result.

// ScreenshotFlagUsage is the usage of the --screenshot flag of the commands that
// print a dispatch's output.
const ScreenshotFlagUsage = "where to write the screenshot of a browser.* dispatch (default: <dispatch id>.png in the current directory)"

// imageCapabilityPrefix starts the names of the capabilities whose output is an image.
const imageCapabilityPrefix = "browser."

// HasImageOutput reports whether a capability's output is an image (browser.*), kept
// off the terminal.
func HasImageOutput(capability string) bool {
	return strings.HasPrefix(capability, imageCapabilityPrefix)
}

// screenshotLocation is the result's "screenshot" of a browser.* dispatch: the bytes
// [Offset, Offset+Length) of its output.
type screenshotLocation struct {
	Offset      uint64 `json:"offset"`
	Length      uint64 `json:"length"`
	ContentType string `json:"content_type"`
}

// saveScreenshot cuts the screenshot of a browser.* dispatch out of res's output (all
// of it, collected) and writes it to path, <dispatch id>.png when empty; it says on
// stderr where it went, or why there is none although there is output. The location
// is the node's word, so it allocates no more than the output holds and writes only a
// PNG image. It removes the output from res, which is printed without it.
func saveScreenshot(stderr io.Writer, res *controlplanev1.ExecuteCapabilityResponse, path string) error {
	disp := res.GetDispatch()
	chunks := res.GetOutput()
	res.Output = nil
	if len(chunks) == 0 {
		if disp.GetOutputBytes() > 0 {
			output.Fprintf(stderr, "palyra: warning: dispatch %s has %s of output, of which palyra received none\n", disp.GetId(), Bytes(disp.GetOutputBytes()))
		}
		return nil
	}
	var loc struct {
		Screenshot *screenshotLocation `json:"screenshot"`
	}
	if err := json.Unmarshal([]byte(disp.GetResultJson()), &loc); err != nil || loc.Screenshot == nil {
		output.Fprintf(stderr, "palyra: warning: dispatch %s has %s of output but its result locates no screenshot in it; not written\n",
			disp.GetId(), Bytes(disp.GetOutputBytes()))
		return nil
	}
	shot := loc.Screenshot
	var held uint64
	for _, c := range chunks {
		held += uint64(len(c.GetData()))
	}
	if shot.Length > held {
		return warnCut(stderr, disp.GetId(), shot.Length, held)
	}
	start, end := shot.Offset, shot.Offset+shot.Length
	data := make([]byte, 0, shot.Length)
	for _, c := range chunks {
		if c.GetStream() == nodev1.OutputStream_OUTPUT_STREAM_STDERR {
			continue
		}
		from, b := c.GetOffset(), c.GetData()
		if from+uint64(len(b)) <= start || from >= end {
			continue
		}
		if from < start {
			b, from = b[start-from:], start
		}
		if from != start+uint64(len(data)) {
			break // a gap: the output is not whole
		}
		data = append(data, b[:min(uint64(len(b)), end-from)]...)
	}
	if uint64(len(data)) != shot.Length {
		return warnCut(stderr, disp.GetId(), shot.Length, uint64(len(data)))
	}
	img, err := png.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		output.Fprintf(stderr, "palyra: warning: the screenshot of dispatch %s is not a PNG image (the node said %q): %v; not written\n",
			disp.GetId(), shot.ContentType, err)
		return nil
	}
	if path == "" {
		path = disp.GetId() + ".png"
	}
	// A page may show what only the profile's identity sees: for the user alone.
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return fmt.Errorf("write the screenshot of dispatch %s: %w", disp.GetId(), err)
	}
	output.Fprintf(stderr, "palyra: wrote the screenshot of dispatch %s to %s (image/png, %dx%d, %s)\n",
		disp.GetId(), path, img.Width, img.Height, Bytes(shot.Length))
	return nil
}

// warnCut says that the screenshot of dispatch id, of length bytes, is not written
// because the kept output holds only held of them.
func warnCut(stderr io.Writer, id string, length, held uint64) error {
	output.Fprintf(stderr, "palyra: warning: the screenshot of dispatch %s is %s, of which the kept output holds %s (cut at its cap; --max-output keeps more); not written\n",
		id, Bytes(length), Bytes(held))
	return nil
}
