-- Usage and budgets of the OpenAI-compatible API (server/internal/compat).
--
-- compat_usage: the tokens every chat completion, response and embedding consumed, as
-- the provider reported them, summed per API token, UTC day, model (as the client named
-- it) and provider: one row upserted at the end of each call that used tokens, in the
-- statement that also commits the call's audit outbox row. It holds counts only, never a
-- prompt or an answer.
--
-- api_tokens.daily_token_budget: the prompt plus completion tokens a token may use per
-- UTC day across all models; null means no budget. Every replica caches the tokens it
-- authenticates, with their budget: a change of the budget is announced on
-- palyra_tokens like the other changes that matter to authentication.

-- +goose Up
alter table api_tokens add column daily_token_budget bigint,
    add constraint api_tokens_daily_token_budget_positive check (daily_token_budget > 0);

create table compat_usage (
    token_id           text   not null references api_tokens (id),
    day                date   not null,
    model              text   not null,
    provider           text   not null,
    requests           bigint not null,
    prompt_tokens      bigint not null,
    completion_tokens  bigint not null,
    primary key (token_id, day, model, provider),
    constraint compat_usage_counts check (requests > 0 and prompt_tokens >= 0 and completion_tokens >= 0)
);

create index compat_usage_day on compat_usage (day);

drop trigger api_tokens_notify on api_tokens;
create trigger api_tokens_notify
    after update of revoked_at, expires_at, secret_hash, role, scopes, user_id, daily_token_budget on api_tokens
    for each row when (new.revoked_at is distinct from old.revoked_at
                       or new.expires_at is distinct from old.expires_at
                       or new.secret_hash is distinct from old.secret_hash
                       or new.role is distinct from old.role
                       or new.scopes is distinct from old.scopes
                       or new.user_id is distinct from old.user_id
                       or new.daily_token_budget is distinct from old.daily_token_budget)
    execute function notify_token();

-- +goose Down
drop trigger api_tokens_notify on api_tokens;
create trigger api_tokens_notify
    after update of revoked_at, expires_at, secret_hash, role, scopes, user_id on api_tokens
    for each row when (new.revoked_at is distinct from old.revoked_at
                       or new.expires_at is distinct from old.expires_at
                       or new.secret_hash is distinct from old.secret_hash
                       or new.role is distinct from old.role
                       or new.scopes is distinct from old.scopes
                       or new.user_id is distinct from old.user_id)
    execute function notify_token();
drop table compat_usage;
alter table api_tokens drop column daily_token_budget;
