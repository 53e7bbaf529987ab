package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/selector"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	xrate "golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	vegav1 "github.com/vega-gateway/vega/gen/vega/v1"
	"github.com/vega-gateway/vega/integrations/fetch"
	"github.com/vega-gateway/vega/integrations/llm/ollama"
	"github.com/vega-gateway/vega/integrations/llm/openai"
	"github.com/vega-gateway/vega/integrations/llm/sim"
	"github.com/vega-gateway/vega/integrations/notify"
	"github.com/vega-gateway/vega/integrations/notify/outbox"
	"github.com/vega-gateway/vega/perf/breaker"
	"github.com/vega-gateway/vega/perf/cache"
	"github.com/vega-gateway/vega/perf/coalesce"
	"github.com/vega-gateway/vega/perf/connpool"
	"github.com/vega-gateway/vega/perf/fleet"
	"github.com/vega-gateway/vega/perf/monitor"
	"github.com/vega-gateway/vega/perf/ratelimit"
	"github.com/vega-gateway/vega/service"
	"github.com/vega-gateway/vega/service/dashboard"
	"github.com/vega-gateway/vega/service/httpface"
	"github.com/vega-gateway/vega/service/promstats"
)

// gRPC server bounds (SPEC §8).
const (
	maxConcurrentStreams = 256
	maxRecvMsgBytes      = 4 << 20
	maxSendMsgBytes      = 64 << 20 // a Fetch body of up to max_body_bytes plus headers
)

// Server is the whole gateway: the gRPC server with its services and the
// HTTP server for the same services over Connect, gRPC-Web and JSON, the
// dashboard, health and metrics. NewServer builds it, Listen binds the
// ports, Serve runs until its context ends and then shuts down in order.
type Server struct {
	cfg Config
	log *slog.Logger

	grpc    *grpc.Server
	health  *health.Server
	http    *http.Server
	pool    *connpool.Pool // the transport shared by LLM backends and webhooks
	fetcher *fetch.Client
	router  *service.Router
	cache   *cache.Cache
	fleet   *fleet.Fleet // the Redis a fleet shares (REDIS_URL); nil for a gateway alone
	outbox  notifyOutbox // durable notifications: bbolt, or PostgreSQL for a fleet
	leaks   *monitor.LeakDetector
	tracing *tracing
	drain   *httpface.Drainer // ends WatchStats streams when shutdown begins

	grpcLn, httpLn net.Listener
	ready          chan struct{} // closed when shutdown begins; readyz fails from then
	readyOnce      sync.Once
}

