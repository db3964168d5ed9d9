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
-- round, for dispatches of that device that were sent and have not ended: those it
-- accepted (start_ids), chunks of output, and ends (a result of '' is none). Output is
-- contiguous: a chunk is stored only where the dispatch's stored output ends (after the
-- chunks before it in this round) and within its cap; output_stored grows with it. An
-- end records output_bytes as at least what is stored, and why output was lost when
-- less is stored than the node reported (up to the cap). It returns every dispatch it
-- changed, as it is now; an end that returns no row was for a dispatch that ended
-- already or was never sent.
with given as (
    select i as ord, (sqlc.arg('output_ids')::text[])[i] as id, (sqlc.arg('output_offsets')::bigint[])[i] as off,
           (sqlc.arg('output_streams')::text[])[i] as stream, (sqlc.arg('output_data')::bytea[])[i] as data
    from generate_subscripts(sqlc.arg('output_ids')::text[], 1) as i
), chunks as (
    select c.id, c.off, c.stream, c.data,
           coalesce(sum(octet_length(c.data)) over (partition by c.id order by c.ord
                    rows between unbounded preceding and 1 preceding), 0)::bigint as before
    from given c
), stored as (
    insert into dispatch_output (dispatch_id, "offset", stream, data)
    select c.id, c.off, c.stream, c.data
    from chunks c join dispatches cd on cd.id = c.id
    where cd.device_id = sqlc.arg('device_id')::text and cd.state in ('sent', 'running')
      and c.off = cd.output_stored + c.before
      and c.off + octet_length(c.data) <= cd.max_output_bytes
    on conflict (dispatch_id, "offset") do nothing
    returning dispatch_id, "offset" + octet_length(data) as stored_to
), grown as (
    select dispatch_id as id, max(stored_to)::bigint as stored_to from stored group by dispatch_id
), ends as (
    select unnest(sqlc.arg('end_ids')::text[]) as id, unnest(sqlc.arg('end_states')::text[]) as state,
           unnest(sqlc.arg('end_results')::text[]) as result, unnest(sqlc.arg('end_errors')::text[]) as error,
           unnest(sqlc.arg('end_exit_codes')::integer[]) as exit_code,
           unnest(sqlc.arg('end_output_bytes')::bigint[]) as output_bytes,
           unnest(sqlc.arg('end_truncated')::boolean[]) as output_truncated
), touched as (
    select unnest(sqlc.arg('start_ids')::text[]) as id
    union select id from grown
    union select id from ends
)
update dispatches d
set state = coalesce(e.state, case when d.id = any(sqlc.arg('start_ids')::text[]) then 'running' else d.state end),
    started_at = case when e.id is not null or d.id = any(sqlc.arg('start_ids')::text[])
                      then coalesce(d.started_at, sqlc.arg('now')::timestamptz) else d.started_at end,
    finished_at = case when e.id is not null then sqlc.arg('now')::timestamptz else d.finished_at end,
    result = case when e.id is not null then nullif(e.result, '')::jsonb else d.result end,
    error = coalesce(e.error, d.error),
    exit_code = coalesce(e.exit_code, d.exit_code),
    output_stored = greatest(d.output_stored, g.stored_to),
    output_bytes = case when e.id is not null then greatest(e.output_bytes, d.output_stored, g.stored_to) else d.output_bytes end,
    output_truncated = coalesce(e.output_truncated, d.output_truncated),
    output_lost_reason = case
        when e.id is not null and greatest(d.output_stored, g.stored_to) < least(e.output_bytes, d.max_output_bytes)
            then format('only %s of the %s bytes of output reached palyrad: the node reported its end without the rest '
                        '(as an agent that restarts without keeping its output on disk does)',
                        greatest(d.output_stored, g.stored_to), least(e.output_bytes, d.max_output_bytes))
        else d.output_lost_reason end
from touched t
left join ends e on e.id = t.id
left join grown g on g.id = t.id
where d.id = t.id and d.device_id = sqlc.arg('device_id')::text
  and d.state in ('sent', 'running')
returning d.*;

-- name: ListDispatchOutput :many
-- A page of a dispatch's output: the chunks that end after from_offset and begin
-- before to_offset, in order, as long as their data, with row_overhead bytes for each,
-- stays within max_bytes (the chunk that crosses it is the last).
select p.dispatch_id, p."offset", p.stream, p.data from (
    select o.dispatch_id, o."offset", o.stream, o.data,
           sum(octet_length(o.data) + sqlc.arg('row_overhead')::bigint) over (order by o."offset") as upto
    from dispatch_output o
    where o.dispatch_id = sqlc.arg('dispatch_id')
      and o."offset" + octet_length(o.data) > sqlc.arg('from_offset')::bigint
      and o."offset" < sqlc.arg('to_offset')::bigint
) p
where p.upto - octet_length(p.data) - sqlc.arg('row_overhead')::bigint < sqlc.arg('max_bytes')::bigint
order by p."offset";

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
-- is still attached, else failed because the node vanished while running it. Its
-- output_bytes is what was stored of its output.
update dispatches d
set state = case
        when d.state = 'queued' then 'timed_out'
        when dev.session_id is not null and dev.last_seen_at > sqlc.arg('now')::timestamptz - make_interval(secs => sqlc.arg('stale_after_seconds')::float8) then 'timed_out'
        else 'failed' end,
    finished_at = sqlc.arg('now')::timestamptz,
    output_bytes = greatest(d.output_bytes, d.output_stored),
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
-- A page newest first, after the position (after_created_at, after_id) when given;
-- created_since and created_before bound created_at to [since, before) (null: open):
-- both, like the position, are ranges of the index dispatches_created_at.
select * from dispatches
where (sqlc.narg('after_created_at')::timestamptz is null
       or (created_at, id) < (sqlc.narg('after_created_at')::timestamptz, sqlc.arg('after_id')::text))
  and (sqlc.narg('created_since')::timestamptz is null or created_at >= sqlc.narg('created_since')::timestamptz)
  and (sqlc.narg('created_before')::timestamptz is null or created_at < sqlc.narg('created_before')::timestamptz)
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

-- name: AbandonDispatch :one
-- Ends a dispatch that has not ended as cancelled at once, without its node's report:
-- its caller gave up on it (its node went away). Its node never receives it again (a
-- claim takes no ended dispatch) and a report it sends later changes nothing.
update dispatches
set state = 'cancelled', finished_at = sqlc.arg('now')::timestamptz,
    cancel_requested_at = coalesce(cancel_requested_at, sqlc.arg('now')::timestamptz),
    cancel_reason = sqlc.arg('reason'),
    output_bytes = greatest(output_bytes, output_stored),
    error = 'abandoned: ' || sqlc.arg('reason')
where id = sqlc.arg('id') and state in ('queued', 'sent', 'running')
returning *;

-- name: CountDispatchesInFlight :many
-- The dispatches of the given capabilities that each of the given devices has not
-- finished and that no one asked to cancel, by device (the dispatches_device_active
-- index); a device without any has no row.
select device_id, count(*)::bigint as count from dispatches
where device_id = any(sqlc.arg('device_ids')::text[])
  and capability = any(sqlc.arg('capabilities')::text[])
  and state in ('queued', 'sent', 'running') and cancel_requested_at is null
group by device_id;
