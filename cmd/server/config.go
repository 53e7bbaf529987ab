package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/vega-gateway/vega/perf/fleet"
	"github.com/vega-gateway/vega/service/httpface"
)

// Config is the whole configuration of the gateway: a YAML file (--config or
// VEGA_CONFIG) overridden by environment variables. Zero values mean the
// defaults set in defaultConfig; Validate names the first bad key.
type Config struct {
	GRPCAddr string `yaml:"grpc_addr"` // VEGA_GRPC_ADDR, default ":50051"
	HTTPAddr string `yaml:"http_addr"` // VEGA_HTTP_ADDR, default ":8080"; "" or "off" disables
	// HTTPCORSOrigins are the exact browser origins whose pages may call
	// the services on the HTTP port; VEGA_HTTP_CORS_ORIGINS, comma
	// separated. Default none: no CORS, only same-origin pages.
	HTTPCORSOrigins []string `yaml:"http_cors_origins"`
	AdminAPIKey     string   `yaml:"admin_api_key"` // VEGA_ADMIN_API_KEY
	APIKeys         []string `yaml:"api_keys"`      // VEGA_API_KEYS: "key" or "key=tenant"
	DataDir         string   `yaml:"data_dir"`      // VEGA_DATA_DIR, default "./data"
	RedisURL        string   `yaml:"redis_url"`     // REDIS_URL: a fleet sharing Redis; unset = this gateway alone
	// RedisPrefix names the fleet: every Redis key starts with
	// "<prefix>:v1:", so two fleets on one Redis never mix;
	// VEGA_REDIS_PREFIX, default "vega".
	RedisPrefix string `yaml:"redis_prefix"`
	// RedisTimeout is every Redis operation's budget; VEGA_REDIS_TIMEOUT,
	// default 50ms.
	RedisTimeout    time.Duration `yaml:"redis_timeout"`
	PostgresURL     string        `yaml:"postgres_url"`     // VEGA_POSTGRES_URL: the Notify outbox in PostgreSQL, for a fleet; unset = bbolt in DataDir
	LogLevel        string        `yaml:"log_level"`        // VEGA_LOG_LEVEL: debug, info, warn, error
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"` // VEGA_SHUTDOWN_TIMEOUT, default 15s
	DrainDelay      time.Duration `yaml:"drain_delay"`      // VEGA_DRAIN_DELAY, default 0
	// SlowRPCThreshold: RPCs at least this long are listed in PerfAdmin's
	// runtime section; VEGA_SLOW_RPC_THRESHOLD, default 1s.
	SlowRPCThreshold time.Duration `yaml:"slow_rpc_threshold"`
	// BreakerOpenTimeout is how long a backend's tripped circuit breaker
	// stays open before a probe is let through (in a fleet: on every
	// replica); VEGA_BREAKER_OPEN_TIMEOUT, default 30s.
	BreakerOpenTimeout time.Duration `yaml:"breaker_open_timeout"`
	// Tracing is on when OTEL_EXPORTER_OTLP_ENDPOINT or
	// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set (environment only).
	Tracing bool `yaml:"-"`
	// NoPerfChain leaves the perf chain (policy, cache, coalescing, breaker,
	// limiter) out of the server, for benchmarks that compare the chain with
	// a bare server (VEGA_PERF_CHAIN=off, environment only; default on).
	NoPerfChain bool `yaml:"-"`

	TLS    TLSConfig    `yaml:"tls"`
	LLM    LLMConfig    `yaml:"llm"`
	Fetch  FetchConfig  `yaml:"fetch"`
	Notify NotifyConfig `yaml:"notify"`
	Cache  CacheConfig  `yaml:"cache"`
	Pool   PoolConfig   `yaml:"pool"`
	Limits LimitConfig  `yaml:"rate_limit"`
}

// TLSConfig turns on TLS (cert and key) and mTLS (client_ca as well).
type TLSConfig struct {
	CertFile     string `yaml:"cert_file"`      // VEGA_TLS_CERT
	KeyFile      string `yaml:"key_file"`       // VEGA_TLS_KEY
	ClientCAFile string `yaml:"client_ca_file"` // VEGA_TLS_CLIENT_CA
}

