-- name: InsertDispatch :one
-- Stores a dispatch: queued, or already sent when the replica creating it holds its
-- device's session (session_id and sent_at set) and hands it to that session itself.
-- With an idempotency key already used by the same caller, nothing is inserted and no
-- row returns (the caller then reads the existing one).
insert into dispatches (
    id, device_id, capability, input, idempotency_key, request_hash, created_by, created_at,
    deadline, max_output_bytes, state, session_id, sent_at
) values (
    sqlc.arg('id'), sqlc.arg('device_id'), sqlc.arg('capability'), sqlc.arg('input'),
    sqlc.narg('idempotency_key'), sqlc.arg('request_hash'), sqlc.arg('created_by'),
    sqlc.arg('created_at'), sqlc.arg('deadline'), sqlc.arg('max_output_bytes'),
    case when sqlc.narg('session_id')::text is null then 'queued' else 'sent' end,
    sqlc.narg('session_id')::text, sqlc.narg('sent_at')::timestamptz
)
on conflict (created_by, idempotency_key) where idempotency_key is not null do nothing
returning *;

-- name: GetDispatchByKey :one
select * from dispatches
where created_by = sqlc.arg('created_by') and idempotency_key = sqlc.arg('idempotency_key')::text;

-- name: GetDispatch :one
select * from dispatches where id = sqlc.arg('id');

-- name: ClaimDispatches :many
-- Takes the dispatches a session must deliver: the device's queued ones, and those sent
-- to an earlier session without a result (the node may have missed them; it never runs
-- an id twice). Claims skip rows another replica is claiming at the same moment.
update dispatches d
set state = case when d.state = 'queued' then 'sent' else d.state end,
    session_id = sqlc.arg('session_id')::text,
    sent_at = sqlc.arg('now')::timestamptz
where d.id in (
    select c.id from dispatches c
    where c.device_id = sqlc.arg('device_id')::text
      and c.state in ('queued', 'sent', 'running')
      and c.session_id is distinct from sqlc.arg('session_id')::text
      and c.deadline > sqlc.arg('now')::timestamptz
      and c.cancel_requested_at is null
      -- Only the device's current session claims: a replaced one would steal back
      -- what its successor claimed.
      and exists (select 1 from devices dv
                  where dv.id = c.device_id and dv.session_id = sqlc.arg('session_id')::text)
    order by c.created_at
    for update skip locked
    limit sqlc.arg('max_claims')::integer
)
returning d.*;

-- name: RecordReports :many
-- Records in one statement (one round trip, one commit) what a node reported in one
-- round: the dispatches it accepted (start_ids, none of which ends in the same round),
-- chunks of output (a chunk sent again after a reconnection is ignored), and ends, each
-- for a dispatch of that device that was sent and has not ended. It returns the
-- dispatches it ended; an end that returns no row was for a dispatch that ended
-- already or was never sent. A result of '' is none.
with started as (
    update dispatches
    set state = 'running', started_at = coalesce(started_at, sqlc.arg('now')::timestamptz)
    where id = any(sqlc.arg('start_ids')::text[]) and device_id = sqlc.arg('device_id')::text
      and state in ('sent', 'running')
    returning id
), stored as (
    insert into dispatch_output (dispatch_id, "offset", stream, data)
    select unnest(sqlc.arg('output_ids')::text[]), unnest(sqlc.arg('output_offsets')::bigint[]),
           unnest(sqlc.arg('output_streams')::text[]), unnest(sqlc.arg('output_data')::bytea[])
    on conflict (dispatch_id, "offset") do nothing
    returning dispatch_id
)
update dispatches d
set state = e.state, finished_at = sqlc.arg('now')::timestamptz,
    started_at = coalesce(d.started_at, sqlc.arg('now')::timestamptz),
    result = nullif(e.result, '')::jsonb, error = e.error, exit_code = e.exit_code,
    output_bytes = e.output_bytes, output_truncated = e.output_truncated
