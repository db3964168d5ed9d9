-- name: LockAudit :exec
-- Serialises appends across replicas for the rest of the transaction. Every writer of
-- audit_events takes this lock before it inserts (InsertAuditEvents takes it itself), so
-- that a transaction that takes it and then reads the head (GetAuditHead) under READ
-- COMMITTED reads the true head and cannot lose the race for the next sequence.
select pg_advisory_xact_lock(hashtextextended('palyra.audit_events', 0));

-- name: GetAuditHead :one
select sequence, hash from audit_events order by sequence desc limit 1;

-- name: InsertAuditEvents :exec
-- Inserts a batch of chained events in one statement, event i made of element i of
-- every array. Run on its own, the statement is its own transaction: all the events go
-- in or none does. The caller chains the batch after the head it believes current; if
-- another replica appended since, the primary key refuses a sequence already taken
-- (audit_events_pkey, a unique violation) and nothing is written.
--
-- The statement takes the append lock of LockAudit before it inserts (the insert reads
-- the lock's row) and keeps it to its commit. The primary key alone keeps the chain
-- correct; the lock keeps the promise LockAudit makes to a transaction that reads the
-- head under it (Log's last attempt, and palyrad versions that append that way), which
-- would otherwise lose the next sequence to this statement. It costs no round trip, and
-- little waiting: appends are serial anyway, each batch starting where the one before
-- ended, and two inserts after the same head would wait on each other's primary key
-- entries until one committed and the other failed.
--
-- The unnest calls of one select list run in step (PostgreSQL 10 and later), as a
-- multi-argument unnest would, which sqlc does not know.
with append_lock as (
    select pg_advisory_xact_lock(hashtextextended('palyra.audit_events', 0))
)
insert into audit_events (
    sequence, id, occurred_at, principal, procedure, target, outcome, code, remote_address,
    request_id, prev_hash, hash
)
select unnest(sqlc.arg('sequences')::bigint[]), unnest(sqlc.arg('ids')::text[]),
    unnest(sqlc.arg('times')::timestamptz[]), unnest(sqlc.arg('principals')::text[]),
    unnest(sqlc.arg('procedures')::text[]), unnest(sqlc.arg('targets')::text[]),
    unnest(sqlc.arg('outcomes')::text[]), unnest(sqlc.arg('codes')::text[]),
    unnest(sqlc.arg('remote_addresses')::text[]), unnest(sqlc.arg('request_ids')::text[]),
    unnest(sqlc.arg('prev_hashes')::bytea[]), unnest(sqlc.arg('hashes')::bytea[])
from append_lock;

-- name: ListAuditEvents :many
-- Newest first, before the cursor sequence when one is given (0 means none).
select *
from audit_events
where (sqlc.arg('before_sequence')::bigint = 0 or sequence < sqlc.arg('before_sequence')::bigint)
  and (sqlc.arg('principal')::text = '' or principal = sqlc.arg('principal')::text)
  and (sqlc.arg('procedure')::text = '' or procedure = sqlc.arg('procedure')::text)
  and (sqlc.arg('outcome')::text = '' or outcome = sqlc.arg('outcome')::text)
  and (sqlc.narg('since')::timestamptz is null or occurred_at >= sqlc.narg('since')::timestamptz)
  and (sqlc.narg('until')::timestamptz is null or occurred_at < sqlc.narg('until')::timestamptz)
order by sequence desc
limit sqlc.arg('page_limit');

-- name: ScanAuditEvents :many
-- Oldest first, after a sequence, for verification in batches.
select *
from audit_events
where sequence > sqlc.arg('after_sequence')::bigint
order by sequence
limit sqlc.arg('page_limit');
