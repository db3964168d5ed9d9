-- name: InsertSession :one
insert into sessions (id, token_id, secret_hash, csrf_hash, expires_at)
values (sqlc.arg('id'), sqlc.arg('token_id'), sqlc.arg('secret_hash'), sqlc.arg('csrf_hash'), sqlc.arg('expires_at'))
returning *;

-- name: GetSession :one
select * from sessions where id = sqlc.arg('id');

-- name: TouchSession :one
-- Slides a live session's expiry; returns no row when it has ended or expired.
update sessions
set last_seen_at = sqlc.arg('now'),
    expires_at = sqlc.arg('expires_at')
where id = sqlc.arg('id') and ended_at is null and expires_at > sqlc.arg('now')
returning *;

-- name: EndSession :execrows
update sessions
set ended_at = coalesce(sqlc.narg('now')::timestamptz, clock_timestamp())
where id = sqlc.arg('id') and ended_at is null;

-- name: EndTokenSessions :execrows
update sessions
set ended_at = coalesce(sqlc.narg('now')::timestamptz, clock_timestamp())
where token_id = sqlc.arg('token_id') and ended_at is null;

-- name: ClaimHandoff :one
-- Turns an unclaimed, unexpired hand-off into a session: its secret and CSRF hashes
-- are replaced only while they still hold the hand-off's, so a code is claimed once.
update sessions
set secret_hash = sqlc.arg('secret_hash'),
    csrf_hash = sqlc.arg('csrf_hash'),
    expires_at = sqlc.arg('expires_at'),
    last_seen_at = sqlc.arg('now')
where id = sqlc.arg('id') and secret_hash = sqlc.arg('handoff_hash')
  and ended_at is null and expires_at > sqlc.arg('now')
returning *;
