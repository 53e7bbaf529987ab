// Package pgtest gives each test a PostgreSQL database of its own, on the
// server that the test environment runs (127.0.0.1:5432, user postgres,
// trust auth; VEGA_TEST_POSTGRES_URL names another). .ci/run starts it.
// Tests that need it fail, never skip, when it cannot be reached.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// DefaultURL is the test environment's server.
const DefaultURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

func adminURL() string {
	if v := os.Getenv("VEGA_TEST_POSTGRES_URL"); v != "" {
		return v
	}
	return DefaultURL
}

// NewDatabase creates an empty database vega_test_<random>, drops it when
// the test ends, and returns its URL.
func NewDatabase(tb testing.TB) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin := adminURL()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		tb.Fatalf("PostgreSQL for tests is not reachable at %s (start it: .ci/run does): %v", admin, err)
	}
	defer conn.Close(context.Background())
	var r [6]byte
	_, _ = rand.Read(r[:])
	name := "vega_test_" + hex.EncodeToString(r[:])
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		tb.Fatalf("CREATE DATABASE %s: %v", name, err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, admin)
		if err != nil {
			tb.Errorf("dropping %s: %v", name, err)
			return
		}
		defer c.Close(context.Background())
		if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			tb.Errorf("DROP DATABASE %s: %v", name, err)
		}
	})
	u, err := url.Parse(admin)
	if err != nil {
		tb.Fatal(err)
	}
	u.Path = "/" + name
	return u.String()
}
