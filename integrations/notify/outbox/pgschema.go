package outbox

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

//go:embed migrations/*.sql
var migrations embed.FS

// migrationLock is the key of the transaction-level advisory lock held
// while the schema is checked and migrated ("vega-outbox" in ASCII, cut to
// 8 bytes: any fixed number works, as long as nothing else uses it).
const migrationLock int64 = 0x766567612d6f7574

// migration is one embedded file, NNNN_name.sql.
type migration struct {
	version int
	name    string
	sql     string
}

func loadMigrations() ([]migration, error) {
	entries, err := fs.ReadDir(migrations, "migrations")
	if err != nil {
		return nil, err
	}
	var out []migration
	for _, e := range entries {
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("outbox: migration %s: the name must start with a version number and _", e.Name())
		}
		b, err := migrations.ReadFile("migrations/" + e.Name())
		if err != nil {
			return nil, err
		}
		out = append(out, migration{version: v, name: e.Name(), sql: string(b)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	for i := range out {
		if out[i].version != i+1 {
			return nil, fmt.Errorf("outbox: migration %s: versions must run 1, 2, 3 … without gaps", out[i].name)
		}
	}
	return out, nil
}

// migrate brings the schema to the newest embedded version, in one
// transaction that first takes an advisory lock: replicas starting at once
// queue on the lock, and each finds the work done by the first. The
// version is read under the lock (reading it before re-ran migrations in
// other tools), and a failed migration rolls back whole: there is no
// "dirty" state to repair by hand. Migrations are forward-only.
func migrate(ctx context.Context, pool *pgxpool.Pool) (applied []int, err error) {
	ms, err := loadMigrations()
	if err != nil {
		return nil, err
	}
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", migrationLock); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS vega_outbox_schema (
			version    integer     PRIMARY KEY,
			name       text        NOT NULL,
			applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
			return err
		}
		var current int
		if err := tx.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM vega_outbox_schema").Scan(&current); err != nil {
			return err
		}
		if current > len(ms) {
			return fmt.Errorf("outbox: the database's schema is version %d, newer than this gateway's %d: run the newer gateway, or a database of its own", current, len(ms))
		}
		for _, m := range ms[current:] {
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return fmt.Errorf("outbox: migration %s: %w", m.name, err)
			}
			if _, err := tx.Exec(ctx, "INSERT INTO vega_outbox_schema (version, name) VALUES ($1, $2)", m.version, m.name); err != nil {
				return err
			}
			applied = append(applied, m.version)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return applied, nil
}
