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
-- every array, and deletes their outbox rows (audit_outbox, by the same ids). Run on
-- its own, the statement is its own transaction: all the events go in and their outbox
-- rows out, or nothing happens. The caller chains the batch after the head it believes
-- current; if another replica appended since, the primary key refuses a sequence already
-- taken (audit_events_pkey, a unique violation) and nothing is written. If another
-- writer moved one of the events' outbox rows into the log first, the unique id refuses
-- it (audit_events_id_unique).
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
-- multi-argument unnest would, which sqlc does not know. first_ats holds RFC 3339 times,
-- '' for null.
with append_lock as (
    select pg_advisory_xact_lock(hashtextextended('palyra.audit_events', 0))
), moved as (
    delete from audit_outbox where id = any(sqlc.arg('ids')::text[])
)
insert into audit_events (
    sequence, id, occurred_at, principal, procedure, target, outcome, code, remote_address,
    request_id, prev_hash, hash, format, replica_id, request_id_source, summarized,
    first_at, procedures
)
select unnest(sqlc.arg('sequences')::bigint[]), unnest(sqlc.arg('ids')::text[]),
    unnest(sqlc.arg('times')::timestamptz[]), unnest(sqlc.arg('principals')::text[]),
    unnest(sqlc.arg('procedures')::text[]), unnest(sqlc.arg('targets')::text[]),
    unnest(sqlc.arg('outcomes')::text[]), unnest(sqlc.arg('codes')::text[]),
    unnest(sqlc.arg('remote_addresses')::text[]), unnest(sqlc.arg('request_ids')::text[]),
    unnest(sqlc.arg('prev_hashes')::bytea[]), unnest(sqlc.arg('hashes')::bytea[]),
    unnest(sqlc.arg('formats')::smallint[]), unnest(sqlc.arg('replica_ids')::text[]),
    unnest(sqlc.arg('request_id_sources')::text[]), unnest(sqlc.arg('summarized')::bigint[]),
    nullif(unnest(sqlc.arg('first_ats')::text[]), '')::timestamptz,
    unnest(sqlc.arg('procedure_lists')::text[])
from append_lock;

-- name: RecordedAuditIDs :many
-- The ids among the given ones that are in the log already.
select id from audit_events where id = any(sqlc.arg('ids')::text[]);

-- name: ListAuditEvents :many
-- Newest first, before the cursor sequence when one is given (0 means none).
select *
from audit_events
where (sqlc.arg('before_sequence')::bigint = 0 or sequence < sqlc.arg('before_sequence')::bigint)
  and (sqlc.arg('principal')::text = '' or principal = sqlc.arg('principal')::text)
  and (sqlc.arg('procedure')::text = '' or procedure = sqlc.arg('procedure')::text
       or (summarized > 0 and sqlc.arg('procedure')::text = any(string_to_array(procedures, ','))))
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

-- name: InsertAuditOutbox :exec
-- Writes the outbox rows of events, in the transaction of the change they record, event
-- i made of element i of every array. (An audited call's own row is written by the
-- statement the store adds to its first change: audit.outboxInsert.)
insert into audit_outbox (
    id, replica_id, recorded_at, principal, procedure, target, outcome, code,
    remote_address, request_id, request_id_source
)
select unnest(sqlc.arg('ids')::text[]), sqlc.arg('replica_id')::text,
    unnest(sqlc.arg('times')::timestamptz[]), unnest(sqlc.arg('principals')::text[]),
    unnest(sqlc.arg('procedures')::text[]), unnest(sqlc.arg('targets')::text[]),
    unnest(sqlc.arg('outcomes')::text[]), unnest(sqlc.arg('codes')::text[]),
    unnest(sqlc.arg('remote_addresses')::text[]), unnest(sqlc.arg('request_ids')::text[]),
    unnest(sqlc.arg('request_id_sources')::text[]);

-- name: ListAuditOrphans :many
-- The outbox rows whose call will not end on its replica, oldest first: this replica's
-- (but those of its calls still running, busy), and those of the replicas whose lock no
-- session holds (LockAuditReplica), written before grace_before (so that a replica that
-- has just started, or reconnected, and not yet taken its lock is not taken for dead).
select *
from audit_outbox o
where not (o.id = any(sqlc.arg('busy')::text[]))
  and (o.replica_id = sqlc.arg('replica_id')::text
       or (o.recorded_at < sqlc.arg('grace_before')::timestamptz
           and not exists (
               select 1 from pg_catalog.pg_locks l
               where l.locktype = 'advisory' and l.granted and l.objsubid = 1
                 and l.database = (select oid from pg_catalog.pg_database where datname = current_database())
                 and (l.classid::bigint << 32 | l.objid::bigint)
                     = hashtextextended('palyra.audit.replica:' || o.replica_id, 0))))
order by o.recorded_at, o.id
limit sqlc.arg('page_limit');

-- name: DeleteRecordedOutbox :execrows
-- Deletes the outbox rows whose event is in the log already: a row a call wrote again
-- after a drainer had moved its first one.
delete from audit_outbox o
using audit_events e
where e.id = o.id;

-- name: LockAuditReplica :one
-- Takes, for the rest of the session, the advisory lock of a replica id, unless another
-- session holds it: a replica is alive while a session of its holds it, so its outbox
-- rows are not orphans. Returns whether the lock was taken.
select pg_try_advisory_lock(hashtextextended('palyra.audit.replica:' || sqlc.arg('replica_id')::text, 0));
