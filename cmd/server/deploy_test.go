package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"text/template"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	vegav1 "github.com/vega-gateway/vega/gen/vega/v1"
)

// The deploy files, relative to this package.
const (
	alertRulesFile   = "../../deploy/prometheus/vega-alerts.yml"
	grafanaFile      = "../../deploy/grafana/vega-dashboard.json"
	runbookFile      = "../../deploy/RUNBOOK.md"
	promstatsDocFile = "../../service/promstats/doc.go"
)

// prometheusMade are series Prometheus makes itself for each scrape target;
// /metrics cannot export them.
var prometheusMade = map[string]bool{"up": true}

// scrapeLabels are added by Prometheus at scrape time.
var scrapeLabels = map[string]bool{"instance": true, "job": true}

// exported is what one scrape of /metrics holds: series name → label names.
type exported map[string]map[string]bool

func (e exported) add(name string, labels ...string) {
	if e[name] == nil {
		e[name] = map[string]bool{}
	}
	for _, l := range labels {
		e[name][l] = true
	}
}

func parseExposition(t *testing.T, r io.Reader) exported {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(r)
	require.NoError(t, err)
	out := exported{}
	for name, f := range families {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName())
			}
			switch f.GetType() {
			case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
				out.add(name+"_bucket", append(labels, "le")...)
				out.add(name+"_sum", labels...)
				out.add(name+"_count", labels...)
			case dto.MetricType_SUMMARY:
				out.add(name, append(labels, "quantile")...)
				out.add(name+"_sum", labels...)
				out.add(name+"_count", labels...)
			default:
				out.add(name, labels...)
			}
		}
	}
	return out
}

// checkQuery parses one PromQL expression and reports every series it
// names that /metrics does not export, and every label it matches on that
// the series does not carry.
func checkQuery(expr string, series exported) []string {
	ast, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	if err != nil {
		return []string{fmt.Sprintf("does not parse: %v", err)}
	}
	var problems []string
	parser.Inspect(ast, func(node parser.Node, _ []parser.Node) error {
		vs, ok := node.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		name := vs.Name
		for _, m := range vs.LabelMatchers {
			if m.Name == model.MetricNameLabel {
				name = m.Value
			}
		}
		if prometheusMade[name] {
			return nil
		}
		labels, ok := series[name]
		if !ok {
			problems = append(problems, fmt.Sprintf("series %s is not exported by /metrics", name))
			return nil
		}
		for _, m := range vs.LabelMatchers {
			if m.Name != model.MetricNameLabel && !labels[m.Name] && !scrapeLabels[m.Name] {
				problems = append(problems, fmt.Sprintf("series %s has no label %q", name, m.Name))
			}
		}
		return nil
	})
	return problems
}

// grafanaMacros are the variables Grafana puts into a query before it
// reaches Prometheus.
var grafanaMacros = strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h")

