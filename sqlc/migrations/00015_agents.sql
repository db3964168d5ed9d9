-- Agents (server/internal/agents), their runs, and the approvals of their tool calls
-- (server/internal/approvals).
--
-- agents: the definitions, one row each at its current revision; at most one is the
-- default. Tools are a JSON array of palyra.agents.v1.Tool in protojson, with their
-- defaults filled in; labels a JSON object.
--
-- agent_runs: each run, with the definition it runs snapshotted (protojson of
-- palyra.agents.v1.AgentSpec), so that an update or a delete of the agent mid-run
-- changes nothing; agent_id therefore references no row. replica_id is the replica
-- running the loop: a run still active whose replica is no longer live is failed by the
-- reaper of any replica, never resumed.
--
-- agent_run_steps: the steps of a run, (run_id, seq) from 1: model calls, tool calls,
-- the answer. A tool call's dispatch is created with the idempotency key
-- run:<run_id>:<seq>, so that a step is dispatched once.
--
-- approvals: the tool calls of ask tools, waiting for or decided by a human. A decision
-- is final (a trigger refuses any change of a decided or expired approval).
--
-- NOTIFY on commit: palyra_agent_runs (payload: the run id) at every insert or update of
-- a run or of one of its steps, and "cancel:<run id>" when a cancellation is asked for;
-- palyra_approvals (payload: the approval id) at every insert or update of an approval.

-- +goose Up
create table agents (
    id              text        primary key,
    name            text        not null,
    description     text        not null default '',
    model           text        not null,
    system_prompt   text        not null default '',
    tools           jsonb       not null default '[]',
    max_steps       integer     not null,
    max_tool_calls  integer     not null,
    -- 0: no limit.
    max_tokens      bigint      not null default 0,
    deadline_ms     bigint      not null,
    labels          jsonb       not null default '{}',
    revision        bigint      not null default 1,
    is_default      boolean     not null default false,
    created_at      timestamptz not null,
    created_by      text        not null,
    updated_at      timestamptz not null,
    updated_by      text        not null,
    constraint agents_name check (name ~ '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$'),
    constraint agents_tools_array check (jsonb_typeof(tools) = 'array'),
    constraint agents_labels_object check (jsonb_typeof(labels) = 'object'),
    constraint agents_revision_positive check (revision >= 1),
    constraint agents_max_steps check (max_steps between 1 and 64),
    constraint agents_max_tool_calls check (max_tool_calls between 1 and 256),
    constraint agents_max_tokens check (max_tokens >= 0),
    constraint agents_deadline check (deadline_ms between 1 and 86400000)
);

create unique index agents_name on agents (name);
-- At most one default agent.
create unique index agents_one_default on agents (is_default) where is_default;

create table agent_runs (
    id                   text        primary key,
    agent_id             text        not null,
    agent_name           text        not null,
    agent_revision       bigint      not null,
    -- The definition it runs: protojson of palyra.agents.v1.AgentSpec.
    agent                jsonb       not null,
    state                text        not null default 'running',
    reason               text        not null default '',
    -- The input conversation: a JSON array of {"role", "content"}.
    input                jsonb       not null,
    answer               text        not null default '',
    started_by           text        not null,
    replica_id           text        not null,
    created_at           timestamptz not null,
    deadline             timestamptz not null,
    finished_at          timestamptz,
    cancel_requested_at  timestamptz,
    prompt_tokens        bigint      not null default 0,
    completion_tokens    bigint      not null default 0,
    model_calls          integer     not null default 0,
    tool_calls           integer     not null default 0,
    constraint agent_runs_state check (state in ('running', 'waiting_approval', 'succeeded', 'failed', 'cancelled')),
    constraint agent_runs_finished check ((state in ('succeeded', 'failed', 'cancelled')) = (finished_at is not null)),
    constraint agent_runs_input_array check (jsonb_typeof(input) = 'array'),
    constraint agent_runs_counts check (prompt_tokens >= 0 and completion_tokens >= 0
                                        and model_calls >= 0 and tool_calls >= 0)
);

create index agent_runs_created_at on agent_runs (created_at desc, id desc);
create index agent_runs_agent on agent_runs (agent_id, created_at desc, id desc);
create index agent_runs_agent_name on agent_runs (agent_name, created_at desc, id desc);
create index agent_runs_state on agent_runs (state, created_at desc, id desc);
-- The reaper's: the active runs, by replica.
create index agent_runs_active on agent_runs (replica_id)
    where state in ('running', 'waiting_approval');

