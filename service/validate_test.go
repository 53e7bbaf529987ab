package service

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	vegav1 "github.com/vega-gateway/vega/gen/vega/v1"
)

// FuzzGenerateValidation: any request either converts to an llm.Request
// that keeps the rules (model set, exactly one of prompt/messages, options in
// range) or is refused with INVALID_ARGUMENT. It never panics.
func FuzzGenerateValidation(f *testing.F) {
	seed := func(r *vegav1.GenerateRequest) {
		b, err := proto.Marshal(r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	temp, topP, seedV := 0.7, 0.9, int64(42)
	seed(&vegav1.GenerateRequest{Model: "sim", Prompt: "hi"})
	seed(&vegav1.GenerateRequest{Model: "llama3", Messages: []*vegav1.ChatMessage{{Role: "user", Content: "x"}}})
	seed(&vegav1.GenerateRequest{Model: "m", Prompt: "p", Options: &vegav1.SamplingOptions{
		Temperature: &temp, TopP: &topP, Seed: &seedV, MaxTokens: 10, Stop: []string{"\n"},
	}, CacheControl: &vegav1.CacheControl{Mode: vegav1.CacheMode_CACHE_MODE_FORCE}})
	seed(&vegav1.GenerateRequest{})
	f.Fuzz(func(t *testing.T, raw []byte) {
		in := &vegav1.GenerateRequest{}
		if proto.Unmarshal(raw, in) != nil {
			return
		}
		req, err := llmRequest(in)
		if err != nil {
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("refusal with %v, want InvalidArgument: %v", status.Code(err), err)
			}
			return
		}
		if req.Model == "" || (req.Prompt == "") == (len(req.Messages) == 0) {
			t.Fatalf("accepted a request breaking the rules: %+v", req)
		}
		if o := req.Options; (o.Temperature != nil && (*o.Temperature < 0 || *o.Temperature > 2)) ||
			(o.TopP != nil && (*o.TopP < 0 || *o.TopP > 1)) || o.MaxTokens < 0 || len(o.Stop) > maxStops {
			t.Fatalf("accepted options out of range: %+v", o)
		}
	})
}

// FuzzFetchValidation: accepted fetch requests have a URL, GET or HEAD, only
// allowed headers and non-negative bounds.
func FuzzFetchValidation(f *testing.F) {
	f.Add("https://example.com/", "GET", "Accept", int64(0))
	f.Add("http://127.0.0.1/", "head", "Authorization", int64(10))
	f.Add("", "POST", "", int64(-1))
	f.Add("::not a url", "", "User-Agent", int64(5))
	f.Fuzz(func(t *testing.T, url, method, header string, maxBytes int64) {
		in := &vegav1.FetchRequest{Url: url, Method: method, MaxBytes: maxBytes}
		if header != "" {
			in.Headers = map[string]string{header: "v"}
		}
		req, _, err := fetchRequest(in)
		if err != nil {
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("refusal with %v: %v", status.Code(err), err)
			}
			return
		}
		if req.URL == "" || (req.Method != "GET" && req.Method != "HEAD") || req.MaxBytes < 0 {
			t.Fatalf("accepted %+v", req)
		}
		for name := range req.Header {
			if !isAllowedHeader(name) {
				t.Fatalf("accepted header %q", name)
			}
		}
	})
}

func isAllowedHeader(name string) bool {
	switch name {
	case "Accept", "Accept-Language", "User-Agent", "If-None-Match", "If-Modified-Since", "Range":
		return true
	}
	return false
}
