-- Agents and their runs (server/internal/agents). Times come from the caller's clock.

-- name: InsertAgent :one
insert into agents (id, name, description, model, system_prompt, tools, max_steps, max_tool_calls, max_tokens,
                    deadline_ms, labels, revision, is_default, created_at, created_by, updated_at, updated_by)
values (sqlc.arg('id'), sqlc.arg('name'), sqlc.arg('description'), sqlc.arg('model'), sqlc.arg('system_prompt'),
        sqlc.arg('tools'), sqlc.arg('max_steps'), sqlc.arg('max_tool_calls'), sqlc.arg('max_tokens'),
        sqlc.arg('deadline_ms'), sqlc.arg('labels'), 1, false, sqlc.arg('now'), sqlc.arg('by'), sqlc.arg('now'), sqlc.arg('by'))
returning *;

-- name: GetAgentByID :one
select * from agents where id = sqlc.arg('id');

-- name: GetAgentByName :one
select * from agents where name = sqlc.arg('name');

-- name: GetDefaultAgent :one
select * from agents where is_default;

-- name: LockAgentByID :one
-- The agent, locked for the rest of the transaction: every change of an agent takes
-- this lock first, so that its revisions follow each other.
select * from agents where id = sqlc.arg('id') for update;

-- name: LockAgentByName :one
select * from agents where name = sqlc.arg('name') for update;

-- name: ListAgents :many
-- By name, after the cursor when one is given.
select * from agents
where sqlc.arg('after_name')::text = '' or name > sqlc.arg('after_name')::text
order by name
limit sqlc.arg('max_rows');

-- name: UpdateAgent :one
-- The agent's new definition as its next revision.
update agents
set name = sqlc.arg('name'), description = sqlc.arg('description'), model = sqlc.arg('model'),
    system_prompt = sqlc.arg('system_prompt'), tools = sqlc.arg('tools'), max_steps = sqlc.arg('max_steps'),
    max_tool_calls = sqlc.arg('max_tool_calls'), max_tokens = sqlc.arg('max_tokens'),
    deadline_ms = sqlc.arg('deadline_ms'), labels = sqlc.arg('labels'), revision = revision + 1,
    updated_at = sqlc.arg('now'), updated_by = sqlc.arg('by')
where id = sqlc.arg('id')
returning *;

-- name: DeleteAgent :exec
delete from agents where id = sqlc.arg('id');

-- name: ClearDefaultAgent :exec
-- Takes the default mark from the agent that has it.
update agents set is_default = false where is_default;

-- name: MarkDefaultAgent :one
update agents set is_default = true where id = sqlc.arg('id') returning *;
