package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestNonLoopbackAddrIsRefused(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:18080", ":18080", "10.1.2.3:80", "[::]:80", "example.com:80", "192.168.0.1:0"} {
		err := run(context.Background(), []string{"--addr", addr}, io.Discard, nil)
		require.Error(t, err, addr)
		assert.Contains(t, err.Error(), "loopback", addr)
	}
	for _, addr := range []string{"127.0.0.1:0", "127.0.0.2:9", "[::1]:0", "localhost:0"} {
		assert.NoError(t, checkLoopback(addr), addr)
	}
	assert.Error(t, checkLoopback("127.0.0.1"), "no port")
}

func TestParseFlags(t *testing.T) {
	o, err := parseFlags([]string{"--latency", "400ms", "--capacity", "50", "--outage", "10s-20s", "--fail-rate", "0.1"}, io.Discard)
	require.NoError(t, err)
	assert.Equal(t, "127.0.0.1:18080", o.addr)
	assert.Equal(t, 400*time.Millisecond, o.Latency)
	assert.Equal(t, 50.0, o.Capacity)
	assert.Equal(t, 1, o.RetryAfter)
	assert.Equal(t, 16, o.Tokens)
	assert.Equal(t, 10*time.Second, o.OutageFrom)
	assert.Equal(t, 20*time.Second, o.OutageTo)

	for _, bad := range [][]string{
		{"--outage", "20s-10s"}, {"--outage", "10s"}, {"--outage", "x-y"},
		{"--fail-rate", "1.5"}, {"--capacity", "-1"}, {"--tokens", "0"}, {"extra"}, {"--nope"},
	} {
		_, err := parseFlags(bad, io.Discard)
		assert.Error(t, err, "%q", bad)
	}
}

func TestRunServesAndShutsDown(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	errc := make(chan error, 1)
	go func() { errc <- run(ctx, []string{"--addr", "127.0.0.1:0"}, io.Discard, ready) }()
	addr := <-ready

	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + "/x")
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	require.NoError(t, resp.Body.Close())
	resp, err = c.Get("http://" + addr + "/_fake/stats")
	require.NoError(t, err)
	var s statsJSON
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&s))
	require.NoError(t, resp.Body.Close())
	assert.Equal(t, int64(1), s.Requests)
	assert.Equal(t, int64(1), s.NewConnections)

	cancel()
	assert.NoError(t, <-errc)
}
