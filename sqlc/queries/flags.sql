-- name: LockFlags :exec
-- Serialises flag changes across replicas for the rest of the transaction, so that
-- dependency checks see a state no one else is changing.
select pg_advisory_xact_lock(hashtextextended('palyra.feature_flags', 0));

-- name: ListFlagStates :many
select * from feature_flags order by key;

-- name: UpsertFlag :one
insert into feature_flags (key, enabled, updated_at, updated_by)
values (sqlc.arg('key'), sqlc.arg('enabled'), coalesce(sqlc.narg('now')::timestamptz, clock_timestamp()), sqlc.arg('updated_by'))
on conflict (key) do update
set enabled = excluded.enabled, updated_at = excluded.updated_at, updated_by = excluded.updated_by
returning *;
