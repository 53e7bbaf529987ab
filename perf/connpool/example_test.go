package connpool_test

import (
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/vega-gateway/vega/perf/connpool"
)

// One Pool is the transport of every client that calls a configured
// backend; its Stats count real sockets.
func Example() {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, `{"ok":true}`)
	}))
	defer backend.Close()

	pool, err := connpool.New(connpool.Settings{MaxConnsPerHost: 16, ConnTTL: 5 * time.Minute})
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	client := &http.Client{Transport: pool, Timeout: 10 * time.Second}

	for range 10 {
		resp, err := client.Get(backend.URL)
		if err != nil {
			log.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body) // read to EOF: the socket goes back to the pool
		_ = resp.Body.Close()
	}

	st := pool.Stats()
	fmt.Printf("requests=%d connections=%d reuse=%.0f%% open=%d idle=%d\n",
		st.Requests, st.ConnectionsCreated, st.ReuseRate(), st.TotalConnections, st.IdleConnections)
	// Output: requests=10 connections=1 reuse=90% open=1 idle=1
}
