// Command palyra is the Palyra CLI: the administration tool of palyrad and the node
// agent. It talks to palyrad only through the generated API clients in gen/go.
//
// Exit codes: 0 success, 1 failure, 2 a mistake in the command line, 130 interrupted
// (Ctrl-C or SIGTERM); see cmd.Execute.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/palyra/palyra/cli/internal/cmd"
	"github.com/palyra/palyra/cli/internal/cmd/deps"
	"github.com/palyra/palyra/cli/internal/term"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// The first signal asks the command to stop cleanly (the node agent drains its
	// dispatches); a second one terminates at once, as signals do by default.
	go func() {
		<-ctx.Done()
		stop()
	}()
	code := cmd.Execute(ctx, os.Args[1:], &deps.Deps{
		Stdout:          os.Stdout,
		Stderr:          os.Stderr,
		Stdin:           os.Stdin,
		StdinIsTerminal: term.IsTerminal(os.Stdin),
		Getenv:          os.Getenv,
		Now:             time.Now,
	})
	stop()
	os.Exit(code)
}
