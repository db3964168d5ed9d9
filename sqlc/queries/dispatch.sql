-- name: InsertDispatch :one
-- Queues a dispatch; with an idempotency key already used by the same caller, nothing
-- is inserted and no row returns (the caller then reads the existing one).
insert into dispatches (
    id, device_id, capability, input, idempotency_key, request_hash, created_by, created_at,
    deadline, max_output_bytes
) values (
    sqlc.arg('id'), sqlc.arg('device_id'), sqlc.arg('capability'), sqlc.arg('input'),
    sqlc.narg('idempotency_key'), sqlc.arg('request_hash'), sqlc.arg('created_by'),
    sqlc.arg('created_at'), sqlc.arg('deadline'), sqlc.arg('max_output_bytes')
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

-- name: StartDispatch :one
-- The node accepted a dispatch sent to it.
update dispatches
set state = 'running', started_at = coalesce(started_at, sqlc.arg('now')::timestamptz)
where id = sqlc.arg('id') and device_id = sqlc.arg('device_id') and state in ('sent', 'running')
returning *;

-- name: FinishDispatch :one
-- Records the end a node reported, for a dispatch of that node that was sent and has
-- not ended; returns no row otherwise.
update dispatches
set state = sqlc.arg('state')::text, finished_at = sqlc.arg('now')::timestamptz,
    started_at = coalesce(started_at, sqlc.arg('now')::timestamptz),
    result = sqlc.narg('result'), error = sqlc.arg('error'), exit_code = sqlc.arg('exit_code'),
    output_bytes = sqlc.arg('output_bytes'), output_truncated = sqlc.arg('output_truncated')
where id = sqlc.arg('id') and device_id = sqlc.arg('device_id')
  and state in ('sent', 'running')
returning *;

-- name: InsertDispatchOutput :execrows
-- Stores a chunk of output; a chunk sent again (after a reconnection) is ignored.
insert into dispatch_output (dispatch_id, "offset", stream, data)
values (sqlc.arg('dispatch_id'), sqlc.arg('offset'), sqlc.arg('stream'), sqlc.arg('data'))
on conflict (dispatch_id, "offset") do nothing;

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
