package bench

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/oklog/ulid/v2"
)

// floorSchema is the table of PERF-BASELINES.md §4 (relay + Postgres).
const floorSchema = `create table dispatch (id uuid primary key, node_id text not null, method text not null,
	payload bytea, state text not null, result bytea, created_at timestamptz not null default now(),
	completed_at timestamptz);
create index dispatch_node_created on dispatch (node_id, created_at)`

// BenchmarkPostgresPair is the persistence floor of PERF-BASELINES.md, measured on
// this machine and this PostgreSQL at the same time as the dispatches: the INSERT on
// arrival and the UPDATE on reply, two autocommit statements through a pgx pool of 16
// connections with pgx's default cached prepared statements, 128-byte payloads,
// time-ordered 16-byte keys. No RPC at all: what palyrad's dispatch costs beyond it is
// the RPC stack and palyrad's own statements.
func BenchmarkPostgresPair(b *testing.B) {
	pg := openPostgres(b)
	cfg, err := pgxpool.ParseConfig(pg.newDatabase(b))
	if err != nil {
		b.Fatal(err)
	}
	cfg.MaxConns, cfg.MinConns = 16, 16
	ctx := context.Background()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pool.Close)
	if _, err := pool.Exec(ctx, floorSchema); err != nil {
		b.Fatal(err)
	}
	payload := []byte(strings.Repeat("x", 128))
	m := meter{pg: pg}
	for _, c := range []int{1, 16} {
		b.Run(fmt.Sprintf("c=%d", c), func(b *testing.B) {
			pg.checkpoint(b)
			closedLoop(b, c, m, "pairs/s", func(ctx context.Context) error {
				id := ulid.Make()
				if _, err := pool.Exec(ctx, `insert into dispatch (id, node_id, method, payload, state) values ($1, $2, $3, $4, 'sent')`,
					[16]byte(id), "node-1", "perf.v1.Echo", payload); err != nil {
					return err
				}
				_, err := pool.Exec(ctx, `update dispatch set state = 'done', result = $2, completed_at = now() where id = $1`, [16]byte(id), payload)
				return err
			})
		})
	}
}
