package integrations

import (
	"net"
	"net/http"
	"time"
)

// PoolSettings sizes the shared outbound transport. Zero values mean the
// seed's defaults, stated at each field.
type PoolSettings struct {
	MaxConnsPerHost int           // MAX_CONNECTIONS_PER_HOST; 0 means 10
	MaxIdleConns    int           // MAX_TOTAL_CONNECTIONS bounds idle connections kept; 0 means 100
	IdleTimeout     time.Duration // IDLE_TIMEOUT; 0 means 60s
	DialTimeout     time.Duration // 0 means 5s
}

// NewTransport returns the pooled transport that every configured backend
// (LLM servers, webhooks) shares, so connections are reused across calls and
// integrations. Proxies from the environment are honoured here, because
// these destinations come from the operator's configuration; the Fetch
// client, whose destinations come from callers, has its own transport.
func NewTransport(s PoolSettings) *http.Transport {
	if s.MaxConnsPerHost <= 0 {
		s.MaxConnsPerHost = 10
	}
	if s.MaxIdleConns <= 0 {
		s.MaxIdleConns = 100
	}
	if s.IdleTimeout <= 0 {
		s.IdleTimeout = 60 * time.Second
	}
	if s.DialTimeout <= 0 {
		s.DialTimeout = 5 * time.Second
	}
	dialer := &net.Dialer{Timeout: s.DialTimeout, KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           dialer.DialContext,
		ForceAttemptHTTP2:     true,
		MaxConnsPerHost:       s.MaxConnsPerHost,
		MaxIdleConnsPerHost:   s.MaxConnsPerHost,
		MaxIdleConns:          s.MaxIdleConns,
		IdleConnTimeout:       s.IdleTimeout,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
}