// LLMConfig lists model backends and which models go where.
type LLMConfig struct {
	// DefaultBackend serves every model not in Models. Default: "ollama" when
	// VEGA_OLLAMA_URL is set, else "openai" when VEGA_OPENAI_BASE_URL is set,
	// else "sim".
	DefaultBackend string            `yaml:"default_backend"`
	Backends       []BackendConfig   `yaml:"backends"`
	Models         map[string]string `yaml:"models"` // model name → backend name
	Sim            SimConfig         `yaml:"sim"`
	// Timeout bounds one unary Generate call to a model server: past it
	// the backend counts as failed (hung, not just slow) for the breaker;
	// streams are not bounded. VEGA_LLM_TIMEOUT, default 10m.
	Timeout time.Duration `yaml:"timeout"`
}

// BackendConfig is one model server.
type BackendConfig struct {
	Name   string `yaml:"name"`
	Type   string `yaml:"type"` // "ollama" or "openai"
	URL    string `yaml:"url"`
	APIKey string `yaml:"api_key"`
}

// SimConfig tunes the built-in simulated model.
type SimConfig struct {
	Latency         time.Duration `yaml:"latency"`           // VEGA_SIM_LATENCY
	TokensPerSecond float64       `yaml:"tokens_per_second"` // VEGA_SIM_TOKENS_PER_SECOND, 0 = unlimited
}

// FetchConfig bounds the guarded fetcher.
type FetchConfig struct {
	Allow        []string      `yaml:"allow"`          // VEGA_FETCH_ALLOW: hosts and CIDRs exempt from the SSRF guard
	MaxBodyBytes int64         `yaml:"max_body_bytes"` // default 10 MiB
	Timeout      time.Duration `yaml:"timeout"`        // default 30s
	MaxRedirects int           `yaml:"max_redirects"`  // default 5
}

// NotifyConfig lists chat channels and sets the durable outbox that
// delivers to them (its database is VEGA_DATA_DIR/outbox.db).
type NotifyConfig struct {
	Channels []ChannelConfig `yaml:"channels"`
	// IdempotencyRetention is how long idempotency keys and delivered
	// notifications are kept; VEGA_IDEMPOTENCY_RETENTION, default 24h.
	IdempotencyRetention time.Duration `yaml:"idempotency_retention"`
	// MaxWait is the longest Notify waits for a delivery before answering
	// QUEUED (the call's deadline shortens it); VEGA_NOTIFY_MAX_WAIT, default 5s.
	MaxWait time.Duration `yaml:"max_wait"`
	// BatchSize is the most writes made durable by one fsync (group
	// commit); VEGA_OUTBOX_BATCH_SIZE, default 128. 1 = one fsync per write.
	BatchSize int `yaml:"batch_size"`
	// FlushInterval is how long a commit waits for more writes when its
	// batch is not full; VEGA_OUTBOX_FLUSH_INTERVAL, default 0 (commit at once;
	// writes arriving during a commit share the next one).
	FlushInterval time.Duration `yaml:"flush_interval"`
	// BackoffBase and BackoffMax bound the retry delay after a 5xx or a
	// network error (exponential, with jitter); VEGA_NOTIFY_BACKOFF_BASE,
	// default 1s, and VEGA_NOTIFY_BACKOFF_MAX, default 5m. A Retry-After
	// header takes precedence.
	BackoffBase time.Duration `yaml:"backoff_base"`
	BackoffMax  time.Duration `yaml:"backoff_max"`
	// SendTimeout bounds one delivery attempt; VEGA_NOTIFY_SEND_TIMEOUT, default 10s.
	SendTimeout time.Duration `yaml:"send_timeout"`
	// LeaseTTL (PostgreSQL outbox) is how long a replica's hold on a
	// channel lasts without renewal: another replica takes the channel of a
	// dead one within LeaseTTL + 1.2s. VEGA_OUTBOX_LEASE_TTL, default
	// max(15s, SendTimeout + 5s); it must exceed SendTimeout + 1s.
	LeaseTTL time.Duration `yaml:"lease_ttl"`
}

// ChannelConfig is one notification channel.
type ChannelConfig struct {
	Name string `yaml:"name"`
	Type string `yaml:"type"` // "slack" or "webhook"
	URL  string `yaml:"url"`
	// Rate and Burst pace deliveries (messages per second). Defaults:
	// slack 1/s with a burst of 3 (Slack's webhook limit), webhook 10/s
	// with a burst of 10. VEGA_NOTIFY_RATE / VEGA_NOTIFY_BURST set every
	// channel's.
	Rate  float64 `yaml:"rate"`
	Burst int     `yaml:"burst"`
}

