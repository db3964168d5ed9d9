-- name: UpsertReplica :exec
-- Reports a replica: inserted at its start, its last_seen_at moved on every report. It
-- waits for a re-wrap's batch to commit (LockReplicasForRewrap).
insert into replicas (id, hostname, version, kek_ids, started_at, last_seen_at)
select sqlc.arg('id'), sqlc.arg('hostname'), sqlc.arg('version'), sqlc.arg('kek_ids')::text[],
       sqlc.arg('now'), sqlc.arg('now')
from (select pg_advisory_xact_lock_shared(hashtextextended('palyra.replicas', 0))) as report_lock
on conflict (id) do update
set hostname = excluded.hostname, version = excluded.version, kek_ids = excluded.kek_ids,
    last_seen_at = excluded.last_seen_at, stopped_at = null;

-- name: StopReplica :exec
update replicas set stopped_at = sqlc.arg('now')::timestamptz where id = sqlc.arg('id');

-- name: DeleteReplicasSeenBefore :execrows
-- Forgets the replicas not seen since before.
delete from replicas where last_seen_at < sqlc.arg('before');

-- name: ListReplicas :many
-- The replicas seen since seen_after, with whether each is live: not stopped, and its
-- session holds its audit lock (LockAuditReplica) or it reported since live_after.
select r.*,
    (r.stopped_at is null and (r.last_seen_at >= sqlc.arg('live_after')::timestamptz or exists (
        select 1 from pg_catalog.pg_locks l
        where l.locktype = 'advisory' and l.granted and l.objsubid = 1
          and l.database = (select oid from pg_catalog.pg_database where datname = current_database())
          and (l.classid::bigint << 32 | l.objid::bigint)
              = hashtextextended('palyra.audit.replica:' || r.id, 0))))::boolean as live
from replicas r
where r.last_seen_at >= sqlc.arg('seen_after')::timestamptz or r.stopped_at is null
order by r.started_at, r.id;

-- name: LockReplicasForRewrap :exec
-- Holds off replicas reporting (and so starting: UpsertReplica) until the transaction
-- ends, so that a re-wrap's check of the live replicas' keys stays true until it
-- commits.
select pg_advisory_xact_lock(hashtextextended('palyra.replicas', 0));

-- name: InsertMasterKeyRewrap :exec
insert into master_key_rewraps (id, kek_id, started_by, replica_id, started_at)
values (sqlc.arg('id'), sqlc.arg('kek_id'), sqlc.arg('started_by'), sqlc.arg('replica_id'), sqlc.arg('started_at'));

-- name: FinishMasterKeyRewrap :exec
update master_key_rewraps
set finished_at = sqlc.arg('finished_at')::timestamptz, rewrapped = sqlc.arg('rewrapped')
where id = sqlc.arg('id');

-- name: GetLastMasterKeyRewrap :one
select * from master_key_rewraps order by started_at desc, id desc limit 1;
