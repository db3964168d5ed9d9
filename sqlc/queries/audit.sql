-- name: LockAudit :exec
-- Serialises appends across replicas for the rest of the transaction: each event
-- commits to the one before it, so they are written one at a time.
select pg_advisory_xact_lock(hashtextextended('palyra.audit_events', 0));

-- name: GetAuditHead :one
select sequence, hash from audit_events order by sequence desc limit 1;

-- name: InsertAuditEvent :exec
insert into audit_events (
    sequence, id, occurred_at, principal, procedure, target, outcome, code, remote_address,
    request_id, prev_hash, hash
) values (
    sqlc.arg('sequence'), sqlc.arg('id'), sqlc.arg('occurred_at'), sqlc.arg('principal'),
    sqlc.arg('procedure'), sqlc.arg('target'), sqlc.arg('outcome'), sqlc.arg('code'),
    sqlc.arg('remote_address'), sqlc.arg('request_id'), sqlc.arg('prev_hash'), sqlc.arg('hash')
);

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
