// durablerelay runs the naive durable relay of package bench/internal/relay in a
// process of its own, as BenchmarkPeers measures it: a TLS listener that requires a
// client certificate from the CA in -ca, a pgx pool of -pool connections (MinConns =
// MaxConns, pgx's default cached prepared statements) on -database-url, whose
// dispatch table it creates if missing.
//
// It prints "listening HOST:PORT" once it listens and "node attached" each time a node
// has said hello, on standard output, and stops on SIGTERM or SIGINT.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/palyra/palyra/bench/internal/relay"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "durablerelay:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("durablerelay", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on")
	dbURL := fs.String("database-url", "", "PostgreSQL URL")
	poolSize := fs.Int("pool", 16, "pgx pool size (MinConns = MaxConns)")
	certFile := fs.String("cert", "", "server certificate, PEM")
	keyFile := fs.String("key", "", "server key, PEM")
	caFile := fs.String("ca", "", "CA whose client certificates are accepted, PEM")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dbURL == "" || *certFile == "" || *keyFile == "" || *caFile == "" {
		return errors.New("-database-url, -cert, -key and -ca are required")
	}
	cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
	if err != nil {
		return err
	}
	caPEM, err := os.ReadFile(*caFile)
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return fmt.Errorf("%s holds no certificate", *caFile)
	}
	cfg, err := pgxpool.ParseConfig(*dbURL)
	if err != nil {
		return err
	}
	cfg.MaxConns, cfg.MinConns = int32(*poolSize), int32(*poolSize)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, relay.Schema); err != nil {
		return fmt.Errorf("create the schema: %w", err)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	r := relay.New(pool, func() { fmt.Println("node attached") })
	srv := &http.Server{
		Handler:           r.Handler(),
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: roots, ClientAuth: tls.RequireAndVerifyClientCert},
		ReadHeaderTimeout: 10 * time.Second,
	}
	done := make(chan error, 1)
	go func() { done <- srv.ServeTLS(ln, "", "") }()
	fmt.Println("listening", ln.Addr())
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	// The node's stream never ends on its own: close rather than wait for it.
	if err := srv.Close(); err != nil {
		return err
	}
	if err := <-done; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