// NewServer builds every part of the gateway from cfg. It opens no port.
func NewServer(cfg Config, log *slog.Logger) (_ *Server, err error) {
	s := &Server{cfg: cfg, log: log, ready: make(chan struct{})}
	s.pool, err = connpool.New(connpool.Settings{
		MaxConnsPerHost: cfg.Pool.MaxConnectionsPerHost,
		MaxTotalConns:   cfg.Pool.MaxTotalConnections,
		ConnTTL:         cfg.Pool.ConnectionTTL,
		IdleTimeout:     cfg.Pool.IdleTimeout,
	})
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil { // stop what was started (the pool's janitor, the cache)
			_ = s.pool.Close()
			if s.cache != nil {
				s.cache.Close()
			}
			if s.fleet != nil {
				_ = s.fleet.Close()
			}
			if s.outbox != nil {
				_ = s.outbox.Close(context.Background())
			}
			if s.tracing != nil {
				_ = s.tracing.shutdown(context.Background())
			}
		}
	}()
	shared := &http.Client{Transport: s.pool}
	backends := service.NewBackends()
	if s.router, err = newRouter(cfg.LLM, shared, backends); err != nil {
		return nil, err
	}
	s.fetcher, err = fetch.New(fetch.Settings{
		Allow:        cfg.Fetch.Allow,
		MaxBodyBytes: cfg.Fetch.MaxBodyBytes,
		Timeout:      cfg.Fetch.Timeout,
		MaxRedirects: cfg.Fetch.MaxRedirects,
	})
	if err != nil {
		return nil, fmt.Errorf("VEGA_FETCH_ALLOW: %w", err)
	}
	backends.Register(service.FetchBackend, "fetch", "http", "")
	channels, err := newChannels(cfg.Notify, shared, backends)
	if err != nil {
		return nil, err
	}
	if s.outbox, err = openOutbox(cfg, channels, backends, log); err != nil {
		return nil, err
	}
	channelNames := make([]string, len(channels))
	for i, ch := range channels {
		channelNames[i] = ch.Name
	}
	auth, err := service.NewAuth(cfg.AdminAPIKey, cfg.APIKeys)
	if err != nil {
		return nil, err
	}
	generateSvc := service.NewGenerateService(s.router, backends, log, service.WithBackendTimeout(cfg.LLM.Timeout))
	fetchSvc := service.NewFetchService(s.fetcher, backends, log)
	notifySvc := service.NewNotifyService(channelNames, s.outbox, cfg.Notify.MaxWait, log)

	// The perf core. With REDIS_URL the cache has the fleet's shared tier
	// behind it, coalesces cacheable calls across the fleet, and other
	// replicas' purges reach its local tier.
	var (
		remote  cache.Remote
		flights cache.Flights
	)
	if cfg.RedisURL != "" {
		if s.fleet, err = fleet.New(fleet.Settings{URL: cfg.RedisURL, Prefix: cfg.RedisPrefix, Timeout: cfg.RedisTimeout, Log: log}); err != nil {
			return nil, err
		}
		remote, flights = s.fleet, s.fleet
		log.Info("fleet mode: the cache's second tier is Redis", "prefix", cfg.RedisPrefix, "replica", s.fleet.ReplicaID(), "redis_timeout", cfg.RedisTimeout.String())
	}
	s.cache, err = cache.New(cache.Settings{MaxBytes: cfg.Cache.MaxBytes, DefaultTTL: cfg.Cache.FetchTTL, StaleFor: cfg.Cache.StaleFor, Remote: remote, Flights: flights})
	if err != nil {
		return nil, err
	}
	if s.fleet != nil {
		s.fleet.OnPurge(func(prefix string) { s.cache.PurgeLocal(prefix) })
	}
	group := coalesce.New(coalesce.WithPanicHandler(func(key string, p *coalesce.PanicError) {
		log.Error("panic in a shared call", "key", key, "panic", fmt.Sprint(p.Value), "goexit", p.Goexit, "stack", string(p.Stack))
	}))
	var (
		fleetBreakers breaker.Fleet   // with REDIS_URL, a trip holds every replica
		fleetRate     ratelimit.Fleet // with REDIS_URL, every backend's rate ceiling and concurrency cap are the fleet's
	)
	if s.fleet != nil {
		fleetBreakers, fleetRate = s.fleet, s.fleet
	}
	breakers, err := breaker.NewSet(breaker.Settings{OpenTimeout: cfg.BreakerOpenTimeout, Fleet: fleetBreakers, OnStateChange: func(e breaker.Event) {
		log.Warn("circuit breaker state change", "backend", e.Key, "from", e.From, "to", e.To)
	}})
	if err != nil {
		return nil, err
	}
	if s.fleet != nil {
		s.fleet.OnBreaker(breakers.FleetNotice)
	}
	limiters, err := ratelimit.NewSet(ratelimit.Settings{
		Initial: cfg.Limits.Initial, Min: cfg.Limits.Min, Max: cfg.Limits.Max,
		InitialConcurrency: cfg.Limits.ConcurrencyInitial, MinConcurrency: cfg.Limits.ConcurrencyMin, MaxConcurrency: cfg.Limits.ConcurrencyMax,
		QueueTarget: cfg.Limits.QueueTarget, MaxQueueWait: cfg.Limits.QueueMaxWait, Fleet: fleetRate,
	})
	if err != nil {
		return nil, err
	}
	table := service.PolicyTable(service.PolicySettings{
		GenerateTTL: cfg.Cache.GenerateTTL, FetchTTL: cfg.Cache.FetchTTL, CacheNondeterministic: cfg.Cache.Nondeterministic,
	}, s.router)
	chain := perfChain{table: table, cache: s.cache, group: group, breakers: breakers, limiters: limiters}
	if s.fleet != nil {
		chain.streams = s.fleet // streams coalesced across the fleet too
	}
	streams := &service.StreamStats{}
	slow := monitor.NewSlowLog(cfg.SlowRPCThreshold, 0)
	s.leaks = monitor.NewLeakDetector(monitor.LeakSettings{})
	if s.tracing, err = newTracing(cfg.Tracing); err != nil {
		return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_ENDPOINT: %w", err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram())
	reg.MustRegister(metrics)
	s.drain = httpface.NewDrainer("/" + vegav1.PerfAdminService_ServiceDesc.ServiceName + "/WatchStats")

	opts, err := s.serverOptions(metrics, auth, streams, slow, chain)
	if err != nil {
		return nil, err
	}
	s.grpc = grpc.NewServer(opts...)
	vegav1.RegisterGenerateServiceServer(s.grpc, generateSvc)
	vegav1.RegisterFetchServiceServer(s.grpc, fetchSvc)
	vegav1.RegisterNotifyServiceServer(s.grpc, notifySvc)
	sections := []service.Section{
		{ID: vegav1.StatsSection_STATS_SECTION_RUNTIME, Reporter: service.RuntimeReporter{Slow: slow}},
		{ID: vegav1.StatsSection_STATS_SECTION_MEMORY_LEAKS, Reporter: service.LeakReporter{Detector: s.leaks}},
		{ID: vegav1.StatsSection_STATS_SECTION_INTEGRATIONS, Reporter: backends},
		{ID: vegav1.StatsSection_STATS_SECTION_STREAMING, Reporter: streams},
		{ID: vegav1.StatsSection_STATS_SECTION_REQUEST_COALESCING, Reporter: service.CoalesceReporter{Group: group}},
		{ID: vegav1.StatsSection_STATS_SECTION_CACHE, Reporter: service.CacheReporter{Cache: s.cache}},
		{ID: vegav1.StatsSection_STATS_SECTION_CIRCUIT_BREAKERS, Reporter: service.BreakerReporter{Set: breakers}},
		{ID: vegav1.StatsSection_STATS_SECTION_RATE_LIMITERS, Reporter: service.LimiterReporter{Set: limiters}},
		{ID: vegav1.StatsSection_STATS_SECTION_CONNECTION_POOL, Reporter: service.PoolReporter{Pool: s.pool}},
		{ID: vegav1.StatsSection_STATS_SECTION_BATCH, Reporter: service.OutboxReporter{Box: s.outbox}},
	}
	if s.fleet != nil {
		sections = append(sections, service.Section{ID: vegav1.StatsSection_STATS_SECTION_CLUSTER, Reporter: service.ClusterReporter{Fleet: s.fleet, Cache: s.cache}})
	}
	admin := service.NewPerfAdminService(log, sections...).WithActions(breakers, s.cache).WithRedrive(s.outbox)
	vegav1.RegisterPerfAdminServiceServer(s.grpc, admin)
	reg.MustRegister(promstats.NewCollector(admin.Snapshot))
	s.health = health.NewServer()
	healthpb.RegisterHealthServer(s.grpc, s.health)
	reflection.Register(s.grpc)
	metrics.InitializeMetrics(s.grpc)
	for name := range s.grpc.GetServiceInfo() {
		s.health.SetServingStatus(name, healthpb.HealthCheckResponse_SERVING)
	}

	// The four vega.v1 services on the HTTP port, through the same server
	// and so the same interceptors. No ReadTimeout or WriteTimeout: they
	// bound a whole call, and WatchStats and GenerateStream outlive any.
	// With TLS the HTTP port is HTTPS with the same certificate; with mTLS
	// the services there need a verified client certificate too (health,
	// metrics and the page's files do not, so probes and scrapers work).
	faceOpts := []httpface.Option{httpface.WithMaxMessageBytes(maxRecvMsgBytes), httpface.WithCORSOrigins(cfg.HTTPCORSOrigins...)}
	var httpTLS *tls.Config
	if cfg.TLS.CertFile != "" {
		if httpTLS, err = s.tlsConfig(); err != nil {
			return nil, err
		}
		if httpTLS.ClientCAs != nil {
			httpTLS.ClientAuth = tls.VerifyClientCertIfGiven
			faceOpts = append(faceOpts, httpface.WithClientCertRequired())
		}
	}
	face, err := httpface.New(s.grpc, []string{
		vegav1.GenerateService_ServiceDesc.ServiceName,
		vegav1.FetchService_ServiceDesc.ServiceName,
		vegav1.NotifyService_ServiceDesc.ServiceName,
		vegav1.PerfAdminService_ServiceDesc.ServiceName,
	}, faceOpts...)
	if err != nil {
		return nil, fmt.Errorf("VEGA_HTTP_CORS_ORIGINS: %w", err)
	}
	mux := http.NewServeMux()
	face.Mount(mux)
	dashboard.Mount(mux)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	s.http = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, MaxHeaderBytes: 64 << 10, TLSConfig: httpTLS,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)} // its complaints (bad TLS handshakes …) as JSON logs
	// HTTP/1.1 for browsers and curl; HTTP/2 (over TLS, or cleartext with
	// prior knowledge) also lets native gRPC clients use this port.
	s.http.Protocols = new(http.Protocols)
	s.http.Protocols.SetHTTP1(true)
	s.http.Protocols.SetHTTP2(true)
	s.http.Protocols.SetUnencryptedHTTP2(true)
	return s, nil
}

