package httpface

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// checkUnary reads the body of a Connect unary call (bounded by max) and
// decodes it as the method's request before the call goes on. grpc-go
// reports a request it cannot decode as INTERNAL (500), and the
// transcoder reports an oversized one as UNAVAILABLE (503) once the
// server is reading it; a caller who sent bad JSON or too much of it
// deserves invalid_argument (400) or resource_exhausted (429, with no
// Retry-After: it will never fit), and a message that says which.
//
// Compressed bodies and streams pass unchecked (the server still bounds
// and decodes them).
func checkUnary(next http.Handler, maxBytes uint32) http.Handler {
	opts := protojson.UnmarshalOptions{DiscardUnknown: true}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ct := unaryContentType(r)
		if ct == "" {
			next.ServeHTTP(w, r)
			return
		}
		input := requestType(r.URL.Path)
		if input == nil { // not a method of the server: the transcoder answers
			next.ServeHTTP(w, r)
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, int64(maxBytes)+1))
		if err != nil {
			writeConnectError(w, http.StatusBadRequest, "invalid_argument", "reading the request body: "+err.Error())
			return
		}
		if len(body) > int(maxBytes) {
			writeConnectError(w, http.StatusTooManyRequests, "resource_exhausted",
				fmt.Sprintf("request message larger than %d bytes", maxBytes))
			return
		}
		msg := input.New().Interface()
		if ct == "application/json" {
			err = opts.Unmarshal(body, msg)
		} else {
			err = proto.Unmarshal(body, msg)
		}
		if err != nil {
			writeConnectError(w, http.StatusBadRequest, "invalid_argument",
				fmt.Sprintf("the body is not a valid %s: %v", input.Descriptor().FullName(), err))
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
		next.ServeHTTP(w, r)
	})
}

// unaryContentType is "application/json" or "application/proto" for an
// uncompressed Connect unary POST, else "".
func unaryContentType(r *http.Request) string {
	if r.Method != http.MethodPost || r.Header.Get("Connect-Protocol-Version") != "1" {
		return ""
	}
	if ce := r.Header.Get("Content-Encoding"); ce != "" && ce != "identity" {
		return ""
	}
	ct, _, _ := strings.Cut(r.Header.Get("Content-Type"), ";")
	switch ct = strings.ToLower(strings.TrimSpace(ct)); ct {
	case "application/json", "application/proto":
		return ct
	}
	return ""
}

// requestType finds the request message of "/pkg.Service/Method" among
// the linked-in descriptors; nil for unknown methods and for streams
// whose requests are not unary bodies.
func requestType(path string) protoreflect.MessageType {
	md := methodDescriptor(path)
	if md == nil || md.IsStreamingClient() || md.IsStreamingServer() {
		return nil
	}
	mt, err := protoregistry.GlobalTypes.FindMessageByName(md.Input().FullName())
	if err != nil {
		return nil
	}
	return mt
}

// methodDescriptor finds "/pkg.Service/Method" among the linked-in
// descriptors; nil when there is no such method.
func methodDescriptor(path string) protoreflect.MethodDescriptor {
	svc, method, ok := strings.Cut(strings.TrimPrefix(path, "/"), "/")
	if !ok {
		return nil
	}
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(svc))
	if err != nil {
		return nil
	}
	sd, ok := d.(protoreflect.ServiceDescriptor)
	if !ok {
		return nil
	}
	return sd.Methods().ByName(protoreflect.Name(method))
}

// writeConnectError writes a Connect unary error (connectrpc.com,
// "Protocol Reference": a JSON body with code and message).
func writeConnectError(w http.ResponseWriter, status int, code, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"code": code, "message": message})
}
