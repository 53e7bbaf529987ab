// Package service implements the vega.v1 gRPC services on top of the
// outbound clients in integrations/.
//
// It is the edge: requests are validated here (bad input is INVALID_ARGUMENT
// and changes nothing), and every error leaving a handler goes through one
// table (errors.go) that maps the domain errors of integrations/ and the
// context errors to gRPC codes. The interfaces it needs from integrations/
// are declared here, next to their use, and are one or two methods each.
package service