// newRouter builds the LLM backends: the built-in sim always, then the
// configured servers, all on the shared transport.
func newRouter(cfg LLMConfig, shared *http.Client, backends *service.Backends) (*service.Router, error) {
	router := service.NewRouter(cfg.DefaultBackend)
	router.Add(service.SimBackend, sim.New(service.SimBackend, sim.Settings{
		Latency: cfg.Sim.Latency, TokensPerSecond: cfg.Sim.TokensPerSecond,
	}))
	backends.Register(service.SimBackend, "llm", "sim", "")
	for _, b := range cfg.Backends {
		var (
			client service.LLM
			err    error
		)
		switch b.Type {
		case "ollama":
			client, err = ollama.New(b.Name, b.URL, shared)
		case "openai":
			client, err = openai.New(b.Name, b.URL, b.APIKey, shared)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", backendURLKey(b), err)
		}
		router.Add(b.Name, client)
		backends.Register(b.Name, "llm", b.Type, hostOf(b.URL))
	}
	for model, b := range cfg.Models {
		router.Map(model, b)
	}
	if err := router.Check(); err != nil {
		return nil, fmt.Errorf("llm: %w", err)
	}
	return router, nil
}

// newChannels builds the notification channels on the shared transport,
// with their pacing.
func newChannels(cfg NotifyConfig, shared *http.Client, backends *service.Backends) ([]outbox.Channel, error) {
	var channels []outbox.Channel
	for _, ch := range cfg.Channels {
		var (
			sender outbox.Sender
			err    error
		)
		rate, burst := 10.0, 10 // generic webhooks
		switch ch.Type {
		case "slack":
			sender, err = notify.NewSlack(ch.Name, ch.URL, shared)
			rate, burst = 1, 3 // Slack: about one message per second per webhook
		case "webhook":
			sender, err = notify.NewWebhook(ch.Name, ch.URL, shared)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", channelURLKey(ch), err)
		}
		if ch.Rate > 0 {
			rate = ch.Rate
		}
		if ch.Burst > 0 {
			burst = ch.Burst
		}
		channels = append(channels, outbox.Channel{Name: ch.Name, Sender: sender, Rate: xrate.Limit(rate), Burst: burst})
		backends.Register(ch.Name, "notify", ch.Type, hostOf(ch.URL))
	}
	return channels, nil
}

