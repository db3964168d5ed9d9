-- Every replica keeps the API tokens it has verified in memory for a few seconds, so
-- that a call with a bearer token need not read the token's row. This trigger tells all
-- of them, through NOTIFY on commit, which token changed in a way that matters to
-- authentication (revoked, its expiry, secret, role, scopes or user changed), so that
-- they forget it at once. The rate limiter's columns (rate_tat, last_used_at) do not
-- notify: they change on every lease of calls. palyrad never deletes a token; a delete
-- by hand is announced too. Payload: the token id.

-- +goose Up
-- +goose StatementBegin
create function notify_token() returns trigger language plpgsql as $$
begin
    if tg_op = 'DELETE' then
        perform pg_notify('palyra_tokens', old.id);
    else
        perform pg_notify('palyra_tokens', new.id);
    end if;
    return null;
end;
$$;
-- +goose StatementEnd

create trigger api_tokens_notify
    after update of revoked_at, expires_at, secret_hash, role, scopes, user_id on api_tokens
    for each row when (new.revoked_at is distinct from old.revoked_at
                       or new.expires_at is distinct from old.expires_at
                       or new.secret_hash is distinct from old.secret_hash
                       or new.role is distinct from old.role
                       or new.scopes is distinct from old.scopes
                       or new.user_id is distinct from old.user_id)
    execute function notify_token();

create trigger api_tokens_notify_delete
    after delete on api_tokens
    for each row execute function notify_token();

-- +goose Down
drop trigger api_tokens_notify_delete on api_tokens;
drop trigger api_tokens_notify on api_tokens;
drop function notify_token;
