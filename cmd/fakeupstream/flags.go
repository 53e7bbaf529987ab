package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strings"
	"time"
)

type options struct {
	addr string
	settings
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	var outage string
	fs := flag.NewFlagSet("fakeupstream", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.addr, "addr", "127.0.0.1:18080", "loopback `host:port` to listen on")
	fs.DurationVar(&o.Latency, "latency", 0, "service time of each request, e.g. 400ms")
	fs.Float64Var(&o.Capacity, "capacity", 0, "requests per second it can serve (token bucket); 0 = unlimited; beyond: 429")
	fs.IntVar(&o.RetryAfter, "retry-after", 1, "Retry-After `seconds` sent with 429")
	fs.IntVar(&o.Concurrency, "concurrency", 0, "requests served at once; 0 = unlimited; beyond: 503 (or wait with --queue)")
	fs.BoolVar(&o.Queue, "queue", false, "beyond --concurrency, queue requests without bound instead of answering 503")
	fs.Float64Var(&o.FailRate, "fail-rate", 0, "fraction of requests answered 500, deterministic (0.5 = every 2nd)")
	fs.StringVar(&outage, "outage", "", "`window` after start, like 10s-20s, during which every request gets 503")
	fs.IntVar(&o.Tokens, "tokens", 16, "words in generated answers")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if err := checkLoopback(o.addr); err != nil {
		return o, err
	}
	var err error
	if o.OutageFrom, o.OutageTo, err = parseWindow(outage); err != nil {
		return o, err
	}
	switch {
	case o.Latency < 0:
		return o, errors.New("--latency must not be negative")
	case o.Capacity < 0:
		return o, errors.New("--capacity must not be negative")
	case o.RetryAfter < 0:
		return o, errors.New("--retry-after must not be negative")
	case o.Concurrency < 0:
		return o, errors.New("--concurrency must not be negative")
	case o.FailRate < 0 || o.FailRate > 1:
		return o, errors.New("--fail-rate must be between 0 and 1")
	case o.Tokens < 1:
		return o, errors.New("--tokens must be at least 1")
	}
	return o, nil
}

// checkLoopback refuses any address that is not a loopback one: benchmark
// traffic on this machine must stay on loopback.
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--addr %q: %w", addr, err)
	}
	if strings.EqualFold(host, "localhost") {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	if host == "" {
		host = "all interfaces"
	}
	return fmt.Errorf("--addr %q: refusing to listen on %s: only loopback addresses (127.0.0.1, ::1, localhost) are allowed", addr, host)
}

// parseWindow parses "10s-20s" into its bounds; "" means no window.
func parseWindow(s string) (from, to time.Duration, err error) {
	if s == "" {
		return 0, 0, nil
	}
	a, b, ok := strings.Cut(s, "-")
	if ok {
		from, err = time.ParseDuration(a)
	}
	if ok && err == nil {
		to, err = time.ParseDuration(b)
	}
	if !ok || err != nil || from < 0 || to <= from {
		return 0, 0, fmt.Errorf("--outage %q: want a window like 10s-20s (start before end)", s)
	}
	return from, to, nil
}
