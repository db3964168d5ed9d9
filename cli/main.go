// Command palyra is the Palyra CLI: the administration tool of palyrad and the node
// agent. It talks to palyrad only through the generated API clients in gen/go.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/palyra/palyra/cli/internal/cmd"
	"github.com/palyra/palyra/cli/internal/cmd/deps"
	"github.com/palyra/palyra/cli/internal/term"
	"github.com/palyra/palyra/internal/cliusage"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // the call or the work failed
	exitUsage   = 2 // the command line is wrong
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], &deps.Deps{
		Stdout:          os.Stdout,
		Stderr:          os.Stderr,
		Stdin:           os.Stdin,
		StdinIsTerminal: term.IsTerminal(os.Stdin),
		Getenv:          os.Getenv,
		Now:             time.Now,
	}))
}

// run executes palyra with the dependencies d and returns its exit code.
func run(ctx context.Context, args []string, d *deps.Deps) int {
	root := cmd.NewRootCommand(d)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(d.Stderr, "palyra: %v\n", err)
	if cliusage.Is(err) {
		fmt.Fprintln(d.Stderr, "Run 'palyra --help' for usage.")
		return exitUsage
	}
	return exitFailure
}
