package capability

import (
	"log/slog"
	"os"
	"time"
)

// Builtin returns the built-in capabilities configured by cfg: system.info, and
// shell.execute, filesystem.read, llm.chat, llm.embed, browser.navigate and browser.screenshot, each unavailable (announced,
// but refusing every input) until cfg allows or configures something. cfg is normally LoadConfig's; a zero setting takes
// its default, and entries LoadConfig would refuse (relative paths) are ignored with a
// warning on log (nil: no logging). shell.execute passes variables through from the
// agent's environment as it is now.
func Builtin(cfg Config, log *slog.Logger) []Capability {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return append([]Capability{
		newSystemInfo(procFS(), os.Hostname),
		newShell(cfg.Shell, os.Environ(), log, time.Now),
		newFileReader(cfg.Filesystem, log),
	}, append(newLLMCapabilities(cfg.LLM, log), newBrowserCapabilities(cfg.Browser, pathLookup(os.Getenv("PATH")), log)...)...)
}
