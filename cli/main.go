// Command palyra is the Palyra CLI: the administration tool of palyrad and the node
// agent. It talks to palyrad only through the generated API clients in gen/go.
//
// Exit codes: 0 success, 1 failure, 2 a mistake in the command line, 130 interrupted
// (Ctrl-C or SIGTERM; a second one stops at once, also with 130); see cmd.Execute.
package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"github.com/palyra/palyra/cli/internal/browser"
	"github.com/palyra/palyra/cli/internal/cmd"
	"github.com/palyra/palyra/cli/internal/cmd/deps"
	"github.com/palyra/palyra/cli/internal/term"
)

func main() {
	ctx, cancel := context.WithCancel(context.Background())
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, os.Interrupt, syscall.SIGTERM)
	go stopOnSignals(signals, cancel)
	code := cmd.Execute(ctx, os.Args[1:], &deps.Deps{
		Stdout:           os.Stdout,
		Stderr:           os.Stderr,
		Stdin:            os.Stdin,
		StdinIsTerminal:  term.IsTerminal(os.Stdin),
		StdoutIsTerminal: term.IsTerminal(os.Stdout),
		Getenv:           os.Getenv,
		Now:              time.Now,
		OpenBrowser:      browser.Opener(os.Getenv, exec.LookPath),
	})
	os.Exit(code)
}

// stopOnSignals runs in its own goroutine for the life of the process. The first
// signal asks the command to stop cleanly (the node agent drains its dispatches); a
// second one exits at once with cmd.ExitInterrupted and says so on stderr.
func stopOnSignals(signals <-chan os.Signal, cancel context.CancelFunc) {
	<-signals
	cancel()
	sig := <-signals
	fmt.Fprintf(os.Stderr, "palyra: %v again: stopping at once, without finishing the clean stop\n", sig)
	os.Exit(cmd.ExitInterrupted)
}
