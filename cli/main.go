// Command palyra is the Palyra CLI: the administration tool of palyrad and the node
// agent. It talks to palyrad only through the generated API clients in gen/go.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/palyra/palyra/cli/internal/cmd"
	"github.com/palyra/palyra/cli/internal/cmd/deps"
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
	os.Exit(run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

// run executes palyra and returns its exit code.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	root := cmd.NewRootCommand(&deps.Deps{Stdout: stdout, Stderr: stderr, Getenv: getenv})
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(stderr, "palyra: %v\n", err)
	if cliusage.Is(err) {
		fmt.Fprintln(stderr, "Run 'palyra --help' for usage.")
		return exitUsage
	}
	return exitFailure
}
