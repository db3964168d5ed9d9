-- The audit log's outbox, and the second format of its events (server/internal/audit).
--
-- A call that changes state writes its event's row in audit_outbox in the same
-- transaction as its first change; the event moves into audit_events when the call
-- ends (the row deleted by the same statement that inserts the event), or, when the
-- replica dies or the database goes away first, later, by any replica's drainer. So no
-- change commits without its audit record. A replica is alive while its session holds
-- the advisory lock of its replica id (LockAuditReplica in sqlc/queries/audit.sql).
--
-- Format 2 events add which replica recorded them, who chose the request id, and the
-- summaries of refusals (one row standing for many). Format 1 rows keep verifying
-- against the first formula: the new columns hold their defaults for them, and the
-- format column says which formula hashes a row.

-- +goose Up
alter table audit_events
    add column format             smallint    not null default 1,
    add column replica_id         text        not null default '',
    add column request_id_source  text        not null default '',
    -- A summary's number of refusals, the first one's time (occurred_at is the last's)
    -- and the procedures refused, sorted and comma-separated; 0, null and '' otherwise.
    add column summarized         bigint      not null default 0,
    add column first_at           timestamptz,
    add column procedures         text        not null default '',
    add constraint audit_events_format check (format in (1, 2)),
    add constraint audit_events_request_id_source check (request_id_source in ('', 'client', 'replica')),
    add constraint audit_events_summary check ((summarized = 0) = (first_at is null) and summarized >= 0);
-- Existing rows are format 1; every new row names its format.
alter table audit_events alter column format drop default;

create table audit_outbox (
    -- The id the event will have in audit_events.
    id                 text        primary key,
    -- The replica whose call (or background decision) wrote it.
    replica_id         text        not null,
    recorded_at        timestamptz not null,
    principal          text        not null,
    procedure          text        not null,
    target             text        not null,
    -- What the drainer writes when the row outlives its call: for a call, success and
    -- 'committed' (the change committed; how the call ended is not known).
    outcome            text        not null,
    code               text        not null,
    remote_address     text        not null,
    request_id         text        not null,
    request_id_source  text        not null,
    constraint audit_outbox_outcome check (outcome in ('success', 'failure'))
);

create index audit_outbox_replica on audit_outbox (replica_id, recorded_at);

-- +goose Down
drop table audit_outbox;
alter table audit_events
    drop constraint audit_events_summary,
    drop constraint audit_events_request_id_source,
    drop constraint audit_events_format,
    drop column procedures,
    drop column first_at,
    drop column summarized,
    drop column request_id_source,
    drop column replica_id,
    drop column format;
