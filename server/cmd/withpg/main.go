// withpg runs a command with DATABASE_URL pointing at a throwaway PostgreSQL
// cluster.
//
// Usage:
//
//	go run ./server/cmd/withpg [-keep] [-v] -- cmd args...
//
// withpg initialises a fresh cluster in a new temporary directory with the
// system's PostgreSQL binaries (see package embeddedpg), listening on a free
// loopback TCP port with durability turned off for speed. It runs the command
// with DATABASE_URL=postgres://postgres@127.0.0.1:PORT/postgres?sslmode=disable
// added to its environment and stdin, stdout and stderr passed through, and
// forwards SIGINT and SIGTERM to it. pgtestdb-style helpers create their own
// databases on that server.
//
// Whatever happens to the command, withpg then stops the cluster, removes the
// directory (unless -keep) and exits with the command's exit status (128+N
// when signal N killed it). Only when stopping the server fails does it leave
// the directory in place, so that no server keeps running without its files.
//
// As root, PostgreSQL runs as the postgres user, which must be able to reach
// the temporary directory: $TMPDIR must be traversable by it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/palyra/palyra/server/internal/embeddedpg"
)

// Exit statuses of withpg itself.
const (
	exitUsage    = 2   // bad flags or no command
	exitSetup    = 125 // the cluster could not be set up
	exitNotFound = 127 // the command could not be started
)

func main() {
	os.Exit(run(os.Args[1:]))
}

// run is withpg without the os.Exit, so that deferred cleanups run.
func run(args []string) int {
	fs := flag.NewFlagSet("withpg", flag.ContinueOnError)
	keep := fs.Bool("keep", false, "keep the cluster directory afterwards, for debugging")
	verbose := fs.Bool("v", false, "log the cluster's life cycle")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: withpg [-keep] [-v] -- cmd args...")
		fmt.Fprintln(fs.Output(), "Runs cmd with DATABASE_URL pointing at a throwaway PostgreSQL cluster.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return exitUsage
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return exitUsage
	}

	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})).With("prog", "withpg")

	// Catch the signals before anything else: from here on they must not
	// kill withpg before it has cleaned up.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)

	tmp, err := os.MkdirTemp("", "palyra-pg-")
	if err != nil {
		logger.Error("create the cluster directory", "err", err)
		return exitSetup
	}
	stopped := true // whether no server of ours can be running in tmp
	defer func() {
		switch {
		case *keep:
			fmt.Fprintf(os.Stderr, "withpg: kept the cluster directory %s\n", tmp)
		case !stopped:
			logger.Error("the server did not stop; left its directory in place", "dir", tmp)
		default:
			if err := os.RemoveAll(tmp); err != nil {
				logger.Error("remove the cluster directory", "dir", tmp, "err", err)
			}
		}
	}()
	// The postgres user must traverse tmp when withpg runs as root.
	if err := os.Chmod(tmp, 0o755); err != nil {
		logger.Error("chmod the cluster directory", "dir", tmp, "err", err)
		return exitSetup
	}

	t0 := time.Now()
	cluster, sig, err := startCluster(logger, sigs, embeddedpg.Options{
		Dir:        filepath.Join(tmp, "pg"),
		TCPAddress: "127.0.0.1:0",
		Durable:    false,
		Database:   "postgres",
		Logger:     logger,
	})
	if err != nil {
		if sig != nil {
			logger.Warn("PostgreSQL start aborted", "signal", sig, "err", err)
			return 128 + signalNumber(sig)
		}
		logger.Error("start PostgreSQL", "err", err)
		return exitSetup
	}
	stopped = false
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		if err := cluster.Stop(ctx); err != nil {
			logger.Error("stop PostgreSQL", "err", err)
			return
		}
		stopped = true
	}()
	if sig != nil {
		// A signal arrived while the cluster was starting.
		return 128 + signalNumber(sig)
	}
	fmt.Fprintf(os.Stderr, "withpg: PostgreSQL ready at %s in %.2fs\n", cluster.TCPAddress(), time.Since(t0).Seconds())

	return runCommand(logger, sigs, fs.Args(), cluster.URL())
}

// startCluster starts the cluster. A signal arriving meanwhile cancels the
// start; startCluster then returns the signal too, and, when the start still
// succeeded, the cluster, which the caller must stop.
func startCluster(logger *slog.Logger, sigs <-chan os.Signal, opts embeddedpg.Options) (*embeddedpg.Cluster, os.Signal, error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type result struct {
		c   *embeddedpg.Cluster
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := embeddedpg.Start(ctx, opts)
		done <- result{c, err}
	}()
	select {
	case r := <-done:
		return r.c, nil, r.err
	case sig := <-sigs:
		logger.Warn("signal while starting PostgreSQL; aborting", "signal", sig)
		cancel()
		r := <-done // Start stops a server it started before it fails
		return r.c, sig, r.err
	}
}

// runCommand runs argv with DATABASE_URL=dbURL, forwarding signals from sigs
// to it, and returns the exit status for withpg.
func runCommand(logger *slog.Logger, sigs <-chan os.Signal, argv []string, dbURL string) int {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	// A later entry wins over an inherited DATABASE_URL.
	cmd.Env = append(os.Environ(), "DATABASE_URL="+dbURL)
	if err := cmd.Start(); err != nil {
		logger.Error("start the command", "cmd", argv[0], "err", err)
		return exitNotFound
	}

	// This goroutine forwards signals until the command has exited. A
	// Ctrl-C in a terminal reaches the command directly too, so it may see
	// SIGINT twice.
	exited := make(chan struct{})
	forwarded := make(chan struct{})
	go func() {
		defer close(forwarded)
		for {
			select {
			case sig := <-sigs:
				logger.Info("forwarding signal", "signal", sig)
				if err := cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
					logger.Warn("forward signal", "signal", sig, "err", err)
				}
			case <-exited:
				return
			}
		}
	}()
	err := cmd.Wait()
	close(exited)
	<-forwarded

	if err == nil {
		return 0
	}
	if ee, ok := errors.AsType[*exec.ExitError](err); ok {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	}
	logger.Error("wait for the command", "err", err)
	return 1
}

// signalNumber returns sig's number for a 128+N exit status.
func signalNumber(sig os.Signal) int {
	if s, ok := sig.(syscall.Signal); ok {
		return int(s)
	}
	return 1
}