// notifyOutbox is what the server needs of the notification outbox: the
// service's part, PerfAdmin's (stats, redrive) and the shutdown's. Both
// stores have it.
type notifyOutbox interface {
	service.Outbox
	Stats() outbox.Stats
	ResetStats()
	Redrive(ctx context.Context, channel string, ids []string) (int, error)
	Release()
	Close(ctx context.Context) error
}

// openOutbox opens the durable notification outbox: in PostgreSQL when
// VEGA_POSTGRES_URL is set (a fleet), else under the data directory. Its
// workers start delivering what was left queued. PostgreSQL that cannot be
// reached at start stops the gateway with one line (README: "When
// PostgreSQL is down").
func openOutbox(cfg Config, channels []outbox.Channel, backends *service.Backends, log *slog.Logger) (notifyOutbox, error) {
	settings := outbox.Settings{
		Path:          filepath.Join(cfg.DataDir, "outbox.db"),
		Channels:      channels,
		MaxBatch:      cfg.Notify.BatchSize,
		FlushInterval: cfg.Notify.FlushInterval,
		Retention:     cfg.Notify.IdempotencyRetention,
		BackoffBase:   cfg.Notify.BackoffBase,
		BackoffMax:    cfg.Notify.BackoffMax,
		SendTimeout:   cfg.Notify.SendTimeout,
		Log:           log,
		Observe:       backends.Observe,
	}
	if cfg.PostgresURL != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		box, err := outbox.OpenPostgres(ctx, outbox.PostgresSettings{URL: cfg.PostgresURL, LeaseTTL: cfg.Notify.LeaseTTL}, settings)
		if err != nil {
			return nil, fmt.Errorf("VEGA_POSTGRES_URL: %w", err)
		}
		if _, err := os.Stat(settings.Path); err == nil {
			log.Warn("a bbolt outbox exists in VEGA_DATA_DIR but is not read while VEGA_POSTGRES_URL is set: run once without it to deliver what it holds", "path", settings.Path)
		}
		return box, nil
	}
	box, err := outbox.Open(settings)
	if err != nil {
		return nil, fmt.Errorf("VEGA_DATA_DIR: %w", err)
	}
	return box, nil
}