// CacheConfig holds the seed's cache TTLs and the cache's bounds.
type CacheConfig struct {
	GenerateTTL time.Duration `yaml:"generate_ttl"` // COALESCE_CACHE_TTL (seconds), default 300s
	FetchTTL    time.Duration `yaml:"fetch_ttl"`    // INTEGRATION_CACHE_TTL (seconds), default 60s
	MaxBytes    int64         `yaml:"max_bytes"`    // VEGA_CACHE_MAX_BYTES, default 64 MiB
	// StaleFor is how long after expiry an answer may still be served while
	// one refresh runs (stale-while-revalidate); VEGA_CACHE_STALE_FOR, default 30s.
	StaleFor time.Duration `yaml:"stale_for"`
	// Nondeterministic makes CACHE_MODE_AUTO cache every Generate answer, as
	// the seed did; VEGA_CACHE_NONDETERMINISTIC=true. Default false.
	Nondeterministic bool `yaml:"nondeterministic"`
}

// PoolConfig bounds the shared outbound connection pool (seed names).
type PoolConfig struct {
	MaxConnectionsPerHost int           `yaml:"max_connections_per_host"` // MAX_CONNECTIONS_PER_HOST, default 10
	MaxTotalConnections   int           `yaml:"max_total_connections"`    // MAX_TOTAL_CONNECTIONS, default 100
	ConnectionTTL         time.Duration `yaml:"connection_ttl"`           // CONNECTION_TTL (seconds), default 300s
	IdleTimeout           time.Duration `yaml:"idle_timeout"`             // IDLE_TIMEOUT (seconds), default 60s
}

// LimitConfig is the overload control of every backend: an adaptive rate
// ceiling (requests per second, the seed's names), an adaptive concurrency
// limit (calls at the backend at once) and the queue in front of them.
type LimitConfig struct {
	Initial float64 `yaml:"initial"` // INITIAL_RATE_LIMIT, default 10
	Min     float64 `yaml:"min"`     // MIN_RATE_LIMIT, default 1
	Max     float64 `yaml:"max"`     // MAX_RATE_LIMIT, default 100
	// ConcurrencyInitial is where each backend's concurrency limit starts:
	// its declared parallelism (OLLAMA_NUM_PARALLEL, vLLM's max_num_seqs)
	// when known; VEGA_CONCURRENCY_INITIAL, default 4. ConcurrencyMin and
	// ConcurrencyMax bound it (VEGA_CONCURRENCY_MIN, VEGA_CONCURRENCY_MAX,
	// defaults 1 and 64; MIN = MAX fixes it).
	ConcurrencyInitial int `yaml:"concurrency_initial"`
	ConcurrencyMin     int `yaml:"concurrency_min"`
	ConcurrencyMax     int `yaml:"concurrency_max"`
	// QueueTarget is the queue delay above which a queue that does not
	// drain counts as overload; VEGA_QUEUE_TARGET, default 0 = automatic
	// (half the backend's unloaded latency, at least 5ms).
	QueueTarget time.Duration `yaml:"queue_target"`
	// QueueMaxWait is the longest a call waits for its turn, the bound for
	// calls without a deadline; VEGA_QUEUE_MAX_WAIT, default 30s.
	QueueMaxWait time.Duration `yaml:"queue_max_wait"`
}

func defaultConfig() Config {
	return Config{
		GRPCAddr:           ":50051",
		HTTPAddr:           ":8080",
		DataDir:            "./data",
		RedisPrefix:        "vega",
		RedisTimeout:       50 * time.Millisecond,
		LogLevel:           "info",
		ShutdownTimeout:    15 * time.Second,
		SlowRPCThreshold:   time.Second,
		BreakerOpenTimeout: 30 * time.Second,
		LLM:                LLMConfig{Timeout: 10 * time.Minute},
		Fetch:              FetchConfig{MaxBodyBytes: 10 << 20, Timeout: 30 * time.Second, MaxRedirects: 5},
		Notify: NotifyConfig{
			IdempotencyRetention: 24 * time.Hour, MaxWait: 5 * time.Second, BatchSize: 128,
			BackoffBase: time.Second, BackoffMax: 5 * time.Minute, SendTimeout: 10 * time.Second,
		},
		Cache: CacheConfig{GenerateTTL: 300 * time.Second, FetchTTL: 60 * time.Second, MaxBytes: 64 << 20, StaleFor: 30 * time.Second},
		Pool: PoolConfig{
			MaxConnectionsPerHost: 10, MaxTotalConnections: 100,
			ConnectionTTL: 300 * time.Second, IdleTimeout: 60 * time.Second,
		},
		Limits: LimitConfig{Initial: 10, Min: 1, Max: 100, ConcurrencyInitial: 4, ConcurrencyMin: 1, ConcurrencyMax: 64, QueueMaxWait: 30 * time.Second},
	}
}

