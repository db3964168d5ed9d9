-- The secrets vault (server/internal/vault): named secrets with numbered versions under
-- envelope encryption. No value is ever stored in clear: a version holds its value
-- sealed under a data key of its own (AES-256-GCM), and that data key wrapped under a
-- key derived from a master key, whose id (kek_id) the row names. The associated data
-- of both seals binds the secret's id and name and the version number, so that neither
-- can be moved to another row.

-- +goose Up
create table secrets (
    id              text        primary key,
    -- Unique among all secrets, deleted ones included: a deleted secret keeps its name
    -- until it is restored.
    name            text        not null,
    description     text        not null default '',
    labels          jsonb       not null default '{}',
    -- The newest version's number; versions are 1, 2, ... without gaps.
    latest_version  bigint      not null,
    created_at      timestamptz not null,
    created_by      text        not null,
    updated_at      timestamptz not null,
    updated_by      text        not null,
    deleted_at      timestamptz,
    deleted_by      text,
    last_read_at    timestamptz,
    last_read_by    text,
    constraint secrets_name_unique unique (name),
    constraint secrets_name check (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$'),
    constraint secrets_latest_version check (latest_version >= 1),
    constraint secrets_labels check (jsonb_typeof(labels) = 'object'),
    constraint secrets_deleted check ((deleted_at is null) = (deleted_by is null))
);

create index secrets_created_at on secrets (created_at desc, id desc);

create table secret_versions (
    secret_id         text        not null references secrets (id),
    version           bigint      not null,
    created_at        timestamptz not null,
    created_by        text        not null,
    -- The key-encryption key the data key is wrapped under (identity.KeyEncryptionKey.ID).
    kek_id            text,
    data_key_nonce    bytea,
    wrapped_data_key  bytea,
    value_nonce       bytea,
    ciphertext        bytea,
    destroyed_at      timestamptz,
    destroyed_by      text,
    primary key (secret_id, version),
    constraint secret_versions_version check (version >= 1),
    -- A version holds its sealed value and wrapped key until it is destroyed, and
    -- nothing of them after.
    constraint secret_versions_sealed check (
        (destroyed_at is null) = (kek_id is not null and data_key_nonce is not null and wrapped_data_key is not null
                                  and value_nonce is not null and ciphertext is not null)
        and (destroyed_at is null or (kek_id is null and data_key_nonce is null and wrapped_data_key is null
                                      and value_nonce is null and ciphertext is null))
        and (destroyed_at is null) = (destroyed_by is null))
);

create index secret_versions_kek_id on secret_versions (kek_id) where kek_id is not null;

-- A version's sealed value never changes (a master key rotation re-wraps the data key,
-- never the data), and a destroyed version stays destroyed, whoever writes.
-- +goose StatementBegin
create function secret_versions_immutable() returns trigger language plpgsql as $$
begin
    if old.destroyed_at is not null and new is distinct from old then
        raise exception 'secret %: version % is destroyed', old.secret_id, old.version
            using errcode = 'check_violation', constraint = 'secret_versions_immutable';
    end if;
    if new.destroyed_at is null and (new.ciphertext is distinct from old.ciphertext
                                     or new.value_nonce is distinct from old.value_nonce) then
        raise exception 'secret %: the sealed value of version % never changes', old.secret_id, old.version
            using errcode = 'check_violation', constraint = 'secret_versions_immutable';
    end if;
    return new;
end;
$$;
-- +goose StatementEnd

create trigger secret_versions_immutable
    before update on secret_versions
    for each row execute function secret_versions_immutable();

-- +goose Down
drop table secret_versions;
drop function secret_versions_immutable();
drop table secrets;