// serverOptions sets the gRPC bounds and the interceptor chain. The chain
// composes like an onion, the first interceptor outermost:
//
//	metrics → logging → recovery → auth → (stream stats) → perf chain → handler
//
// Metrics and logging sit outside recovery so that they record a panic as
// the INTERNAL it becomes; auth sits inside recovery so that nothing the
// caller sends can crash the process, and before the perf chain so that
// cache keys know the caller's tenant and unauthenticated calls spend
// nothing. The perf chain is described at perfChain.
func (s *Server) serverOptions(metrics *grpcprom.ServerMetrics, auth *service.Auth, streams *service.StreamStats,
	slow *monitor.SlowLog, chain perfChain) ([]grpc.ServerOption, error) {
	logger := logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		s.log.Log(ctx, slog.Level(lvl), msg, fields...)
	})
	logOpts := []logging.Option{logging.WithLogOnEvents(logging.FinishCall)}
	onPanic := recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		s.log.ErrorContext(ctx, "panic in handler", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
		return status.Error(codes.Internal, "internal error")
	})
	// Long-lived PerfAdmin watches are not slow RPCs.
	notAdmin := selector.MatchFunc(func(_ context.Context, m interceptors.CallMeta) bool {
		return m.Service != vegav1.PerfAdminService_ServiceDesc.ServiceName
	})
	unary := []grpc.UnaryServerInterceptor{
		metrics.UnaryServerInterceptor(),
		slow.UnaryServerInterceptor(),
		logging.UnaryServerInterceptor(logger, logOpts...),
		recovery.UnaryServerInterceptor(onPanic),
		auth.UnaryServerInterceptor(),
	}
	stream := []grpc.StreamServerInterceptor{
		metrics.StreamServerInterceptor(),
		selector.StreamServerInterceptor(slow.StreamServerInterceptor(), notAdmin),
		logging.StreamServerInterceptor(logger, logOpts...),
		recovery.StreamServerInterceptor(onPanic),
		auth.StreamServerInterceptor(),
		streams.StreamServerInterceptor(),
		s.drain.StreamServerInterceptor(),
	}
	// VEGA_PERF_CHAIN=off (benchmarks only): the bare server that make bench
	// compares the chain with.
	if !s.cfg.NoPerfChain {
		unary = append(unary, chain.unary()...)
		stream = append(stream, chain.stream()...)
	}
	opts := []grpc.ServerOption{
		grpc.MaxConcurrentStreams(maxConcurrentStreams),
		grpc.MaxRecvMsgSize(maxRecvMsgBytes),
		grpc.MaxSendMsgSize(maxSendMsgBytes),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionIdle:     15 * time.Minute,
			MaxConnectionAge:      30 * time.Minute,
			MaxConnectionAgeGrace: time.Minute,
			Time:                  2 * time.Minute,
			Timeout:               20 * time.Second,
		}),
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(stream...),
	}
	opts = append(opts, s.tracing.serverOption()...)
	if s.cfg.TLS.CertFile != "" {
		creds, err := s.tlsCredentials()
		if err != nil {
			return nil, err
		}
		opts = append(opts, grpc.Creds(creds))
	}
	return opts, nil
}

func (s *Server) tlsCredentials() (credentials.TransportCredentials, error) {
	conf, err := s.tlsConfig()
	if err != nil {
		return nil, err
	}
	return credentials.NewTLS(conf), nil
}