// scrapeAfterTraffic starts the real server, calls every service (so that
// per-backend, per-channel and per-host series exist) and scrapes /metrics.
func scrapeAfterTraffic(t *testing.T) exported {
	t.Helper()
	ollama := newFakeOllama(t)
	slack := newFakeSlack(t)
	web := newFakeWeb(t)
	g := startGateway(t, map[string]string{
		"VEGA_ADMIN_API_KEY": "adm", "VEGA_OLLAMA_URL": ollama.URL, "SLACK_WEBHOOK_URL": slack.URL, "VEGA_FETCH_ALLOW": "127.0.0.1",
		// Fleet mode, so that the vega_cluster_* series exist too.
		"REDIS_URL": "redis://" + fleetRedisAddr + "/0", "VEGA_REDIS_PREFIX": fleetRedisPrefix(t),
	})
	ctx := ctxTimeout(t, 20*time.Second)
	for _, model := range []string{"sim", "llama", "broken"} {
		_, _ = g.generate().Generate(ctx, &vegav1.GenerateRequest{Model: model, Prompt: "hi", Options: &vegav1.SamplingOptions{Temperature: zero()}})
	}
	_, err := g.generate().Generate(ctx, &vegav1.GenerateRequest{Model: "llama", Prompt: "hi", Options: &vegav1.SamplingOptions{Temperature: zero()}})
	require.NoError(t, err) // a cache hit
	stream, err := g.generate().GenerateStream(ctx, &vegav1.GenerateStreamRequest{Model: "sim", Prompt: "a b c"})
	require.NoError(t, err)
	for {
		if _, err := stream.Recv(); err != nil {
			break
		}
	}
	_, err = g.fetch().Fetch(ctx, &vegav1.FetchRequest{Url: web.URL + "/page"})
	require.NoError(t, err)
	_, err = g.notify().Notify(ctx, &vegav1.NotifyRequest{Channel: "slack", Text: "metrics"})
	require.NoError(t, err)
	r := postJSON(t, g, "/vega.v1.GenerateService/Generate", `{"model":"sim","prompt":"over http"}`, nil)
	require.Equal(t, http.StatusOK, r.status)

	resp, err := httpClient(t).Get(g.baseURL() + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	return parseExposition(t, resp.Body)
}

// TestDeployQueriesNameExportedSeries: every PromQL query in deploy/ (the
// alert rules and the Grafana dashboard) names series and labels that the
// real server's /metrics exports, and every vega_* series it names is in
// the table of service/promstats/doc.go.
func TestDeployQueriesNameExportedSeries(t *testing.T) {
	series := scrapeAfterTraffic(t)
	require.Contains(t, series, "vega_circuit_breaker_state", "traffic made a breaker")
	require.Contains(t, series, "grpc_server_handling_seconds_bucket")

	// The checker itself catches a typo and a wrong label.
	assert.Equal(t, []string{"series vega_typo_total is not exported by /metrics"}, checkQuery(`rate(vega_typo_total[5m])`, series))
	assert.Equal(t, []string{`series vega_circuit_breaker_state has no label "channel"`}, checkQuery(`vega_circuit_breaker_state{channel="x"}`, series))
	assert.NotEmpty(t, checkQuery(`sum(rate(x[5m])`, series))

	doc, err := os.ReadFile(promstatsDocFile)
	require.NoError(t, err)
	queries := map[string]string{} // where → expr
	for where, expr := range alertQueries(t) {
		queries[where] = expr
	}
	for where, expr := range grafanaQueries(t) {
		queries[where] = expr
	}
	require.Greater(t, len(queries), 20)
	names := regexp.MustCompile(`\bvega_[a-z0-9_]+`)
	for where, expr := range queries {
		assert.Empty(t, checkQuery(expr, series), "%s: %s", where, expr)
		for _, name := range names.FindAllString(expr, -1) {
			assert.Contains(t, string(doc), name, "%s: %s is not in service/promstats/doc.go", where, name)
		}
	}
}

// ruleFile is Prometheus' rule file format (prometheus.io, "Alerting
// rules" / "Recording rules"), decoded strictly: an unknown or misspelt
// key fails the test, as it fails Prometheus. (Prometheus' own loader,
// model/rulefmt, would bring Kubernetes' client into go.mod.)
type ruleFile struct {
	Groups []struct {
		Name     string `yaml:"name"`
		Interval string `yaml:"interval"`
		Rules    []struct {
			Alert         string            `yaml:"alert"`
			Record        string            `yaml:"record"`
			Expr          string            `yaml:"expr"`
			For           string            `yaml:"for"`
			KeepFiringFor string            `yaml:"keep_firing_for"`
			Labels        map[string]string `yaml:"labels"`
			Annotations   map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// alertQueries reads the rule file and checks the conventions of its
// alerts; it returns their expressions.
func alertQueries(t *testing.T) map[string]string {
	t.Helper()
	raw, err := os.ReadFile(alertRulesFile)
	require.NoError(t, err)
	dec := yaml.NewDecoder(strings.NewReader(string(raw)))
	dec.KnownFields(true)
	var file ruleFile
	require.NoError(t, dec.Decode(&file))
	runbook, err := os.ReadFile(runbookFile)
	require.NoError(t, err)
	out := map[string]string{}
	var alerts []string
	for _, g := range file.Groups {
		require.NotEmpty(t, g.Name)
		for _, r := range g.Rules {
			require.NotEmpty(t, r.Alert, "only alerts in %s", alertRulesFile)
			require.Empty(t, r.Record, r.Alert)
			assert.NotContains(t, alerts, r.Alert, "alert names are unique")
			alerts = append(alerts, r.Alert)
			out["alert "+r.Alert] = r.Expr
			assert.Regexp(t, `^[A-Za-z_][A-Za-z0-9_]*$`, r.Alert)
			forDur, err := model.ParseDuration(r.For)
			require.NoError(t, err, "%s: for", r.Alert)
			assert.GreaterOrEqual(t, time.Duration(forDur), time.Minute, "%s: for", r.Alert)
			for key, text := range r.Annotations { // Go templates, expanded as Prometheus does
				tmpl, err := template.New(r.Alert).Option("missingkey=error").
					Funcs(template.FuncMap{"humanizePercentage": fmt.Sprint, "humanizeDuration": fmt.Sprint}).
					Parse("{{$labels := .Labels}}{{$value := .Value}}" + text)
				if assert.NoError(t, err, "%s %s", r.Alert, key) {
					data := map[string]any{"Labels": map[string]string{"instance": "i", "backend": "b", "channel": "c"}, "Value": 0.5}
					assert.NoError(t, tmpl.Execute(io.Discard, data), "%s %s", r.Alert, key)
				}
			}
			assert.Contains(t, []string{"page", "warn"}, r.Labels["severity"], "%s: severity", r.Alert)
			for _, a := range []string{"summary", "description", "runbook_url"} {
				assert.NotEmpty(t, r.Annotations[a], "%s: %s", r.Alert, a)
			}
			_, anchor, _ := strings.Cut(r.Annotations["runbook_url"], "#")
			assert.Contains(t, strings.ToLower(string(runbook)), "\n## "+anchor+"\n", "%s: runbook section", r.Alert)
			ast, err := parser.NewParser(parser.Options{}).ParseExpr(r.Expr)
			require.NoError(t, err)
			parser.Inspect(ast, func(node parser.Node, _ []parser.Node) error {
				if ms, ok := node.(*parser.MatrixSelector); ok {
					assert.GreaterOrEqual(t, ms.Range, time.Minute, "%s: a rate window under 4 scrapes of 15 s", r.Alert)
				}
				return nil
			})
		}
	}
	for _, want := range []string{"VegaBreakerOpen", "VegaLimiterShedding", "VegaOutboxStuck", "VegaMemoryLeakSuspected"} {
		assert.Contains(t, alerts, want)
	}
	return out
}

type grafanaPanel struct {
	Title      string            `json:"title"`
	Type       string            `json:"type"`
	Datasource map[string]string `json:"datasource"`
	Targets    []struct {
		Expr       string            `json:"expr"`
		RefID      string            `json:"refId"`
		Datasource map[string]string `json:"datasource"`
	} `json:"targets"`
	FieldConfig struct {
		Defaults struct {
			Unit string `json:"unit"`
		} `json:"defaults"`
	} `json:"fieldConfig"`
	Panels []grafanaPanel `json:"panels"`
}

// grafanaQueries checks the dashboard's shape (a pinned uid, a datasource
// variable every query uses, $__rate_interval in every rate, units) and
// returns its expressions with Grafana's macros replaced.
func grafanaQueries(t *testing.T) map[string]string {
	t.Helper()
	raw, err := os.ReadFile(grafanaFile)
	require.NoError(t, err)
	var dash struct {
		UID           string `json:"uid"`
		Title         string `json:"title"`
		SchemaVersion int    `json:"schemaVersion"`
		Templating    struct {
			List []struct {
				Type, Name, Query string
			} `json:"list"`
		} `json:"templating"`
		Panels []grafanaPanel `json:"panels"`
	}
	require.NoError(t, json.Unmarshal(raw, &dash))
	assert.Equal(t, "vega-gateway", dash.UID)
	assert.NotEmpty(t, dash.Title)
	assert.GreaterOrEqual(t, dash.SchemaVersion, 36)
	require.Len(t, dash.Templating.List, 1)
	assert.Equal(t, "datasource", dash.Templating.List[0].Type)
	assert.Equal(t, "prometheus", dash.Templating.List[0].Query)

	out := map[string]string{}
	var walk func([]grafanaPanel)
	walk = func(panels []grafanaPanel) {
		for _, p := range panels {
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			assert.Equal(t, "${datasource}", p.Datasource["uid"], "panel %q", p.Title)
			assert.NotEmpty(t, p.FieldConfig.Defaults.Unit, "panel %q: unit", p.Title)
			require.NotEmpty(t, p.Targets, "panel %q", p.Title)
			for _, tg := range p.Targets {
				assert.Equal(t, "${datasource}", tg.Datasource["uid"], "panel %q %s", p.Title, tg.RefID)
				if strings.Contains(tg.Expr, "rate(") {
					assert.NotRegexp(t, `\[[0-9]+[smhd]\]`, tg.Expr, "panel %q: rate windows are $__rate_interval", p.Title)
				}
				out[fmt.Sprintf("panel %q %s", p.Title, tg.RefID)] = grafanaMacros.Replace(tg.Expr)
			}
		}
	}
	walk(dash.Panels)
	return out
}
