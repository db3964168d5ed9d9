-- name: InsertApproval :one
insert into approvals (id, run_id, step_seq, agent_id, agent_name, tool, capability, node_id, input,
                       requested_by, created_at, expire_at)
values (sqlc.arg('id'), sqlc.arg('run_id'), sqlc.arg('step_seq'), sqlc.arg('agent_id'), sqlc.arg('agent_name'),
        sqlc.arg('tool'), sqlc.arg('capability'), sqlc.arg('node_id'), sqlc.arg('input'),
        sqlc.arg('requested_by'), sqlc.arg('created_at'), sqlc.arg('expire_at'))
returning *;

-- name: GetApproval :one
select * from approvals where id = sqlc.arg('id');

-- name: ListApprovals :many
-- A page of approvals, newest first, optionally of one state and of one run (an empty
-- state or run_id keeps all).
select * from approvals
where (sqlc.arg('state')::text = '' or state = sqlc.arg('state')::text)
  and (sqlc.arg('run_id')::text = '' or run_id = sqlc.arg('run_id')::text)
  and (sqlc.narg('after_created_at')::timestamptz is null
       or (created_at, id) < (sqlc.narg('after_created_at')::timestamptz, sqlc.arg('after_id')::text))
order by created_at desc, id desc
limit sqlc.arg('page_limit');

-- name: ListApprovalsSince :many
-- What a watch sends when it may have missed changes: the pending approvals, and those
-- decided or expired since a time, oldest first, optionally of one run (an empty run_id
-- keeps all).
select * from approvals
where (state = 'pending' or decided_at >= sqlc.arg('since')::timestamptz)
  and (sqlc.arg('run_id')::text = '' or run_id = sqlc.arg('run_id')::text)
order by created_at, id
limit 10000;

-- name: DecideApproval :one
-- Decides a pending approval that has not expired; returns no row otherwise, so that of
-- concurrent decisions (and expiries) exactly one wins.
update approvals
set state = sqlc.arg('state'), decided_by = sqlc.arg('decided_by'), decided_at = sqlc.arg('now')::timestamptz,
    reason = sqlc.arg('reason'), scope = sqlc.arg('scope')
where id = sqlc.arg('id') and state = 'pending' and expire_at > sqlc.arg('now')::timestamptz
returning *;

-- name: ExpireApproval :one
-- Expires a pending approval; returns no row when it was decided or expired meanwhile.
update approvals
set state = 'expired', decided_by = 'system', decided_at = sqlc.arg('now')::timestamptz, reason = sqlc.arg('reason')
where id = sqlc.arg('id') and state = 'pending'
returning *;

-- name: LockDueApprovals :many
-- The pending approvals whose time ran out, locked for their expiry; those another
-- replica is expiring are skipped.
select * from approvals
where state = 'pending' and expire_at <= sqlc.arg('now')
order by expire_at
limit 1000
for update skip locked;

-- name: LockPendingRunApprovals :many
-- The pending approvals of a run, locked for their expiry.
select * from approvals
where run_id = sqlc.arg('run_id') and state = 'pending'
order by created_at
for update;
