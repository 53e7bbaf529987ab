package service

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/vega-gateway/vega/integrations/llm"
)

// LLM is what GenerateService needs from a model backend.
type LLM interface {
	Generate(ctx context.Context, req *llm.Request) (*llm.Response, error)
	Stream(ctx context.Context, req *llm.Request, fn llm.ChunkFunc) error
}

// SimBackend is the name of the built-in simulated backend. The model "sim"
// and every model "sim:<variant>" always go to it.
const SimBackend = "sim"

// Router maps a model name to the backend that serves it: an explicit
// model→backend entry first, then the sim rule, then the default backend.
// It is built once at start-up and read-only afterwards.
type Router struct {
	backends map[string]LLM
	models   map[string]string
	def      string
}

// NewRouter returns a router whose default backend is def.
func NewRouter(def string) *Router {
	return &Router{backends: map[string]LLM{}, models: map[string]string{}, def: def}
}

// Add registers a backend under name.
func (r *Router) Add(name string, b LLM) { r.backends[name] = b }

// Map sends model to the backend named backend.
func (r *Router) Map(model, backend string) { r.models[model] = backend }

// Check reports a default or mapping that names no backend.
func (r *Router) Check() error {
	if _, ok := r.backends[r.def]; !ok {
		return fmt.Errorf("default LLM backend %q is not configured (have: %s)", r.def, strings.Join(r.Names(), ", "))
	}
	for model, b := range r.models {
		if _, ok := r.backends[b]; !ok {
			return fmt.Errorf("model %q maps to unknown backend %q", model, b)
		}
	}
	return nil
}

// Names lists the configured backends, sorted.
func (r *Router) Names() []string {
	names := make([]string, 0, len(r.backends))
	for n := range r.backends {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Default is the name of the default backend.
func (r *Router) Default() string { return r.def }

// BackendFor names the backend that serves model. It is the "model →
// backend" key of the per-method policy.
func (r *Router) BackendFor(model string) string {
	if b, ok := r.models[model]; ok {
		return b
	}
	if model == SimBackend || strings.HasPrefix(model, SimBackend+":") {
		if _, ok := r.backends[SimBackend]; ok {
			return SimBackend
		}
	}
	return r.def
}

// route returns the backend for model.
func (r *Router) route(model string) (string, LLM) {
	name := r.BackendFor(model)
	return name, r.backends[name]
}
