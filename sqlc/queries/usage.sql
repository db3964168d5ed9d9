-- name: RecordUsage :exec
-- Adds one call's tokens to its token's row of the day, model and provider.
insert into compat_usage (token_id, day, model, provider, requests, prompt_tokens, completion_tokens)
values (sqlc.arg('token_id'), sqlc.arg('day'), sqlc.arg('model'), sqlc.arg('provider'), 1,
        sqlc.arg('prompt_tokens'), sqlc.arg('completion_tokens'))
on conflict (token_id, day, model, provider) do update
set requests = compat_usage.requests + 1,
    prompt_tokens = compat_usage.prompt_tokens + excluded.prompt_tokens,
    completion_tokens = compat_usage.completion_tokens + excluded.completion_tokens;

-- name: SpentOn :one
-- The prompt plus completion tokens a token used on a day, across all models.
select coalesce(sum(prompt_tokens + completion_tokens), 0)::bigint as spent
from compat_usage
where token_id = sqlc.arg('token_id') and day = sqlc.arg('day');

-- name: ListUsage :many
-- The usage rows from a day on, of one token or ('') of all, by day, token, model and
-- provider.
select token_id, day, model, provider, requests, prompt_tokens, completion_tokens
from compat_usage
where day >= sqlc.arg('since')
  and (sqlc.arg('token_id')::text = '' or token_id = sqlc.arg('token_id')::text)
order by day, token_id, model, provider;

-- name: UsageTokens :many
-- The label and budget of the tokens named, and what each used on a day.
select t.id, t.label, t.daily_token_budget,
       coalesce((select sum(u.prompt_tokens + u.completion_tokens) from compat_usage u
                 where u.token_id = t.id and u.day = sqlc.arg('day')), 0)::bigint as spent
from api_tokens t
where t.id = any(sqlc.arg('ids')::text[])
order by t.id;
