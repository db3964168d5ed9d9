-- name: InsertUserIfMissing :one
-- Creates the user unless one of that name exists; returns no row when it did.
insert into users (id, name, role)
values (sqlc.arg('id'), sqlc.arg('name'), sqlc.arg('role'))
on conflict (name) do nothing
returning *;

-- name: GetUserByName :one
select * from users where name = sqlc.arg('name');

-- name: InsertToken :one
insert into api_tokens (
    id, label, user_id, role, scopes, secret_hash, rate_limit_per_minute, created_by,
    expires_at, rotated_from, daily_token_budget
) values (
    sqlc.arg('id'), sqlc.arg('label'), sqlc.arg('user_id'), sqlc.arg('role'), sqlc.arg('scopes'),
    sqlc.arg('secret_hash'), sqlc.arg('rate_limit_per_minute'), sqlc.arg('created_by'),
    sqlc.narg('expires_at'), sqlc.narg('rotated_from'), sqlc.narg('daily_token_budget')
)
returning *;

-- name: GetToken :one
-- A token with its user's name and the token that replaced it by rotation, if any.
select sqlc.embed(t), u.name as user_name,
       coalesce((select r.id from api_tokens r where r.rotated_from = t.id), '')::text as rotated_to
from api_tokens t
join users u on u.id = t.user_id
where t.id = sqlc.arg('id');

-- name: ListTokens :many
-- Newest first, after the cursor (created_at, id) when one is given, filtered by the
-- state computed at sqlc.arg('now').
select sqlc.embed(t), u.name as user_name,
       coalesce((select r.id from api_tokens r where r.rotated_from = t.id), '')::text as rotated_to
from api_tokens t
join users u on u.id = t.user_id
where (sqlc.narg('after_created_at')::timestamptz is null
       or (t.created_at, t.id) < (sqlc.narg('after_created_at')::timestamptz, sqlc.arg('after_id')::text))
  and (sqlc.arg('state')::text = ''
       or sqlc.arg('state')::text = case
            when t.revoked_at is not null then 'revoked'
            when t.expires_at <= sqlc.arg('now')::timestamptz then 'expired'
            else 'active' end)
order by t.created_at desc, t.id desc
limit sqlc.arg('page_limit');

-- name: RevokeToken :one
-- Revokes a token that is not revoked yet; returns no row otherwise.
update api_tokens
set revoked_at = coalesce(sqlc.narg('now')::timestamptz, clock_timestamp()),
    revoked_reason = sqlc.arg('reason')
where id = sqlc.arg('id') and revoked_at is null
returning *;

-- name: TakeTokenCalls :one
-- Admits up to sqlc.arg('n') calls of the token at once under its rate limit, and
-- records the use. The limit is the generic cell rate algorithm: every call moves the
-- theoretical arrival time rate_tat on by 60/rate seconds from the later of itself and
-- now, and calls are admitted while it stays within one minute of now (a burst of one
-- minute's allowance). It grants the most of n that fit; it rounds the time they use up
-- to the next microsecond, so that rounding never admits more. Granting none uses up no
-- allowance, and retry_after_seconds then says when the next call would fit.
with cur as (
    select id,
           rate_limit_per_minute as rate,
           coalesce(sqlc.narg('now')::timestamptz, clock_timestamp()) as at,
           greatest(rate_tat, coalesce(sqlc.narg('now')::timestamptz, clock_timestamp())) as base
    from api_tokens
    where api_tokens.id = sqlc.arg('id')
    for update
), fit as (
    select cur.*,
           greatest(least(sqlc.arg('n')::integer,
                          floor(extract(epoch from cur.at + interval '1 minute' - cur.base) * cur.rate / 60)), 0)::integer as granted
    from cur
)
update api_tokens t
set rate_tat = case when fit.granted > 0
                    then fit.base + make_interval(secs => ceil(fit.granted * 60000000.0 / fit.rate)::float8 / 1000000)
                    else t.rate_tat end,
    last_used_at = fit.at
from fit
where t.id = fit.id
returning fit.granted::integer as granted,
          (case when fit.granted > 0 then 0
                else greatest(extract(epoch from fit.base - fit.at - interval '1 minute') + 60.0 / fit.rate, 0) end)::float8 as retry_after_seconds,
          fit.rate::integer as rate_limit_per_minute;

-- name: SetTokenBudget :one
-- Sets (or, with null, removes) the daily token budget of a token that is not revoked;
-- returns no row otherwise.
update api_tokens
set daily_token_budget = sqlc.narg('daily_token_budget')
where id = sqlc.arg('id') and revoked_at is null
returning id;
