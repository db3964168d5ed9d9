-- Master key rotation (server/internal/masterkey).
--
-- replicas: every palyrad sharing the database reports itself at start and every few
-- seconds: its version, host name and the IDs of the key-encryption keys its master
-- keys give it, the primary first. A re-wrap to a new primary is refused while a live
-- replica lacks it, so that no replica is left unable to read what the re-wrap seals.
-- A replica is live while it has not stopped and its session holds its audit lock
-- (LockAuditReplica) or it reported recently.
--
-- master_key_rewraps: the history of re-wraps, one row each, written first by the
-- re-wrap and completed by it.
--
-- A change of the key-encryption key that seals a CA's key is announced on
-- palyra_master_key (payload: the authority id), so that every replica learns at once
-- whether it can still open the CA.

-- +goose Up
create table replicas (
    id              text        primary key,
    hostname        text        not null,
    version         text        not null,
    -- The IDs of the replica's key-encryption keys, its primary first.
    kek_ids         text[]      not null,
    started_at      timestamptz not null,
    last_seen_at    timestamptz not null,
    stopped_at      timestamptz,
    constraint replicas_kek_ids_not_empty check (cardinality(kek_ids) >= 1)
);

create table master_key_rewraps (
    id              text        primary key,
    -- The key-encryption key every wrapped key was re-wrapped to.
    kek_id          text        not null,
    started_by      text        not null,
    replica_id      text        not null,
    started_at      timestamptz not null,
    finished_at     timestamptz,
    -- How many wrapped keys were re-wrapped; set when finished.
    rewrapped       bigint      not null default 0,
    constraint master_key_rewraps_rewrapped check (rewrapped >= 0)
);

create index master_key_rewraps_started_at on master_key_rewraps (started_at desc);

-- +goose StatementBegin
create function notify_authority_kek() returns trigger language plpgsql as $$
begin
    perform pg_notify('palyra_master_key', new.id);
    return null;
end;
$$;
-- +goose StatementEnd

create trigger certificate_authorities_notify_kek
    after update of kek_id on certificate_authorities
    for each row when (new.kek_id is distinct from old.kek_id)
    execute function notify_authority_kek();

-- +goose Down
drop trigger certificate_authorities_notify_kek on certificate_authorities;
drop function notify_authority_kek;
drop table master_key_rewraps;
drop table replicas;