// LoadConfig reads the YAML file at path (none when "") over the defaults,
// then applies the environment through getenv. Unknown YAML keys are errors.
func LoadConfig(path string, getenv func(string) string) (Config, error) {
	cfg := defaultConfig()
	if path != "" {
		raw, err := os.ReadFile(path)
		if err != nil {
			return cfg, fmt.Errorf("config file: %w", err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(raw))
		dec.KnownFields(true)
		if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
			return cfg, fmt.Errorf("config file %s: %w", path, err)
		}
	}
	if err := applyEnv(&cfg, getenv); err != nil {
		return cfg, err
	}
	return cfg, cfg.Validate()
}

// applyEnv overrides cfg with the environment variables of SPEC §5.
func applyEnv(cfg *Config, getenv func(string) string) error {
	str := func(key string, dst *string) {
		if v := getenv(key); v != "" {
			*dst = v
		}
	}
	list := func(key string, dst *[]string) {
		if v := getenv(key); v != "" {
			*dst = splitList(v)
		}
	}
	str("VEGA_GRPC_ADDR", &cfg.GRPCAddr)
	str("VEGA_HTTP_ADDR", &cfg.HTTPAddr)
	list("VEGA_HTTP_CORS_ORIGINS", &cfg.HTTPCORSOrigins)
	str("VEGA_ADMIN_API_KEY", &cfg.AdminAPIKey)
	list("VEGA_API_KEYS", &cfg.APIKeys)
	str("VEGA_DATA_DIR", &cfg.DataDir)
	str("REDIS_URL", &cfg.RedisURL)
	str("VEGA_REDIS_PREFIX", &cfg.RedisPrefix)
	str("VEGA_POSTGRES_URL", &cfg.PostgresURL)
	str("VEGA_LOG_LEVEL", &cfg.LogLevel)
	str("VEGA_TLS_CERT", &cfg.TLS.CertFile)
	str("VEGA_TLS_KEY", &cfg.TLS.KeyFile)
	str("VEGA_TLS_CLIENT_CA", &cfg.TLS.ClientCAFile)
	list("VEGA_FETCH_ALLOW", &cfg.Fetch.Allow)
	cfg.Tracing = getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""

	if v := getenv("VEGA_OLLAMA_URL"); v != "" {
		cfg.LLM.Backends = upsertBackend(cfg.LLM.Backends, BackendConfig{Name: "ollama", Type: "ollama", URL: v})
	}
	if v := getenv("VEGA_OPENAI_BASE_URL"); v != "" {
		cfg.LLM.Backends = upsertBackend(cfg.LLM.Backends, BackendConfig{Name: "openai", Type: "openai", URL: v, APIKey: getenv("VEGA_OPENAI_API_KEY")})
	}
	if v := getenv("SLACK_WEBHOOK_URL"); v != "" {
		cfg.Notify.Channels = upsertChannel(cfg.Notify.Channels, ChannelConfig{Name: "slack", Type: "slack", URL: v})
	}
	if v := getenv("VEGA_WEBHOOK_URL"); v != "" {
		cfg.Notify.Channels = upsertChannel(cfg.Notify.Channels, ChannelConfig{Name: "webhook", Type: "webhook", URL: v})
	}
	if cfg.LLM.DefaultBackend == "" {
		switch {
		case getenv("VEGA_OLLAMA_URL") != "":
			cfg.LLM.DefaultBackend = "ollama"
		case getenv("VEGA_OPENAI_BASE_URL") != "":
			cfg.LLM.DefaultBackend = "openai"
		case len(cfg.LLM.Backends) > 0:
			cfg.LLM.DefaultBackend = cfg.LLM.Backends[0].Name
		default:
			cfg.LLM.DefaultBackend = "sim"
		}
	}

	durations := []struct {
		key     string
		dst     *time.Duration
		seconds bool // the seed's names take plain seconds
	}{
		{"VEGA_SHUTDOWN_TIMEOUT", &cfg.ShutdownTimeout, false},
		{"VEGA_DRAIN_DELAY", &cfg.DrainDelay, false},
		{"VEGA_SLOW_RPC_THRESHOLD", &cfg.SlowRPCThreshold, false},
		{"VEGA_BREAKER_OPEN_TIMEOUT", &cfg.BreakerOpenTimeout, false},
		{"VEGA_REDIS_TIMEOUT", &cfg.RedisTimeout, false},
		{"VEGA_SIM_LATENCY", &cfg.LLM.Sim.Latency, false},
		{"VEGA_LLM_TIMEOUT", &cfg.LLM.Timeout, false},
		{"COALESCE_CACHE_TTL", &cfg.Cache.GenerateTTL, true},
		{"INTEGRATION_CACHE_TTL", &cfg.Cache.FetchTTL, true},
		{"CONNECTION_TTL", &cfg.Pool.ConnectionTTL, true},
		{"IDLE_TIMEOUT", &cfg.Pool.IdleTimeout, true},
		{"VEGA_CACHE_STALE_FOR", &cfg.Cache.StaleFor, false},
		{"VEGA_QUEUE_TARGET", &cfg.Limits.QueueTarget, false},
		{"VEGA_QUEUE_MAX_WAIT", &cfg.Limits.QueueMaxWait, false},
		{"VEGA_IDEMPOTENCY_RETENTION", &cfg.Notify.IdempotencyRetention, false},
		{"VEGA_NOTIFY_MAX_WAIT", &cfg.Notify.MaxWait, false},
		{"VEGA_OUTBOX_FLUSH_INTERVAL", &cfg.Notify.FlushInterval, false},
		{"VEGA_NOTIFY_BACKOFF_BASE", &cfg.Notify.BackoffBase, false},
		{"VEGA_NOTIFY_BACKOFF_MAX", &cfg.Notify.BackoffMax, false},
		{"VEGA_NOTIFY_SEND_TIMEOUT", &cfg.Notify.SendTimeout, false},
		{"VEGA_OUTBOX_LEASE_TTL", &cfg.Notify.LeaseTTL, false},
	}
	for _, d := range durations {
		v := getenv(d.key)
		if v == "" {
			continue
		}
		parsed, err := parseDuration(v, d.seconds)
		if err != nil {
			return fmt.Errorf("%s: %w", d.key, err)
		}
		*d.dst = parsed
	}
	if v := getenv("VEGA_CACHE_NONDETERMINISTIC"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("VEGA_CACHE_NONDETERMINISTIC: %q is not true or false", v)
		}
		cfg.Cache.Nondeterministic = b
	}
	switch v := getenv("VEGA_PERF_CHAIN"); v {
	case "", "on":
	case "off":
		cfg.NoPerfChain = true
	default:
		return fmt.Errorf("VEGA_PERF_CHAIN: %q is not on or off", v)
	}
	if v := getenv("VEGA_CACHE_MAX_BYTES"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return fmt.Errorf("VEGA_CACHE_MAX_BYTES: %q is not a whole number", v)
		}
		cfg.Cache.MaxBytes = n
	}
	ints := []struct {
		key string
		dst *int
	}{
		{"MAX_CONNECTIONS_PER_HOST", &cfg.Pool.MaxConnectionsPerHost},
		{"MAX_TOTAL_CONNECTIONS", &cfg.Pool.MaxTotalConnections},
		{"VEGA_OUTBOX_BATCH_SIZE", &cfg.Notify.BatchSize},
		{"VEGA_CONCURRENCY_INITIAL", &cfg.Limits.ConcurrencyInitial},
		{"VEGA_CONCURRENCY_MIN", &cfg.Limits.ConcurrencyMin},
		{"VEGA_CONCURRENCY_MAX", &cfg.Limits.ConcurrencyMax},
	}
	for _, n := range ints {
		if v := getenv(n.key); v != "" {
			i, err := strconv.Atoi(v)
			if err != nil {
				return fmt.Errorf("%s: %q is not a whole number", n.key, v)
			}
			*n.dst = i
		}
	}
	floats := []struct {
		key string
		dst *float64
	}{
		{"INITIAL_RATE_LIMIT", &cfg.Limits.Initial},
		{"MIN_RATE_LIMIT", &cfg.Limits.Min},
		{"MAX_RATE_LIMIT", &cfg.Limits.Max},
		{"VEGA_SIM_TOKENS_PER_SECOND", &cfg.LLM.Sim.TokensPerSecond},
	}
	for _, f := range floats {
		if v := getenv(f.key); v != "" {
			x, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return fmt.Errorf("%s: %q is not a number", f.key, v)
			}
			*f.dst = x
		}
	}
	if v := getenv("VEGA_NOTIFY_RATE"); v != "" {
		x, err := strconv.ParseFloat(v, 64)
		if err != nil || x <= 0 {
			return fmt.Errorf("VEGA_NOTIFY_RATE: %q is not a positive number of messages per second", v)
		}
		for i := range cfg.Notify.Channels {
			cfg.Notify.Channels[i].Rate = x
		}
	}
	if v := getenv("VEGA_NOTIFY_BURST"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return fmt.Errorf("VEGA_NOTIFY_BURST: %q is not a positive whole number", v)
		}
		for i := range cfg.Notify.Channels {
			cfg.Notify.Channels[i].Burst = n
		}
	}
	return nil
}

