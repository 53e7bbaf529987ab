package service

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	vegav1 "github.com/vega-gateway/vega/gen/vega/v1"
	"github.com/vega-gateway/vega/integrations"
	"github.com/vega-gateway/vega/perf/policy"
)

// PolicySettings are the knobs of the policy table.
type PolicySettings struct {
	GenerateTTL time.Duration // COALESCE_CACHE_TTL
	FetchTTL    time.Duration // INTEGRATION_CACHE_TTL
	// CacheNondeterministic makes CACHE_MODE_AUTO cache every Generate
	// answer, as the seed did (VEGA_CACHE_NONDETERMINISTIC). Off by default:
	// only temperature-0 or seeded requests are cached.
	CacheNondeterministic bool
}

// PolicyTable is the one table that says what the perf chain does with each
// method: which requests are coalesced and cached, and which backend key a
// request maps to (model → backend, URL → host, channel → channel).
//
//	method          coalesce          cache                        limit+break key
//	Generate        yes (not BYPASS)  AUTO: deterministic only;    backend of the model
//	GenerateStream                    FORCE: all; NO_STORE: read   (not for the in-process sim)
//	                                  only; BYPASS: neither
//	Fetch           GET and HEAD      by the answer's headers      "fetch:" + host
//	Notify          never             never                        none: the outbox paces and retries
//	                                                               each channel itself
//
// Every Plan validates its request first, so bad input is refused before it
// can join a flight, read the cache or spend a rate token.
func PolicyTable(s PolicySettings, router *Router) policy.Table {
	gen := func(newReq func() proto.Message) *policy.Rule {
		return &policy.Rule{
			NewRequest: newReq,
			Plan: func(ctx context.Context, m proto.Message) (*policy.Decision, error) {
				return planGenerate(ctx, s, router, m.(generateParams))
			},
		}
	}
	return policy.Table{
		vegav1.GenerateService_Generate_FullMethodName:       gen(func() proto.Message { return new(vegav1.GenerateRequest) }),
		vegav1.GenerateService_GenerateStream_FullMethodName: gen(func() proto.Message { return new(vegav1.GenerateStreamRequest) }),
		vegav1.FetchService_Fetch_FullMethodName: {
			NewRequest: func() proto.Message { return new(vegav1.FetchRequest) },
			Plan: func(ctx context.Context, m proto.Message) (*policy.Decision, error) {
				return planFetch(ctx, s, m.(*vegav1.FetchRequest))
			},
			Classify: classifyFetch,
			Store:    storeFetch,
		},
		// Notify is in the table only so that its answers carry
		// x-vega-served-from; no mechanism acts on it (the outbox paces and
		// retries each channel), and the handler validates.
		vegav1.NotifyService_Notify_FullMethodName: {
			NewRequest: func() proto.Message { return new(vegav1.NotifyRequest) },
			Plan: func(context.Context, proto.Message) (*policy.Decision, error) {
				return &policy.Decision{}, nil
			},
		},
	}
}

func planGenerate(ctx context.Context, s PolicySettings, router *Router, in generateParams) (*policy.Decision, error) {
	if err := validateGenerate(in); err != nil {
		return nil, err
	}
	backend := router.BackendFor(in.GetModel())
	d := &policy.Decision{TTL: s.GenerateTTL, Tenant: Tenant(ctx)}
	if backend != SimBackend { // the in-process sim needs no protection
		d.Backend, d.Limit, d.Break = backend, true, true
	}
	o := in.GetOptions()
	deterministic := o != nil && ((o.Temperature != nil && o.GetTemperature() == 0) || o.Seed != nil)
	cc := in.GetCacheControl()
	switch cc.GetMode() {
	case vegav1.CacheMode_CACHE_MODE_BYPASS:
		return d, nil
	case vegav1.CacheMode_CACHE_MODE_FORCE:
		d.Coalesce, d.ReadCache, d.WriteCache = true, true, true
	case vegav1.CacheMode_CACHE_MODE_NO_STORE:
		d.Coalesce, d.ReadCache = true, deterministic || s.CacheNondeterministic
	default: // AUTO
		d.Coalesce = true
		d.ReadCache = deterministic || s.CacheNondeterministic
		d.WriteCache = d.ReadCache
	}
	if ttl := cc.GetTtl(); ttl != nil && ttl.AsDuration() > 0 {
		d.TTL = ttl.AsDuration()
	}
	key, err := generateKey(Tenant(ctx), backend, in)
	if err != nil {
		return nil, err
	}
	d.Key = key
	return d, nil
}

