-- The node runtime: where each device is attached, and durable dispatches with their
-- output.

-- +goose Up
alter table devices
    add column reported_labels   jsonb       not null default '{}',
    add column capabilities      jsonb       not null default '[]',
    add column protocol_version  integer     not null default 0,
    -- The Attach session of the device and the replica holding it; set while attached.
    add column session_id        text,
    add column attached_replica  text,
    add column attached_at       timestamptz,
    add column last_seen_at      timestamptz,
    add constraint devices_session check ((session_id is null) = (attached_replica is null)),
    add constraint devices_capabilities_array check (jsonb_typeof(capabilities) = 'array'),
    add constraint devices_reported_labels_object check (jsonb_typeof(reported_labels) = 'object');

create table dispatches (
    id                   text        primary key,
    device_id            text        not null references devices (id),
    capability           text        not null,
    input                jsonb       not null,
    state                text        not null default 'queued',
    idempotency_key      text,
    -- SHA-256 of what the caller asked for, to refuse an idempotency key reused for
    -- another request.
    request_hash         bytea       not null,
    created_by           text        not null,
    created_at           timestamptz not null,
    deadline             timestamptz not null,
    max_output_bytes     bigint      not null,
    -- The session it was last sent on.
    session_id           text,
    sent_at              timestamptz,
    started_at           timestamptz,
    finished_at          timestamptz,
    cancel_requested_at  timestamptz,
    cancel_reason        text        not null default '',
    result               jsonb,
    error                text        not null default '',
    exit_code            integer     not null default 0,
    output_bytes         bigint      not null default 0,
    output_truncated     boolean     not null default false,
    constraint dispatches_state check (state in ('queued', 'sent', 'running', 'succeeded', 'failed', 'timed_out', 'cancelled')),
    constraint dispatches_finished check ((state in ('succeeded', 'failed', 'timed_out', 'cancelled')) = (finished_at is not null)),
    constraint dispatches_deadline check (deadline > created_at),
    constraint dispatches_max_output check (max_output_bytes between 0 and 67108864),
    constraint dispatches_request_hash_length check (octet_length(request_hash) = 32)
);

create unique index dispatches_idempotency on dispatches (created_by, idempotency_key)
    where idempotency_key is not null;
create index dispatches_device_active on dispatches (device_id, created_at)
    where state in ('queued', 'sent', 'running');
create index dispatches_deadline_active on dispatches (deadline)
    where state in ('queued', 'sent', 'running');
create index dispatches_created_at on dispatches (created_at desc, id desc);

create table dispatch_output (
    dispatch_id  text   not null references dispatches (id) on delete cascade,
    "offset"     bigint not null,
    stream       text   not null,
    data         bytea  not null,
    primary key (dispatch_id, "offset"),
    constraint dispatch_output_stream check (stream in ('stdout', 'stderr'))
);

-- A dispatch moves forward only: queued to sent, cancelled or timed_out; sent to sent
-- again (a new session), running or an end; running to running again (a new session)
-- or an end; an end never moves.
-- +goose StatementBegin
create function dispatches_transition() returns trigger language plpgsql as $$
begin
    if new.state = old.state and old.state not in ('succeeded', 'failed', 'timed_out', 'cancelled') then
        return new;
    end if;
    if (old.state = 'queued' and new.state in ('sent', 'cancelled', 'timed_out'))
       or (old.state = 'sent' and new.state in ('running', 'succeeded', 'failed', 'timed_out', 'cancelled'))
       or (old.state = 'running' and new.state in ('succeeded', 'failed', 'timed_out', 'cancelled')) then
        return new;
    end if;
    raise exception 'dispatch %: % cannot become %', old.id, old.state, new.state
        using errcode = 'check_violation', constraint = 'dispatches_transition';
end;
$$;
-- +goose StatementEnd

create trigger dispatches_transition
    before update on dispatches
    for each row execute function dispatches_transition();

-- Every replica learns of new dispatches (to deliver those of the devices it holds),
-- of cancellations and of changes of state (to answer watches), on commit:
-- payload "<device id> <dispatch id> <event>", event one of queued, state, cancel.
-- +goose StatementBegin
create function notify_dispatch() returns trigger language plpgsql as $$
begin
    if tg_op = 'INSERT' then
        perform pg_notify('palyra_dispatch', new.device_id || ' ' || new.id || ' queued');
    elsif new.state is distinct from old.state then
        perform pg_notify('palyra_dispatch', new.device_id || ' ' || new.id || ' state');
    elsif new.cancel_requested_at is distinct from old.cancel_requested_at then
        perform pg_notify('palyra_dispatch', new.device_id || ' ' || new.id || ' cancel');
    end if;
    return null;
end;
$$;
-- +goose StatementEnd

create trigger dispatches_notify
    after insert or update on dispatches
    for each row execute function notify_dispatch();

-- Watchers of a dispatch's output, on any replica: payload "<dispatch id>" (identical
-- payloads in one transaction are delivered once).
-- +goose StatementBegin
create function notify_dispatch_output() returns trigger language plpgsql as $$
begin
    perform pg_notify('palyra_dispatch_output', new.dispatch_id);
    return null;
end;
$$;
-- +goose StatementEnd

create trigger dispatch_output_notify
    after insert on dispatch_output
    for each row execute function notify_dispatch_output();

-- A device attaching on one replica ends its older session on any other:
-- payload "<device id> <session id>".
-- +goose StatementBegin
create function notify_session() returns trigger language plpgsql as $$
begin
    perform pg_notify('palyra_sessions', new.id || ' ' || coalesce(new.session_id, ''));
    return null;
end;
$$;
-- +goose StatementEnd

create trigger devices_notify_session
    after update of session_id on devices
    for each row when (new.session_id is distinct from old.session_id)
    execute function notify_session();

-- +goose Down
drop trigger devices_notify_session on devices;
drop function notify_session;
drop trigger dispatch_output_notify on dispatch_output;
drop function notify_dispatch_output;
drop table dispatch_output;
drop table dispatches;
drop function notify_dispatch;
drop function dispatches_transition;
alter table devices
    drop constraint devices_reported_labels_object,
    drop constraint devices_capabilities_array,
    drop constraint devices_session,
    drop column last_seen_at,
    drop column attached_at,
    drop column attached_replica,
    drop column session_id,
    drop column protocol_version,
    drop column capabilities,
    drop column reported_labels;
