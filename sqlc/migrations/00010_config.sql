-- The live configuration (server/internal/liveconfig): the values of runtime settings
-- stored in the database, and their history as numbered revisions.
--
-- Every change is a revision: one row of config_revisions (who, why, when, and the
-- revision it rolled back to, if it did), one row of config_changes per key it set or
-- unset with the database value before and after, and the new current values in
-- config_values. Revisions are numbered 1, 2, 3, ... under an advisory lock
-- (LockConfig), so a change that expected revision n commits only while n is the
-- newest. A key without a row in config_values has its file, flag, environment or
-- default value. Values are JSON: a string, or an array of strings for list settings.
--
-- A trigger announces every revision on the channel palyra_config at commit; every
-- replica reloads the values then (and whenever its LISTEN connection reconnects).

-- +goose Up
create table config_revisions (
    revision    bigint      primary key,
    created_at  timestamptz not null,
    actor       text        not null,
    reason      text        not null,
    -- The revision whose state this one restored; null when it is no rollback.
    rollback_of bigint      references config_revisions (revision),
    constraint config_revisions_positive check (revision > 0),
    constraint config_revisions_rollback_earlier check (rollback_of < revision)
);

create table config_changes (
    revision  bigint not null references config_revisions (revision),
    key       text   not null,
    op        text   not null,
    -- The database values before and after; null when the key had none.
    old_value jsonb,
    new_value jsonb,
    primary key (revision, key),
    constraint config_changes_op check (op in ('set', 'unset') and (op = 'set') = (new_value is not null))
);

create table config_values (
    key      text   primary key,
    value    jsonb  not null,
    -- The revision that set it.
    revision bigint not null references config_revisions (revision)
);

-- +goose StatementBegin
create function notify_config() returns trigger language plpgsql as $$
begin
    perform pg_notify('palyra_config', new.revision::text);
    return null;
end;
$$;
-- +goose StatementEnd

create trigger config_revisions_notify
    after insert on config_revisions
    for each row execute function notify_config();

-- +goose Down
drop trigger config_revisions_notify on config_revisions;
drop function notify_config;
drop table config_values;
drop table config_changes;
drop table config_revisions;
