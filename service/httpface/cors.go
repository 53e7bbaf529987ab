package httpface

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/rs/cors"
)

// Headers a browser may send and read across origins. The Connect and
// gRPC-Web lists are the ones each protocol's spec names (connectrpc.com,
// "CORS"); x-api-key is the gateway's own key header, Retry-After and
// x-vega-served-from are the gateway's own answers.
var (
	corsAllowedMethods = []string{http.MethodGet, http.MethodPost}
	corsAllowedHeaders = []string{
		"Content-Type", "Connect-Protocol-Version", "Connect-Timeout-Ms", "Connect-Accept-Encoding",
		"Connect-Content-Encoding", "Grpc-Timeout", "X-Grpc-Web", "X-User-Agent", "X-Api-Key",
	}
	corsExposedHeaders = []string{
		"Grpc-Status", "Grpc-Message", "Grpc-Status-Details-Bin", "Retry-After",
		"X-Vega-Served-From", "Content-Encoding", "Connect-Content-Encoding",
	}
)

// corsMaxAgeSeconds is how long a browser may keep a preflight answer
// (Chromium caps it at 7200 s).
const corsMaxAgeSeconds = 7200

type corsPolicy struct{ c *cors.Cors }

// newCORS checks the origins and builds the policy; none means no CORS.
func newCORS(origins []string) (corsPolicy, error) {
	if len(origins) == 0 {
		return corsPolicy{}, nil
	}
	exact := make([]string, len(origins))
	for i, o := range origins {
		if err := CheckOrigin(o); err != nil {
			return corsPolicy{}, err
		}
		exact[i] = strings.TrimSuffix(o, "/") // browsers send the origin without one
	}
	return corsPolicy{c: cors.New(cors.Options{
		AllowedOrigins: exact,
		AllowedMethods: corsAllowedMethods,
		AllowedHeaders: corsAllowedHeaders,
		ExposedHeaders: corsExposedHeaders,
		MaxAge:         corsMaxAgeSeconds,
	})}, nil
}

func (p corsPolicy) wrap(h http.Handler) http.Handler {
	if p.c == nil {
		return h
	}
	return p.c.Handler(h)
}

// CheckOrigin accepts one exact browser origin: http or https, a host, an
// optional port, nothing else. Wildcards are refused: a page on any site
// could then drive the gateway with a key its user pasted once.
func CheckOrigin(origin string) error {
	u, err := url.Parse(origin)
	switch {
	case strings.Contains(origin, "*"):
		return fmt.Errorf("%q: wildcards are not allowed, name each origin", origin)
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		return fmt.Errorf("%q: must be an origin such as https://app.example.com", origin)
	case (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil:
		return fmt.Errorf("%q: an origin is scheme://host[:port], without path, query or user", origin)
	}
	return nil
}
