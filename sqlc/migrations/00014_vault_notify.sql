-- Every replica keeps, per secret reference it resolved (an upstream provider's API
-- key), the sealed version it resolved to, so that a repeated resolution reads nothing
-- (server/internal/vault/resolvecache.go). These triggers tell all of them, through
-- NOTIFY on commit, which secret changed, so that they forget its references at once:
-- any insert, update or delete of a secret or of one of its versions (put, delete,
-- restore, destroy, a re-wrap by a master key rotation, an edit by hand), except the
-- stamp of a reveal (last_read_at, last_read_by), which changes no value. Payload: the
-- secret's name.

-- +goose Up
-- +goose StatementBegin
create function notify_secret() returns trigger language plpgsql as $$
begin
    if tg_op = 'UPDATE' and (to_jsonb(new) - 'last_read_at' - 'last_read_by')
                            = (to_jsonb(old) - 'last_read_at' - 'last_read_by') then
        return null;
    end if;
    if tg_op = 'DELETE' then
        perform pg_notify('palyra_secrets', old.name);
    else
        perform pg_notify('palyra_secrets', new.name);
    end if;
    return null;
end;
$$;
-- +goose StatementEnd

-- +goose StatementBegin
create function notify_secret_version() returns trigger language plpgsql as $$
declare
    sid text := case when tg_op = 'DELETE' then old.secret_id else new.secret_id end;
    secret_name text;
begin
    select s.name into secret_name from secrets s where s.id = sid;
    if secret_name is not null then
        perform pg_notify('palyra_secrets', secret_name);
    end if;
    return null;
end;
$$;
-- +goose StatementEnd

create trigger secrets_notify
    after insert or update or delete on secrets
    for each row execute function notify_secret();

create trigger secret_versions_notify
    after insert or update or delete on secret_versions
    for each row execute function notify_secret_version();

-- +goose Down
drop trigger secret_versions_notify on secret_versions;
drop trigger secrets_notify on secrets;
drop function notify_secret_version;
drop function notify_secret;