from (select unnest(sqlc.arg('end_ids')::text[]) as id, unnest(sqlc.arg('end_states')::text[]) as state,
             unnest(sqlc.arg('end_results')::text[]) as result, unnest(sqlc.arg('end_errors')::text[]) as error,
             unnest(sqlc.arg('end_exit_codes')::integer[]) as exit_code,
             unnest(sqlc.arg('end_output_bytes')::bigint[]) as output_bytes,
             unnest(sqlc.arg('end_truncated')::boolean[]) as output_truncated) e
where d.id = e.id and d.device_id = sqlc.arg('device_id')::text
  and d.state in ('sent', 'running')
returning d.*;

-- name: ListDispatchOutput :many
-- The chunks of a dispatch's output that end after an offset, in order.
select * from dispatch_output
where dispatch_id = sqlc.arg('dispatch_id')
  and "offset" + octet_length(data) > sqlc.arg('from_offset')::bigint
order by "offset";

-- name: CancelQueuedDispatch :one
update dispatches
set state = 'cancelled', finished_at = sqlc.arg('now')::timestamptz,
    cancel_requested_at = sqlc.arg('now')::timestamptz, cancel_reason = sqlc.arg('reason'),
    error = 'cancelled before it was sent: ' || sqlc.arg('reason')
where id = sqlc.arg('id') and state = 'queued'
returning *;

-- name: RequestDispatchCancel :one
update dispatches
set cancel_requested_at = coalesce(cancel_requested_at, sqlc.arg('now')::timestamptz),
    cancel_reason = sqlc.arg('reason')
where id = sqlc.arg('id') and state in ('sent', 'running')
returning *;

-- name: ListCancelRequests :many
-- The dispatches of a device whose cancellation was asked for and that have not ended.
select * from dispatches
where device_id = sqlc.arg('device_id') and cancel_requested_at is not null
  and state in ('sent', 'running');

-- name: ExpireDispatches :many
-- Ends the dispatches whose deadline passed: a queued one timed out undelivered; a sent
-- or running one, after a grace period for its node's own report, timed out if its node
-- is still attached, else failed because the node vanished while running it.
update dispatches d
set state = case
        when d.state = 'queued' then 'timed_out'
        when dev.session_id is not null and dev.last_seen_at > sqlc.arg('now')::timestamptz - make_interval(secs => sqlc.arg('stale_after_seconds')::float8) then 'timed_out'
        else 'failed' end,
    finished_at = sqlc.arg('now')::timestamptz,
    error = case
        when d.state = 'queued' then 'not delivered before its deadline: the node was offline'
        when dev.session_id is not null and dev.last_seen_at > sqlc.arg('now')::timestamptz - make_interval(secs => sqlc.arg('stale_after_seconds')::float8)
            then 'the node did not report an end before the deadline'
        else 'the node disconnected while running it and did not report before the deadline' end
from devices dev
where dev.id = d.device_id
  and d.state in ('queued', 'sent', 'running')
  and ((d.state = 'queued' and d.deadline <= sqlc.arg('now')::timestamptz)
       or (d.state <> 'queued' and d.deadline <= sqlc.arg('now')::timestamptz - make_interval(secs => sqlc.arg('grace_seconds')::float8)))
returning d.id, d.device_id, d.state;

-- name: ListDispatches :many
select * from dispatches
where (sqlc.narg('after_created_at')::timestamptz is null
       or (created_at, id) < (sqlc.narg('after_created_at')::timestamptz, sqlc.arg('after_id')::text))
  and (sqlc.arg('device_id')::text = '' or device_id = sqlc.arg('device_id')::text)
  and (sqlc.arg('state')::text = '' or state = sqlc.arg('state')::text)
  and (sqlc.arg('capability')::text = '' or capability = sqlc.arg('capability')::text)
order by created_at desc, id desc
limit sqlc.arg('page_limit');

-- name: CountActiveDispatches :many
-- The dispatches that have not ended, by state (an index scan, however long the history).
select state, count(*)::bigint as count from dispatches
where state in ('queued', 'sent', 'running')
group by state;