// generateKey covers every field that changes the answer and none that does
// not (cache_control), plus the method and the caller's tenant. The request
// belongs to this call alone, so cache_control is set aside while it is
// encoded instead of copying the message.
func generateKey(tenant, backend string, in generateParams) (string, error) {
	prefix := []string{"generate/", backend, "/"}
	switch r := in.(type) {
	case *vegav1.GenerateRequest:
		cc := r.CacheControl
		r.CacheControl = nil
		defer func() { r.CacheControl = cc }()
		return policy.Key(prefix, tenant, "generate", r)
	case *vegav1.GenerateStreamRequest:
		cc := r.CacheControl
		r.CacheControl = nil
		defer func() { r.CacheControl = cc }()
		return policy.Key(prefix, tenant, "generate-stream", r)
	}
	return "", status.Error(codes.Internal, "unexpected request type")
}

func planFetch(ctx context.Context, s PolicySettings, in *vegav1.FetchRequest) (*policy.Decision, error) {
	req, host, err := fetchRequest(in)
	if err != nil {
		return nil, err
	}
	if host == "" {
		// Let the fetcher produce its precise refusal; no shared state is
		// keyed by an unusable host.
		return &policy.Decision{}, nil
	}
	canonical := &vegav1.FetchRequest{Url: req.URL, Method: req.Method, Headers: in.GetHeaders(), MaxBytes: in.GetMaxBytes()}
	key, err := policy.Key([]string{"fetch/", host, "/"}, Tenant(ctx), "fetch", canonical)
	if err != nil {
		return nil, err
	}
	return &policy.Decision{
		Key: key, Backend: "fetch:" + host, Tenant: Tenant(ctx),
		Coalesce: true, ReadCache: true, WriteCache: true, TTL: s.FetchTTL,
		Limit: true, Break: true,
	}, nil
}

// classifyFetch: a fetch that returned is an RPC success, but what the host
// answered says how the host is doing.
func classifyFetch(resp any, err error) policy.Result {
	r, ok := resp.(*vegav1.FetchResponse)
	if err != nil || !ok {
		return policy.ClassifyError(err)
	}
	switch code := r.GetStatusCode(); {
	case code == http.StatusTooManyRequests:
		return policy.Result{Outcome: policy.Overload, RetryAfter: integrations.RetryAfter(r.GetHeaders()["Retry-After"], time.Now())}
	case code >= 500:
		return policy.Result{Outcome: policy.Failure}
	}
	return policy.Result{Outcome: policy.Success}
}

// cacheableStatus are the statuses whose answers may be reused (RFC 9111
// heuristically cacheable ones that make sense for GET and HEAD); 404 and
// 410 are cached briefly as negative answers.
var cacheableStatus = map[int32]bool{200: true, 203: true, 204: true, 300: true, 301: true, 308: true}

func storeFetch(_ *policy.Decision, resp any) (time.Duration, bool, bool) {
	r, ok := resp.(*vegav1.FetchResponse)
	if !ok || r.GetTruncated() {
		return 0, false, false
	}
	switch code := r.GetStatusCode(); {
	case code == http.StatusNotFound || code == http.StatusGone:
		return 0, true, true
	case cacheableStatus[code]:
		return 0, false, true
	}
	return 0, false, false
}

// applyCacheHeaders lets the upstream's answer lower or forbid caching:
// no-store, private, no-cache and Set-Cookie forbid it; max-age / s-maxage
// lower the TTL.
func applyCacheHeaders(d *policy.Decision, h http.Header) {
	if d == nil || !d.WriteCache {
		return
	}
	if len(h.Values("Set-Cookie")) > 0 {
		d.WriteCache = false
		return
	}
	for _, v := range h.Values("Cache-Control") {
		for _, dir := range strings.Split(v, ",") {
			name, arg, _ := strings.Cut(strings.TrimSpace(strings.ToLower(dir)), "=")
			switch name {
			case "no-store", "private", "no-cache":
				d.WriteCache = false
				return
			case "max-age", "s-maxage":
				secs, err := strconv.Atoi(strings.Trim(arg, `"`))
				if err != nil {
					continue
				}
				if secs <= 0 {
					d.WriteCache = false
					return
				}
				if ttl := time.Duration(secs) * time.Second; ttl < d.TTL {
					d.TTL = ttl
				}
			}
		}
	}
}
