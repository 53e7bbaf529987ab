package service

import (
	"context"
	"log/slog"
	"net/http"
	"net/url"
	"strings"

	vegav1 "github.com/vega-gateway/vega/gen/vega/v1"
	"github.com/vega-gateway/vega/integrations/fetch"
	"github.com/vega-gateway/vega/perf/policy"
)

const maxURLLen = 8192

// Fetcher is what FetchService needs from the guarded HTTP client.
type Fetcher interface {
	Do(ctx context.Context, req *fetch.Request) (*fetch.Response, error)
}

// FetchService implements vega.v1.FetchService.
type FetchService struct {
	vegav1.UnimplementedFetchServiceServer

	fetcher  Fetcher
	backends *Backends
	log      *slog.Logger
}

// FetchBackend is the name under which Fetch reports its health.
const FetchBackend = "fetch"

// NewFetchService serves Fetch through fetcher.
func NewFetchService(fetcher Fetcher, backends *Backends, log *slog.Logger) *FetchService {
	return &FetchService{fetcher: fetcher, backends: backends, log: log}
}

// Fetch implements vega.v1.FetchService.
func (s *FetchService) Fetch(ctx context.Context, in *vegav1.FetchRequest) (*vegav1.FetchResponse, error) {
	req, _, err := fetchRequest(in)
	if err != nil {
		return nil, err
	}
	resp, err := s.fetcher.Do(ctx, req)
	s.backends.Observe(FetchBackend, err)
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	applyCacheHeaders(policy.FromContext(ctx), resp.Header)
	return &vegav1.FetchResponse{
		StatusCode:  int32(resp.StatusCode),
		Headers:     flattenHeader(resp.Header),
		Body:        resp.Body,
		ContentType: resp.ContentType,
		FinalUrl:    resp.FinalURL,
		Truncated:   resp.Truncated,
	}, nil
}

// fetchRequest validates a Fetch request and converts it; host is the URL's
// host, lower-cased ("" when it has none). The SSRF policy itself (schemes,
// addresses) is enforced by the fetcher at dial time.
func fetchRequest(in *vegav1.FetchRequest) (req *fetch.Request, host string, err error) {
	raw := in.GetUrl()
	switch {
	case raw == "":
		return nil, "", invalidArgument("url", "required")
	case len(raw) > maxURLLen:
		return nil, "", invalidArgument("url", "longer than %d bytes", maxURLLen)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, "", invalidArgument("url", "not a valid URL")
	}
	method := strings.ToUpper(in.GetMethod())
	switch method {
	case "":
		method = http.MethodGet
	case http.MethodGet, http.MethodHead:
	default:
		return nil, "", invalidArgument("method", "%q is not supported; use GET or HEAD", in.GetMethod())
	}
	header := http.Header{}
	for name, value := range in.GetHeaders() {
		canon := http.CanonicalHeaderKey(name)
		if !fetch.IsAllowedRequestHeader(canon) {
			return nil, "", invalidArgument("headers", "header %q may not be set; allowed: %s", name, strings.Join(fetch.AllowedRequestHeaders, ", "))
		}
		header.Set(canon, value)
	}
	if in.GetMaxBytes() < 0 {
		return nil, "", invalidArgument("max_bytes", "must not be negative")
	}
	req = &fetch.Request{URL: raw, Method: method, Header: header, MaxBytes: in.GetMaxBytes()}
	if t := in.GetTimeout(); t != nil {
		if err := t.CheckValid(); err != nil || t.AsDuration() < 0 {
			return nil, "", invalidArgument("timeout", "must be a non-negative duration")
		}
		req.Timeout = t.AsDuration()
	}
	return req, strings.ToLower(u.Host), nil
}

// flattenHeader joins repeated values and drops Set-Cookie: cookies set for
// the gateway must not travel to callers. The answer's headers are a proto
// map<string, string>, whose values must be valid UTF-8 or the whole answer
// fails to marshal (INTERNAL); net/http passes a header value's bytes as
// sent (a Latin-1 "café" is legal obs-text), so each invalid byte sequence
// becomes U+FFFD. Names are HTTP tokens, which net/http already enforces.
func flattenHeader(h http.Header) map[string]string {
	out := make(map[string]string, len(h))
	for name, vals := range h {
		if name == "Set-Cookie" {
			continue
		}
		out[name] = strings.ToValidUTF8(strings.Join(vals, ", "), "\uFFFD")
	}
	return out
}
