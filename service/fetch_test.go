package service

import (
	"net/http"
	"testing"

	"google.golang.org/protobuf/proto"

	vegav1 "github.com/vega-gateway/vega/gen/vega/v1"
)

// TestFlattenHeaderKeepsTheAnswerMarshalable: a web page's header value in
// Latin-1 (legal obs-text in HTTP, invalid UTF-8 in a proto string) made the
// whole Fetch answer fail to marshal with INTERNAL (found by the fault
// matrix, row I8). Invalid bytes now become U+FFFD; valid values, repeated
// values and the Set-Cookie rule are unchanged.
func TestFlattenHeaderKeepsTheAnswerMarshalable(t *testing.T) {
	h := http.Header{
		"X-Latin":      {"caf\xe9"},
		"X-Plain":      {"yes"},
		"X-Utf8":       {"café ☕"},
		"X-Repeated":   {"a", "b\xff"},
		"Set-Cookie":   {"s=1"},
		"Content-Type": {"text/html; charset=iso-8859-1"},
	}
	got := flattenHeader(h)
	want := map[string]string{
		"X-Latin":      "caf\uFFFD",
		"X-Plain":      "yes",
		"X-Utf8":       "café ☕",
		"X-Repeated":   "a, b\uFFFD",
		"Content-Type": "text/html; charset=iso-8859-1",
	}
	if len(got) != len(want) {
		t.Fatalf("flattenHeader = %q, want %q", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("header %s = %q, want %q", k, got[k], v)
		}
	}
	if _, err := proto.Marshal(&vegav1.FetchResponse{Headers: got, Body: []byte{0xff, 0xfe}}); err != nil {
		t.Fatalf("the answer does not marshal: %v", err)
	}
}
