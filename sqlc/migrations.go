// Package sqlc holds Palyra's database schema: the goose migrations applied at start
// (and by `palyrad migrate`) and the queries that sqlc turns into gen/dbsqlc.
package sqlc

import "embed"

// Migrations holds migrations/*.sql, numbered and applied in order by goose.
//
//go:embed migrations/*.sql
var Migrations embed.FS
