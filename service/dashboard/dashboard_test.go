package dashboard

import (
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func get(t *testing.T, path string) (*http.Response, string) {
	t.Helper()
	mux := http.NewServeMux()
	Mount(mux)
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	resp := rec.Result()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, string(body)
}

func TestPageAndAssets(t *testing.T) {
	for path, ctype := range map[string]string{
		"/":                 "text/html; charset=utf-8",
		"/assets/app.js":    "text/javascript; charset=utf-8",
		"/assets/style.css": "text/css; charset=utf-8",
	} {
		resp, body := get(t, path)
		require.Equal(t, http.StatusOK, resp.StatusCode, path)
		assert.Equal(t, ctype, resp.Header.Get("Content-Type"), path)
		assert.Equal(t, "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'", resp.Header.Get("Content-Security-Policy"), path)
		assert.Equal(t, "nosniff", resp.Header.Get("X-Content-Type-Options"), path)
		assert.NotEmpty(t, body, path)
	}
	resp, _ := get(t, "/favicon.ico")
	assert.Equal(t, http.StatusNoContent, resp.StatusCode)
	for _, path := range []string{"/assets/", "/assets/nope.js", "/index.html.bak"} {
		resp, _ := get(t, path)
		assert.Equal(t, http.StatusNotFound, resp.StatusCode, path)
	}
}

// TestNothingLeavesTheHost: the page names no other origin, has no inline
// script or style (the CSP would block them) and no handler attributes.
func TestNothingLeavesTheHost(t *testing.T) {
	for _, path := range []string{"/", "/assets/app.js", "/assets/style.css"} {
		_, body := get(t, path)
		for _, m := range regexp.MustCompile(`(?i)(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}[^\s"')]*`).FindAllString(body, -1) {
			assert.Contains(t, []string{"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xhtml"}, m, "%s names another origin", path)
		}
		assert.NotContains(t, body, "@import", path)
	}
	_, html := get(t, "/")
	assert.NotRegexp(t, `<script(?:\s[^>]*)?>\s*[^<\s]`, html, "inline script")
	assert.NotContains(t, html, "<style", "inline style")
	assert.NotRegexp(t, `\son[a-z]+=`, html, "inline handler")
	assert.NotRegexp(t, `\sstyle=`, html, "style attribute")
	assert.True(t, strings.Contains(html, `src="/assets/app.js"`))
}
