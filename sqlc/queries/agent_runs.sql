-- name: InsertAgentRun :one
insert into agent_runs (
    id, agent_id, agent_name, agent_revision, agent, input, started_by, replica_id,
    created_at, deadline
) values (
    sqlc.arg('id'), sqlc.arg('agent_id'), sqlc.arg('agent_name'), sqlc.arg('agent_revision'),
    sqlc.arg('agent'), sqlc.arg('input'), sqlc.arg('started_by'), sqlc.arg('replica_id'),
    sqlc.arg('created_at'), sqlc.arg('deadline')
)
returning *;

-- name: GetAgentRun :one
select * from agent_runs where id = sqlc.arg('id');

-- name: ListAgentRuns :many
select * from agent_runs
where (sqlc.narg('after_created_at')::timestamptz is null
       or (created_at, id) < (sqlc.narg('after_created_at')::timestamptz, sqlc.arg('after_id')::text))
  and (sqlc.arg('agent_id')::text = '' or agent_id = sqlc.arg('agent_id')::text)
  and (sqlc.arg('agent_name')::text = '' or agent_name = sqlc.arg('agent_name')::text)
  and (sqlc.arg('state')::text = '' or state = sqlc.arg('state')::text)
order by created_at desc, id desc
limit sqlc.arg('page_limit');

-- name: SetAgentRunState :one
-- Moves a run that has not ended between running and waiting_approval.
update agent_runs set state = sqlc.arg('state')::text
where id = sqlc.arg('id') and finished_at is null
returning *;

-- name: CountAgentRunCall :one
-- Adds a model call (its tokens) or a tool call to a run's counts.
update agent_runs
set prompt_tokens = prompt_tokens + sqlc.arg('prompt_tokens')::bigint,
    completion_tokens = completion_tokens + sqlc.arg('completion_tokens')::bigint,
    model_calls = model_calls + sqlc.arg('model_calls')::integer,
    tool_calls = tool_calls + sqlc.arg('tool_calls')::integer
where id = sqlc.arg('id')
returning *;

-- name: FinishAgentRun :one
-- Ends a run that has not ended; no row when it had.
update agent_runs
set state = sqlc.arg('state')::text, reason = sqlc.arg('reason')::text,
    answer = sqlc.arg('answer')::text, finished_at = sqlc.arg('now')::timestamptz
where id = sqlc.arg('id') and finished_at is null
returning *;

-- name: RequestAgentRunCancel :one
-- Asks for a run's cancellation (the trigger notifies "cancel:<id>" the first time);
-- the reason is kept for its end. No row when the run does not exist.
update agent_runs
set cancel_requested_at = coalesce(cancel_requested_at, sqlc.arg('now')::timestamptz),
    reason = case when cancel_requested_at is null then sqlc.arg('reason')::text else reason end
where id = sqlc.arg('id') and finished_at is null
returning *;

-- name: FailOrphanedAgentRuns :many
-- Fails the runs that have not ended whose replica is not among the live ones: no one
-- runs their loop any more, and none is resumed.
update agent_runs
set state = 'failed', reason = 'palyrad replica ' || replica_id || ' stopped mid-run',
    finished_at = sqlc.arg('now')::timestamptz
where state in ('running', 'waiting_approval')
  and not (replica_id = any(sqlc.arg('live_replicas')::text[]))
returning *;

-- name: InsertAgentRunStep :one
insert into agent_run_steps (
    run_id, seq, kind, started_at, model, tool, tool_call_id, capability, node_id, input
) values (
    sqlc.arg('run_id'), sqlc.arg('seq'), sqlc.arg('kind'), sqlc.arg('started_at'),
    sqlc.arg('model'), sqlc.arg('tool'), sqlc.arg('tool_call_id'), sqlc.arg('capability'),
    sqlc.arg('node_id'), sqlc.arg('input')
)
returning *;

-- name: UpdateAgentRunStep :one
-- Records what a step did so far, or how it ended (finished_at set).
update agent_run_steps
set finished_at = sqlc.narg('finished_at')::timestamptz,
    prompt_tokens = sqlc.arg('prompt_tokens')::bigint,
    completion_tokens = sqlc.arg('completion_tokens')::bigint,
    finish_reason = sqlc.arg('finish_reason')::text,
    capability = sqlc.arg('capability')::text,
    node_id = sqlc.arg('node_id')::text,
    dispatch_id = sqlc.narg('dispatch_id')::text,
    approval_id = sqlc.narg('approval_id')::text,
    outcome = sqlc.arg('outcome')::text,
    result = sqlc.narg('result')::jsonb,
    error = sqlc.arg('error')::text,
    answer = sqlc.arg('answer')::text
where run_id = sqlc.arg('run_id') and seq = sqlc.arg('seq')
returning *;

-- name: ListAgentRunSteps :many
select * from agent_run_steps where run_id = sqlc.arg('run_id') order by seq;

-- name: EndUnfinishedAgentRunSteps :many
-- Ends the steps of an ended run that had not ended, as cancelled, with why; returns
-- them (a tool call's dispatch, if any, is then cancelled).
update agent_run_steps
set finished_at = sqlc.arg('now')::timestamptz,
    outcome = case when kind = 'tool_call' then 'cancelled' else outcome end,
    error = sqlc.arg('error')::text
where run_id = sqlc.arg('run_id') and finished_at is null
returning *;