create table agent_run_steps (
    run_id             text        not null references agent_runs (id) on delete cascade,
    seq                integer     not null,
    kind               text        not null,
    started_at         timestamptz not null,
    finished_at        timestamptz,
    -- model_call
    model              text        not null default '',
    prompt_tokens      bigint      not null default 0,
    completion_tokens  bigint      not null default 0,
    finish_reason      text        not null default '',
    -- tool_call
    tool               text        not null default '',
    tool_call_id       text        not null default '',
    capability         text        not null default '',
    node_id            text        not null default '',
    -- The arguments as the model gave them (not always valid JSON, hence text).
    input              text        not null default '',
    dispatch_id        text,
    approval_id        text,
    outcome            text        not null default '',
    result             jsonb,
    -- model_call and tool_call: what went wrong, as the model was told.
    error              text        not null default '',
    -- answer
    answer             text        not null default '',
    primary key (run_id, seq),
    constraint agent_run_steps_seq check (seq >= 1),
    constraint agent_run_steps_kind check (kind in ('model_call', 'tool_call', 'answer')),
    constraint agent_run_steps_outcome check (outcome in ('', 'succeeded', 'failed', 'denied', 'expired', 'refused', 'cancelled')),
    constraint agent_run_steps_tokens check (prompt_tokens >= 0 and completion_tokens >= 0)
);

create index agent_run_steps_dispatch on agent_run_steps (dispatch_id) where dispatch_id is not null;

create table approvals (
    id            text        primary key,
    run_id        text        not null,
    step_seq      integer     not null,
    agent_id      text        not null,
    agent_name    text        not null,
    tool          text        not null,
    capability    text        not null,
    node_id       text        not null,
    -- The exact input the node would be given.
    input         jsonb       not null,
    state         text        not null default 'pending',
    requested_by  text        not null,
    created_at    timestamptz not null,
    expire_at     timestamptz not null,
    decided_by    text        not null default '',
    decided_at    timestamptz,
    reason        text        not null default '',
    -- '' until approved; then 'once' or 'run'.
    scope         text        not null default '',
    foreign key (run_id, step_seq) references agent_run_steps (run_id, seq) on delete cascade,
    constraint approvals_state check (state in ('pending', 'approved', 'denied', 'expired')),
    constraint approvals_decided check ((state = 'pending') = (decided_at is null)),
    constraint approvals_scope check (scope in ('', 'once', 'run') and (state = 'approved') = (scope <> '')),
    constraint approvals_expire check (expire_at > created_at)
);

create index approvals_created_at on approvals (created_at desc, id desc);
create index approvals_state on approvals (state, created_at desc, id desc);
create index approvals_run on approvals (run_id, created_at desc, id desc);
-- The expiry's: the pending approvals, by when they expire.
create index approvals_pending_expire on approvals (expire_at) where state = 'pending';

-- A decision is final: a decided or expired approval never changes.
-- +goose StatementBegin
create function approvals_final() returns trigger language plpgsql as $$
begin
    if old.state <> 'pending' then
        raise exception 'approval % is % and cannot change', old.id, old.state
            using errcode = 'check_violation';
    end if;
    return new;
end;
$$;
-- +goose StatementEnd

create trigger approvals_final
    before update on approvals
    for each row execute function approvals_final();

-- +goose StatementBegin
create function notify_agent_run() returns trigger language plpgsql as $$
begin
    perform pg_notify('palyra_agent_runs', new.id);
    if new.cancel_requested_at is not null
       and (tg_op = 'INSERT' or old.cancel_requested_at is null) then
        perform pg_notify('palyra_agent_runs', 'cancel:' || new.id);
    end if;
    return null;
end;
$$;
-- +goose StatementEnd

-- +goose StatementBegin
create function notify_agent_run_step() returns trigger language plpgsql as $$
begin
    perform pg_notify('palyra_agent_runs', new.run_id);
    return null;
end;
$$;
-- +goose StatementEnd

-- +goose StatementBegin
create function notify_approval() returns trigger language plpgsql as $$
begin
    perform pg_notify('palyra_approvals', new.id);
    return null;
end;
$$;
-- +goose StatementEnd

create trigger agent_runs_notify
    after insert or update on agent_runs
    for each row execute function notify_agent_run();

create trigger agent_run_steps_notify
    after insert or update on agent_run_steps
    for each row execute function notify_agent_run_step();

create trigger approvals_notify
    after insert or update on approvals
    for each row execute function notify_approval();

-- +goose Down
drop trigger approvals_notify on approvals;
drop trigger agent_run_steps_notify on agent_run_steps;
drop trigger agent_runs_notify on agent_runs;
drop function notify_approval;
drop function notify_agent_run_step;
drop function notify_agent_run;
drop trigger approvals_final on approvals;
drop function approvals_final;
drop table approvals;
drop table agent_run_steps;
drop table agent_runs;
drop table agents;
