package main

import (
	"crypto/tls"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// httpsCall calls the HTTP port over TLS with conf, returning the status.
func httpsCall(t *testing.T, g *gateway, conf *tls.Config, method, path, body string) int {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: conf}
	t.Cleanup(tr.CloseIdleConnections)
	req, err := http.NewRequestWithContext(ctxTimeout(t, 10*time.Second), method, "https://"+g.srv.HTTPAddr()+path, strings.NewReader(body))
	require.NoError(t, err)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// TestHTTPPortFollowsTLS: with VEGA_TLS_CERT the HTTP port is HTTPS with
// the same certificate (keys never cross the wire in clear), and with
// VEGA_TLS_CLIENT_CA its services need a client certificate as the gRPC
// port does, while health, metrics and the page's files stay reachable.
func TestHTTPPortFollowsTLS(t *testing.T) {
	pki := newTestPKI(t)
	const generate = `{"model":"sim","prompt":"over https"}`

	g := startGateway(t, map[string]string{"VEGA_TLS_CERT": pki.serverCert, "VEGA_TLS_KEY": pki.serverKey})
	server := &tls.Config{RootCAs: pki.caPool}
	assert.Equal(t, http.StatusOK, httpsCall(t, g, server, http.MethodGet, "/healthz", ""))
	assert.Equal(t, http.StatusOK, httpsCall(t, g, server, http.MethodPost, "/vega.v1.GenerateService/Generate", generate))
	resp, err := httpClient(t).Post(g.baseURL()+"/vega.v1.GenerateService/Generate", "application/json", strings.NewReader(generate))
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode, "plain HTTP to the HTTPS port is refused")

	m := startGateway(t, map[string]string{
		"VEGA_TLS_CERT": pki.serverCert, "VEGA_TLS_KEY": pki.serverKey, "VEGA_TLS_CLIENT_CA": pki.caFile,
	})
	for _, path := range []string{"/healthz", "/readyz", "/metrics", "/", "/assets/app.js"} {
		assert.Equal(t, http.StatusOK, httpsCall(t, m, server, http.MethodGet, path, ""), path)
	}
	assert.Equal(t, http.StatusUnauthorized, httpsCall(t, m, server, http.MethodPost, "/vega.v1.GenerateService/Generate", generate),
		"mTLS: no client certificate, no service")
	withCert := &tls.Config{RootCAs: pki.caPool, Certificates: []tls.Certificate{pki.clientCert}}
	assert.Equal(t, http.StatusOK, httpsCall(t, m, withCert, http.MethodPost, "/vega.v1.GenerateService/Generate", generate))
}
