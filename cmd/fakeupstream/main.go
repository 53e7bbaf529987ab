package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr, nil); err != nil {
		fmt.Fprintln(os.Stderr, "fakeupstream:", err)
		os.Exit(2)
	}
}

// run serves until ctx ends, then shuts down gracefully. ready, if not
// nil, receives the address it listens on.
func run(ctx context.Context, args []string, stderr io.Writer, ready chan<- string) error {
	opts, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	f := newFake(opts.settings, nil)
	ln, err := net.Listen("tcp", opts.addr)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           f.Handler(),
		ConnState:         f.ConnState,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(stderr, "fakeupstream: ", 0),
	}
	fmt.Fprintf(stderr, "fakeupstream: listening on http://%s (latency %v, capacity %g/s, concurrency %d)\n",
		ln.Addr(), opts.Latency, opts.Capacity, opts.Concurrency)
	if ready != nil {
		ready <- ln.Addr().String()
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = srv.Shutdown(sctx)
	if err != nil { // requests still waiting out their latency: drop them
		_ = srv.Close()
	}
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}