// tlsConfig loads the certificate and, for mTLS, the client CA; client
// certificates are then required.
func (s *Server) tlsConfig() (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(s.cfg.TLS.CertFile, s.cfg.TLS.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("VEGA_TLS_CERT / VEGA_TLS_KEY: %w", err)
	}
	conf := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if s.cfg.TLS.ClientCAFile != "" {
		pem, err := os.ReadFile(s.cfg.TLS.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("VEGA_TLS_CLIENT_CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, errors.New("VEGA_TLS_CLIENT_CA: no PEM certificate found")
		}
		conf.ClientCAs = pool
		conf.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return conf, nil
}

// Listen binds the gRPC and HTTP ports.
func (s *Server) Listen() error {
	var err error
	if s.grpcLn, err = net.Listen("tcp", s.cfg.GRPCAddr); err != nil {
		return fmt.Errorf("VEGA_GRPC_ADDR: %w", err)
	}
	if s.cfg.HTTPAddr != "" && s.cfg.HTTPAddr != "off" {
		if s.httpLn, err = net.Listen("tcp", s.cfg.HTTPAddr); err != nil {
			s.grpcLn.Close()
			return fmt.Errorf("VEGA_HTTP_ADDR: %w", err)
		}
	}
	return nil
}

// GRPCAddr is the bound gRPC address (after Listen).
func (s *Server) GRPCAddr() string { return s.grpcLn.Addr().String() }

// HTTPAddr is the bound HTTP address, "" when the HTTP port is off.
func (s *Server) HTTPAddr() string {
	if s.httpLn == nil {
		return ""
	}
	return s.httpLn.Addr().String()
}

// Serve runs both servers until ctx ends or one of them fails, then shuts
// down: health NOT_SERVING and readyz 503 → drain delay → WatchStats
// streams ended → HTTP shutdown (its calls finish; it rides on the gRPC
// server, so it goes first) → GracefulStop with a deadline → Stop → idle
// outbound connections closed.
func (s *Server) Serve(ctx context.Context) error {
	errc := make(chan error, 2)
	go func() { errc <- s.grpc.Serve(s.grpcLn) }()
	if s.httpLn != nil {
		go func() {
			serve := s.http.Serve
			if s.http.TLSConfig != nil {
				serve = func(ln net.Listener) error { return s.http.ServeTLS(ln, "", "") }
			}
			if err := serve(s.httpLn); !errors.Is(err, http.ErrServerClosed) {
				errc <- err
				return
			}
			errc <- nil
		}()
	}
	monitorCtx, stopMonitor := context.WithCancel(context.Background())
	monitorDone := make(chan struct{})
	go func() { s.leaks.Run(monitorCtx); close(monitorDone) }()
	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	s.shutdown()
	stopMonitor()
	<-monitorDone
	return serveErr
}

func (s *Server) shutdown() {
	s.log.Info("shutting down", "drain_delay", s.cfg.DrainDelay.String(), "timeout", s.cfg.ShutdownTimeout.String())
	s.readyOnce.Do(func() { close(s.ready) })
	s.health.Shutdown()
	s.outbox.Release() // Notify calls waiting for a delivery answer QUEUED now
	time.Sleep(s.cfg.DrainDelay)
	// The HTTP calls and then the gRPC ones share one shutdown bound.
	deadline := time.Now().Add(s.cfg.ShutdownTimeout)
	s.drain.Drain()
	if s.httpLn != nil {
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		if err := s.http.Shutdown(ctx); err != nil {
			s.log.Warn("HTTP shutdown timed out; closing remaining connections", "err", err)
			_ = s.http.Close()
		}
		cancel()
	}

	stopped := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(stopped) }()
	timer := time.NewTimer(time.Until(deadline))
	select {
	case <-stopped:
		timer.Stop()
	case <-timer.C:
		s.log.Warn("graceful stop timed out; closing remaining RPCs")
		s.grpc.Stop()
		<-stopped
	}
	// Sends in flight may finish within the shutdown bound; what is not
	// delivered stays in the outbox for the next start.
	outboxCtx, cancelOutbox := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancelOutbox()
	if err := s.outbox.Close(outboxCtx); err != nil {
		s.log.Error("closing the notification outbox failed", "err", err)
	}
	s.cache.Close()
	if s.fleet != nil {
		_ = s.fleet.Close()
	}
	_ = s.pool.Close()
	s.fetcher.CloseIdleConnections()
	flushCtx, cancelFlush := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancelFlush()
	if err := s.tracing.shutdown(flushCtx); err != nil {
		s.log.Warn("flushing traces failed", "err", err)
	}
	s.log.Info("stopped")
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	select {
	case <-s.ready:
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
	default:
		fmt.Fprintln(w, "ready")
	}
}

// hostOf returns the host of a configured URL for display; never the path
// (a Slack webhook path is a secret).
func hostOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return u.Host
}
