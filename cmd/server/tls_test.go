package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	vegav1 "github.com/vega-gateway/vega/gen/vega/v1"
)

// testPKI is a throw-away CA with a server and a client certificate.
type testPKI struct {
	dir                           string
	caPool                        *x509.CertPool
	serverCert, serverKey, caFile string
	clientCert                    tls.Certificate
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	p := &testPKI{dir: t.TempDir(), caPool: x509.NewCertPool()}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "vega test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	require.NoError(t, err)
	ca, err := x509.ParseCertificate(caDER)
	require.NoError(t, err)
	p.caPool.AddCert(ca)
	p.caFile = p.write(t, "ca.pem", "CERTIFICATE", caDER)

	issue := func(name string, serial int64, usage x509.ExtKeyUsage) (certDER []byte, key *ecdsa.PrivateKey) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		require.NoError(t, err)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			ExtKeyUsage: []x509.ExtKeyUsage{usage}, KeyUsage: x509.KeyUsageDigitalSignature,
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		require.NoError(t, err)
		return der, key
	}
	srvDER, srvKey := issue("server", 2, x509.ExtKeyUsageServerAuth)
	p.serverCert = p.write(t, "server.pem", "CERTIFICATE", srvDER)
	keyDER, err := x509.MarshalECPrivateKey(srvKey)
	require.NoError(t, err)
	p.serverKey = p.write(t, "server-key.pem", "EC PRIVATE KEY", keyDER)

	cliDER, cliKey := issue("client", 3, x509.ExtKeyUsageClientAuth)
	p.clientCert = tls.Certificate{Certificate: [][]byte{cliDER}, PrivateKey: cliKey}
	return p
}

func (p *testPKI) write(t *testing.T, name, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(p.dir, name)
	require.NoError(t, os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600))
	return path
}

func dialTLS(t *testing.T, addr string, conf *tls.Config) vegav1.GenerateServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(conf)))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return vegav1.NewGenerateServiceClient(conn)
}

func TestTLSAndMutualTLS(t *testing.T) {
	pki := newTestPKI(t)
	req := &vegav1.GenerateRequest{Model: "sim", Prompt: "over TLS"}

	g := startGateway(t, map[string]string{"VEGA_TLS_CERT": pki.serverCert, "VEGA_TLS_KEY": pki.serverKey})
	_, err := dialTLS(t, g.srv.GRPCAddr(), &tls.Config{RootCAs: pki.caPool}).Generate(ctxTimeout(t, 10*time.Second), req)
	require.NoError(t, err)
	_, err = g.generate().Generate(ctxTimeout(t, 5*time.Second), req) // plaintext
	require.Error(t, err, "a plaintext client is refused")

	m := startGateway(t, map[string]string{
		"VEGA_TLS_CERT": pki.serverCert, "VEGA_TLS_KEY": pki.serverKey, "VEGA_TLS_CLIENT_CA": pki.caFile,
	})
	_, err = dialTLS(t, m.srv.GRPCAddr(), &tls.Config{RootCAs: pki.caPool}).Generate(ctxTimeout(t, 5*time.Second), req)
	require.Error(t, err, "mTLS refuses a client without a certificate")
	_, err = dialTLS(t, m.srv.GRPCAddr(), &tls.Config{RootCAs: pki.caPool, Certificates: []tls.Certificate{pki.clientCert}}).
		Generate(ctxTimeout(t, 10*time.Second), req)
	require.NoError(t, err)
}