// parseDuration accepts Go durations ("1.5s", "2m") and, where seconds is
// set, plain numbers of seconds ("300").
func parseDuration(v string, seconds bool) (time.Duration, error) {
	if seconds {
		if f, err := strconv.ParseFloat(v, 64); err == nil {
			return time.Duration(f * float64(time.Second)), nil
		}
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		if seconds {
			return 0, fmt.Errorf("%q is not a number of seconds", v)
		}
		return 0, fmt.Errorf("%q is not a duration (e.g. 500ms, 10s)", v)
	}
	return d, nil
}

func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// upsertBackend adds b, or sets the type and URL (and the API key, when
// given) of the file's backend of that name, keeping the rest of it.
func upsertBackend(list []BackendConfig, b BackendConfig) []BackendConfig {
	for i := range list {
		if list[i].Name == b.Name {
			list[i].Type, list[i].URL = b.Type, b.URL
			if b.APIKey != "" {
				list[i].APIKey = b.APIKey
			}
			return list
		}
	}
	return append(list, b)
}

// upsertChannel adds c, or sets the type and URL of the file's channel of
// that name, keeping its pacing.
func upsertChannel(list []ChannelConfig, c ChannelConfig) []ChannelConfig {
	for i := range list {
		if list[i].Name == c.Name {
			list[i].Type, list[i].URL = c.Type, c.URL
			return list
		}
	}
	return append(list, c)
}

