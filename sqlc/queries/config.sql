-- name: LockConfig :exec
-- Serialises configuration changes across replicas for the rest of the transaction, so
-- that the revision read is the newest until the commit.
select pg_advisory_xact_lock(hashtextextended('palyra.config', 0));

-- name: ConfigHead :one
-- The newest revision, 0 when there is none.
select coalesce(max(revision), 0)::bigint as revision from config_revisions;

-- name: ListConfigValues :many
select * from config_values order by key;

-- name: InsertConfigRevision :exec
insert into config_revisions (revision, created_at, actor, reason, rollback_of)
values (sqlc.arg('revision'), coalesce(sqlc.narg('now')::timestamptz, clock_timestamp()), sqlc.arg('actor'),
        sqlc.arg('reason'), sqlc.narg('rollback_of'));

-- name: InsertConfigChange :exec
insert into config_changes (revision, key, op, old_value, new_value)
values (sqlc.arg('revision'), sqlc.arg('key'), sqlc.arg('op'), sqlc.narg('old_value'), sqlc.narg('new_value'));

-- name: UpsertConfigValue :exec
insert into config_values (key, value, revision)
values (sqlc.arg('key'), sqlc.arg('value'), sqlc.arg('revision'))
on conflict (key) do update set value = excluded.value, revision = excluded.revision;

-- name: DeleteConfigValue :exec
delete from config_values where key = sqlc.arg('key');

-- name: ListConfigRevisions :many
-- Revisions newest first, before the revision `before` (0: from the newest).
select r.*, (select count(*) from config_changes c where c.revision = r.revision)::int as change_count
from config_revisions r
where sqlc.arg('before')::bigint = 0 or r.revision < sqlc.arg('before')::bigint
order by r.revision desc
limit sqlc.arg('page_limit');

-- name: GetConfigRevision :one
select * from config_revisions where revision = sqlc.arg('revision');

-- name: ListConfigChanges :many
-- The changes of the revisions from..to, in order: one revision's, or the history to
-- replay up to a revision.
select * from config_changes
where revision between sqlc.arg('from_revision')::bigint and sqlc.arg('to_revision')::bigint
order by revision, key;
