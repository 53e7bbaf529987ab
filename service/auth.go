package service

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"strings"

	middleware "github.com/grpc-ecosystem/go-grpc-middleware/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/grpc/status"

	vegav1 "github.com/vega-gateway/vega/gen/vega/v1"
)

// APIKeyHeader is the metadata key that carries client and admin keys.
const APIKeyHeader = "x-api-key"

type access int

const (
	accessDenied     access = iota // unknown services: deny by default
	accessPublic                   // health: load balancers call it without keys
	accessClient                   // data services
	accessReflection               // reflection: a client key or the admin key (an operator with grpcurl)
	accessAdmin                    // PerfAdmin
)

// serviceAccess is the allow-list. A service not named here is refused.
var serviceAccess = map[string]access{
	healthpb.Health_ServiceDesc.ServiceName:                    accessPublic,
	reflectionv1.ServerReflection_ServiceDesc.ServiceName:      accessReflection,
	reflectionv1alpha.ServerReflection_ServiceDesc.ServiceName: accessReflection,
	vegav1.GenerateService_ServiceDesc.ServiceName:             accessClient,
	vegav1.FetchService_ServiceDesc.ServiceName:                accessClient,
	vegav1.NotifyService_ServiceDesc.ServiceName:               accessClient,
	vegav1.PerfAdminService_ServiceDesc.ServiceName:            accessAdmin,
}

// Auth checks API keys on unary and stream RPCs alike. Keys are compared in
// constant time over SHA-256 digests, so neither their content nor their
// length leaks through timing.
type Auth struct {
	admin   *[sha256.Size]byte // nil: PerfAdmin refuses every call
	clients []clientKey        // empty: data services are open
}

type clientKey struct {
	digest [sha256.Size]byte
	tenant string
}

// NewAuth builds the key checker. adminKey "" disables PerfAdmin. Each client
// key is "key" or "key=tenant"; a key without a tenant gets a tenant id
// derived from its digest (never the key itself).
func NewAuth(adminKey string, clientKeys []string) (*Auth, error) {
	a := &Auth{}
	if adminKey != "" {
		d := sha256.Sum256([]byte(adminKey))
		a.admin = &d
	}
	for _, entry := range clientKeys {
		key, tenant, _ := strings.Cut(strings.TrimSpace(entry), "=")
		if key == "" {
			return nil, fmt.Errorf("VEGA_API_KEYS: empty key in entry %d", len(a.clients)+1)
		}
		d := sha256.Sum256([]byte(key))
		if tenant == "" {
			tenant = "key-" + hex.EncodeToString(d[:4])
		}
		a.clients = append(a.clients, clientKey{digest: d, tenant: tenant})
	}
	return a, nil
}

type tenantKey struct{}

// Tenant returns the caller's tenant as established by Auth ("" when client
// keys are not configured). Cache and coalescing keys include it.
func Tenant(ctx context.Context) string {
	t, _ := ctx.Value(tenantKey{}).(string)
	return t
}

// UnaryServerInterceptor enforces the keys on unary RPCs.
func (a *Auth) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, err := a.authorize(ctx, info.FullMethod)
		if err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// StreamServerInterceptor enforces the keys on streaming RPCs (reflection and
// health watch are streams too).
func (a *Auth) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, err := a.authorize(ss.Context(), info.FullMethod)
		if err != nil {
			return err
		}
		wrapped := middleware.WrapServerStream(ss)
		wrapped.WrappedContext = ctx
		return handler(srv, wrapped)
	}
}

func (a *Auth) authorize(ctx context.Context, fullMethod string) (context.Context, error) {
	svc := serviceName(fullMethod)
	switch serviceAccess[svc] {
	case accessPublic:
		return ctx, nil
	case accessReflection:
		if len(a.clients) == 0 {
			return ctx, nil
		}
		if digest, ok := presentedKey(ctx); ok && a.admin != nil && subtle.ConstantTimeCompare(digest[:], a.admin[:]) == 1 {
			return ctx, nil
		}
		return a.client(ctx)
	case accessClient:
		if len(a.clients) == 0 {
			return ctx, nil
		}
		return a.client(ctx)
	case accessAdmin:
		if a.admin == nil {
			return nil, status.Error(codes.PermissionDenied, "the admin API is disabled: start the gateway with VEGA_ADMIN_API_KEY set and send that key as x-api-key metadata")
		}
		digest, ok := presentedKey(ctx)
		if !ok {
			return nil, status.Error(codes.Unauthenticated, "missing x-api-key metadata: PerfAdmin needs the admin key (VEGA_ADMIN_API_KEY)")
		}
		if subtle.ConstantTimeCompare(digest[:], a.admin[:]) != 1 {
			return nil, status.Error(codes.Unauthenticated, "invalid admin key")
		}
		return ctx, nil
	default:
		return nil, status.Errorf(codes.PermissionDenied, "service %q is not exposed", svc)
	}
}

// client checks the caller's client key and puts its tenant in the context.
func (a *Auth) client(ctx context.Context) (context.Context, error) {
	digest, ok := presentedKey(ctx)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "missing x-api-key metadata: this gateway requires a client key (VEGA_API_KEYS)")
	}
	tenant, found := "", 0
	for _, k := range a.clients { // no early exit: constant time in the key set
		if subtle.ConstantTimeCompare(digest[:], k.digest[:]) == 1 {
			tenant, found = k.tenant, 1
		}
	}
	if found == 0 {
		return nil, status.Error(codes.Unauthenticated, "invalid x-api-key")
	}
	return context.WithValue(ctx, tenantKey{}, tenant), nil
}

func presentedKey(ctx context.Context) ([sha256.Size]byte, bool) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get(APIKeyHeader)
	if len(vals) == 0 || vals[0] == "" {
		return [sha256.Size]byte{}, false
	}
	return sha256.Sum256([]byte(vals[0])), true
}

// serviceName returns "pkg.Service" from "/pkg.Service/Method".
func serviceName(fullMethod string) string {
	s := strings.TrimPrefix(fullMethod, "/")
	if i := strings.LastIndexByte(s, '/'); i >= 0 {
		return s[:i]
	}
	return s
}