// Validate reports the first bad setting, naming its key. Messages never
// include secrets (webhook URLs, API keys).
func (c *Config) Validate() error {
	if err := checkAddr("VEGA_GRPC_ADDR", c.GRPCAddr, false); err != nil {
		return err
	}
	if err := checkAddr("VEGA_HTTP_ADDR", c.HTTPAddr, true); err != nil {
		return err
	}
	for _, o := range c.HTTPCORSOrigins {
		if err := httpface.CheckOrigin(o); err != nil {
			return fmt.Errorf("VEGA_HTTP_CORS_ORIGINS: %w", err)
		}
	}
	if c.DataDir == "" {
		return errors.New("VEGA_DATA_DIR: must not be empty")
	}
	switch strings.ToLower(c.LogLevel) {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("VEGA_LOG_LEVEL: %q is not one of debug, info, warn, error", c.LogLevel)
	}
	if c.ShutdownTimeout <= 0 {
		return errors.New("VEGA_SHUTDOWN_TIMEOUT: must be positive")
	}
	if c.DrainDelay < 0 {
		return errors.New("VEGA_DRAIN_DELAY: must not be negative")
	}
	if c.SlowRPCThreshold <= 0 {
		return errors.New("VEGA_SLOW_RPC_THRESHOLD: must be positive")
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		return errors.New("VEGA_TLS_CERT / VEGA_TLS_KEY: set both or neither")
	}
	if c.TLS.ClientCAFile != "" && c.TLS.CertFile == "" {
		return errors.New("VEGA_TLS_CLIENT_CA: mTLS needs VEGA_TLS_CERT and VEGA_TLS_KEY too")
	}
	if c.RedisURL != "" {
		if u, err := url.Parse(c.RedisURL); err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") {
			return errors.New("REDIS_URL: must look like redis://host:6379/0")
		}
		if err := fleet.CheckURL(c.RedisURL, c.RedisTimeout); err != nil {
			return err // names REDIS_URL, never the password
		}
	}
	if c.RedisPrefix == "" || strings.ContainsAny(c.RedisPrefix, "*?[]\\ \t\r\n") {
		return fmt.Errorf("VEGA_REDIS_PREFIX: %q must be non-empty, without spaces or any of *?[]\\", c.RedisPrefix)
	}
	if c.BreakerOpenTimeout <= 0 || c.BreakerOpenTimeout > time.Hour {
		return errors.New("VEGA_BREAKER_OPEN_TIMEOUT: must be positive and at most 1h")
	}
	if c.LLM.Timeout <= 0 {
		return errors.New("VEGA_LLM_TIMEOUT: must be positive (the longest a model server may take to answer one Generate)")
	}
	if c.RedisTimeout <= 0 || c.RedisTimeout > 10*time.Second {
		return errors.New("VEGA_REDIS_TIMEOUT: must be positive and at most 10s (every Redis operation waits for it at worst)")
	}
	if c.PostgresURL != "" {
		if u, err := url.Parse(c.PostgresURL); err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") || u.Host == "" {
			return errors.New("VEGA_POSTGRES_URL: must look like postgres://user:password@host:5432/database")
		}
	}
	names := map[string]bool{"sim": true}
	for i, b := range c.LLM.Backends {
		key := fmt.Sprintf("llm.backends[%d]", i)
		switch {
		case b.Name == "":
			return fmt.Errorf("%s.name: required", key)
		case names[b.Name]:
			return fmt.Errorf("%s.name: %q is used twice (or is the reserved name \"sim\")", key, b.Name)
		case b.Type != "ollama" && b.Type != "openai":
			return fmt.Errorf("%s.type: %q is not one of ollama, openai", key, b.Type)
		}
		if err := checkURL(backendURLKey(b), b.URL); err != nil {
			return err
		}
		names[b.Name] = true
	}
	if !names[c.LLM.DefaultBackend] {
		return fmt.Errorf("llm.default_backend: %q is not a configured backend", c.LLM.DefaultBackend)
	}
	for model, b := range c.LLM.Models {
		if !names[b] {
			return fmt.Errorf("llm.models[%s]: backend %q is not configured", model, b)
		}
	}
	if c.LLM.Sim.Latency < 0 || c.LLM.Sim.TokensPerSecond < 0 {
		return errors.New("VEGA_SIM_LATENCY / VEGA_SIM_TOKENS_PER_SECOND: must not be negative")
	}
	chans := map[string]bool{}
	for i, ch := range c.Notify.Channels {
		key := fmt.Sprintf("notify.channels[%d]", i)
		switch {
		case ch.Name == "":
			return fmt.Errorf("%s.name: required", key)
		case chans[ch.Name]:
			return fmt.Errorf("%s.name: %q is used twice", key, ch.Name)
		case ch.Type != "slack" && ch.Type != "webhook":
			return fmt.Errorf("%s.type: %q is not one of slack, webhook", key, ch.Type)
		}
		if err := checkURL(channelURLKey(ch), ch.URL); err != nil {
			return err
		}
		if ch.Rate < 0 || ch.Burst < 0 {
			return fmt.Errorf("%s.rate / burst: must not be negative", key)
		}
		chans[ch.Name] = true
	}
	n := c.Notify
	switch {
	case n.IdempotencyRetention <= 0:
		return errors.New("VEGA_IDEMPOTENCY_RETENTION: must be positive")
	case n.MaxWait < 0:
		return errors.New("VEGA_NOTIFY_MAX_WAIT: must not be negative")
	case n.BatchSize < 1 || n.BatchSize > 10000:
		return errors.New("VEGA_OUTBOX_BATCH_SIZE: must be between 1 and 10000")
	case n.FlushInterval < 0 || n.FlushInterval > time.Second:
		return errors.New("VEGA_OUTBOX_FLUSH_INTERVAL: must be between 0 and 1s (every accepted call waits for it)")
	case n.BackoffBase <= 0 || n.BackoffMax < n.BackoffBase:
		return errors.New("VEGA_NOTIFY_BACKOFF_BASE / VEGA_NOTIFY_BACKOFF_MAX: base must be positive and not above max")
	case n.SendTimeout <= 0:
		return errors.New("VEGA_NOTIFY_SEND_TIMEOUT: must be positive")
	case n.LeaseTTL < 0 || (n.LeaseTTL > 0 && n.LeaseTTL < n.SendTimeout+time.Second):
		return errors.New("VEGA_OUTBOX_LEASE_TTL: must exceed VEGA_NOTIFY_SEND_TIMEOUT by at least 1s (an attempt must end within its lease), or be unset")
	}
	if c.Fetch.MaxBodyBytes <= 0 || c.Fetch.Timeout <= 0 || c.Fetch.MaxRedirects < 0 {
		return errors.New("fetch: max_body_bytes and timeout must be positive, max_redirects not negative")
	}
	switch {
	case c.Cache.GenerateTTL <= 0:
		return errors.New("COALESCE_CACHE_TTL: must be positive")
	case c.Cache.FetchTTL <= 0:
		return errors.New("INTEGRATION_CACHE_TTL: must be positive")
	case c.Cache.MaxBytes <= 0:
		return errors.New("VEGA_CACHE_MAX_BYTES: must be positive")
	case c.Cache.StaleFor < 0:
		return errors.New("VEGA_CACHE_STALE_FOR: must not be negative")
	case c.Pool.MaxConnectionsPerHost <= 0:
		return errors.New("MAX_CONNECTIONS_PER_HOST: must be positive")
	case c.Pool.MaxTotalConnections < c.Pool.MaxConnectionsPerHost:
		return errors.New("MAX_TOTAL_CONNECTIONS: must be at least MAX_CONNECTIONS_PER_HOST")
	case c.Pool.ConnectionTTL <= 0:
		return errors.New("CONNECTION_TTL: must be positive")
	case c.Pool.IdleTimeout <= 0:
		return errors.New("IDLE_TIMEOUT: must be positive")
	case c.Limits.Min <= 0:
		return errors.New("MIN_RATE_LIMIT: must be positive")
	case c.Limits.Max < c.Limits.Min:
		return errors.New("MAX_RATE_LIMIT: must be at least MIN_RATE_LIMIT")
	case c.Limits.Initial < c.Limits.Min || c.Limits.Initial > c.Limits.Max:
		return errors.New("INITIAL_RATE_LIMIT: must be between MIN_RATE_LIMIT and MAX_RATE_LIMIT")
	case c.Limits.ConcurrencyMin < 1:
		return errors.New("VEGA_CONCURRENCY_MIN: must be at least 1")
	case c.Limits.ConcurrencyMax < c.Limits.ConcurrencyMin:
		return errors.New("VEGA_CONCURRENCY_MAX: must be at least VEGA_CONCURRENCY_MIN")
	case c.Limits.ConcurrencyInitial < c.Limits.ConcurrencyMin || c.Limits.ConcurrencyInitial > c.Limits.ConcurrencyMax:
		return errors.New("VEGA_CONCURRENCY_INITIAL: must be between VEGA_CONCURRENCY_MIN and VEGA_CONCURRENCY_MAX")
	case c.Limits.QueueTarget < 0:
		return errors.New("VEGA_QUEUE_TARGET: must not be negative (0: automatic)")
	case c.Limits.QueueMaxWait <= 0:
		return errors.New("VEGA_QUEUE_MAX_WAIT: must be positive")
	}
	return nil
}

func backendURLKey(b BackendConfig) string {
	switch {
	case b.Name == "ollama" && b.Type == "ollama":
		return "VEGA_OLLAMA_URL"
	case b.Name == "openai" && b.Type == "openai":
		return "VEGA_OPENAI_BASE_URL"
	}
	return "llm.backends[" + b.Name + "].url"
}

func channelURLKey(c ChannelConfig) string {
	switch {
	case c.Name == "slack" && c.Type == "slack":
		return "SLACK_WEBHOOK_URL"
	case c.Name == "webhook" && c.Type == "webhook":
		return "VEGA_WEBHOOK_URL"
	}
	return "notify.channels[" + c.Name + "].url"
}

// checkURL accepts absolute http(s) URLs. The message never repeats the
// value: webhook URLs carry secrets.
func checkURL(key, raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%s: must be an absolute http:// or https:// URL", key)
	}
	return nil
}

func checkAddr(key, addr string, optional bool) error {
	if optional && (addr == "" || addr == "off") {
		return nil
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("%s: %q is not host:port (e.g. :50051)", key, addr)
	}
	return nil
}
