package httpface

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"connectrpc.com/vanguard"
	"connectrpc.com/vanguard/vanguardgrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/protobuf/encoding/protojson"
)

// DefaultMaxMessageBytes bounds one request or response message the face
// buffers while transcoding (vanguard's own default is 4 GiB). It matches
// the gRPC port's receive limit; a larger message fails the call with
// resource_exhausted.
const DefaultMaxMessageBytes = 4 << 20

// Face is the HTTP face of a *grpc.Server: the Connect protocol, gRPC-Web
// and plain JSON POSTs for the services it names, transcoded by vanguard
// into calls of the server's own ServeHTTP, so the server's interceptors
// serve every call.
type Face struct {
	handler  http.Handler
	services []string
}

type options struct {
	maxMessageBytes   uint32
	corsOrigins       []string
	requireClientCert bool
}

// Option configures New.
type Option func(*options)

// WithMaxMessageBytes bounds one message the face buffers (default
// DefaultMaxMessageBytes).
func WithMaxMessageBytes(n uint32) Option {
	return func(o *options) { o.maxMessageBytes = n }
}

// WithCORSOrigins lets pages served from these exact origins
// ("https://app.example.com", scheme and host, no path, no wildcard) call
// the services from a browser. None (the default): no CORS headers, so only
// same-origin pages (the dashboard) can read the answers.
func WithCORSOrigins(origins ...string) Option {
	return func(o *options) { o.corsOrigins = append(o.corsOrigins, origins...) }
}

// WithClientCertRequired refuses calls that did not come over TLS with a
// verified client certificate (unauthenticated, 401): the HTTP port's
// share of the gRPC port's mTLS, for a server whose TLS config verifies
// client certificates when given (tls.VerifyClientCertIfGiven), so that
// health checks and scrapers without one still reach their paths.
func WithClientCertRequired() Option {
	return func(o *options) { o.requireClientCert = true }
}

// init registers a gRPC codec named "json" (protojson, unknown fields
// discarded, unpopulated fields emitted) with grpc-go, at init time as
// grpc-go's registry requires, so that the face hands JSON requests to the
// server as they are instead of converting them to binary and back. It
// also lets native gRPC clients send application/grpc+json.
func init() {
	encoding.RegisterCodec(vanguardgrpc.NewCodec(&vanguard.JSONCodec{
		MarshalOptions:   protojson.MarshalOptions{EmitUnpopulated: true},
		UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: true},
	}))
}

// New builds the face for the named services of srv (full names, such as
// "vega.v1.GenerateService"). Every service must be registered on srv
// before New is called.
func New(srv *grpc.Server, services []string, opts ...Option) (*Face, error) {
	o := options{maxMessageBytes: DefaultMaxMessageBytes}
	for _, opt := range opts {
		opt(&o)
	}
	if len(services) == 0 {
		return nil, errors.New("httpface: no services named")
	}
	info := srv.GetServiceInfo()
	for _, name := range services {
		if _, ok := info[name]; !ok {
			return nil, fmt.Errorf("httpface: service %q is not registered on the gRPC server", name)
		}
	}
	cors, err := newCORS(o.corsOrigins)
	if err != nil {
		return nil, err
	}
	tc, err := vanguardgrpc.NewTranscoder(srv,
		vanguard.WithDefaultServiceOptions(vanguard.WithMaxMessageBufferBytes(o.maxMessageBytes)))
	if err != nil {
		return nil, fmt.Errorf("httpface: %w", err)
	}
	var h http.Handler = tc
	h = retryAfter(h)
	h = checkUnary(h, o.maxMessageBytes)
	h = connectVersion(h)
	if o.requireClientCert {
		h = clientCert(h)
	}
	h = cors.wrap(h)
	return &Face{handler: h, services: append([]string(nil), services...)}, nil
}

// Mount routes "/<service>/" of every named service to the face on mux.
// Other services of the server (health, reflection) are not reachable
// over HTTP.
func (f *Face) Mount(mux *http.ServeMux) {
	for _, name := range f.services {
		mux.Handle("/"+name+"/", f.handler)
	}
}

// ServeHTTP serves one call of a named service. It is Mount without the
// mux; requests to other paths get what the transcoder answers for them.
func (f *Face) ServeHTTP(w http.ResponseWriter, r *http.Request) { f.handler.ServeHTTP(w, r) }

// clientCert refuses requests without a verified client certificate.
func clientCert(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
			writeConnectError(w, http.StatusUnauthorized, "unauthenticated", "this gateway requires a TLS client certificate (mTLS)")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// connectVersion makes plain JSON (or binary) POSTs Connect unary calls.
// Without the Connect-Protocol-Version header vanguard reads a POST of
// application/json as a REST call, and the services declare no REST
// routes, so `curl -H 'Content-Type: application/json' -d '{…}'` would get
// 404. Connect clients send the header; adding it for those that do not
// changes nothing else.
//
// A POST of any other type (curl -d sends application/x-www-form-urlencoded)
// is answered 415 with a Connect error that names the header to send,
// instead of the transcoder's bare 404.
func connectVersion(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			ctypes := r.Header.Values("Content-Type")
			switch {
			case isUnaryContentType(ctypes):
				if md := methodDescriptor(r.URL.Path); md != nil && md.IsStreamingServer() {
					writeConnectError(w, http.StatusUnsupportedMediaType, "invalid_argument",
						fmt.Sprintf("%s streams its answer: send Content-Type: application/connect+json and the request in a Connect envelope (a flags byte, a 4-byte big-endian length, the JSON), or use a Connect client such as buf curl", md.Name()))
					return
				}
				if len(r.Header.Values("Connect-Protocol-Version")) == 0 {
					r.Header.Set("Connect-Protocol-Version", "1")
				}
			case !isRPCContentType(ctypes):
				writeConnectError(w, http.StatusUnsupportedMediaType, "invalid_argument",
					fmt.Sprintf("unsupported Content-Type %q: send Content-Type: application/json with a JSON body (or application/proto, or use a Connect, gRPC-Web or gRPC client)",
						strings.Join(ctypes, ", ")))
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// isRPCContentType says whether the transcoder reads this type as an RPC
// protocol: Connect streaming, gRPC or gRPC-Web.
func isRPCContentType(values []string) bool {
	if len(values) != 1 {
		return false
	}
	ct := strings.ToLower(strings.TrimSpace(values[0]))
	return strings.HasPrefix(ct, "application/connect+") || ct == "application/grpc" || strings.HasPrefix(ct, "application/grpc+") ||
		ct == "application/grpc-web" || strings.HasPrefix(ct, "application/grpc-web+")
}

func isUnaryContentType(values []string) bool {
	if len(values) != 1 {
		return false
	}
	ct, _, _ := strings.Cut(values[0], ";")
	ct = strings.ToLower(strings.TrimSpace(ct))
	return ct == "application/json" || ct == "application/proto"
}
