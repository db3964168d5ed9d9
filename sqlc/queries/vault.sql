-- The secrets vault (server/internal/vault). Times come from the caller's clock.

-- name: LockSecretByName :one
-- The secret named, locked for the rest of the transaction: every change of a secret
-- takes this lock first, so that versions are numbered without gaps or races.
select * from secrets where name = sqlc.arg('name') for update;

-- name: GetSecretByName :one
select * from secrets where name = sqlc.arg('name');

-- name: InsertSecret :one
insert into secrets (id, name, description, labels, latest_version, created_at, created_by, updated_at, updated_by)
values (sqlc.arg('id'), sqlc.arg('name'), sqlc.arg('description'), sqlc.arg('labels'), 1,
        sqlc.arg('now'), sqlc.arg('by'), sqlc.arg('now'), sqlc.arg('by'))
returning *;

-- name: UpdateSecretForPut :one
update secrets
set latest_version = latest_version + 1, description = sqlc.arg('description'), labels = sqlc.arg('labels'),
    updated_at = sqlc.arg('now'), updated_by = sqlc.arg('by')
where id = sqlc.arg('id')
returning *;

-- name: InsertSecretVersion :exec
insert into secret_versions (secret_id, version, created_at, created_by, kek_id, data_key_nonce, wrapped_data_key,
                             value_nonce, ciphertext)
values (sqlc.arg('secret_id'), sqlc.arg('version'), sqlc.arg('now'), sqlc.arg('by'), sqlc.arg('kek_id'),
        sqlc.arg('data_key_nonce'), sqlc.arg('wrapped_data_key'), sqlc.arg('value_nonce'), sqlc.arg('ciphertext'));

-- name: ListSecrets :many
-- Newest first, after the cursor (created_at, id) when one is given.
select * from secrets
where (sqlc.narg('after_created_at')::timestamptz is null
       or (created_at, id) < (sqlc.narg('after_created_at')::timestamptz, sqlc.arg('after_id')::text))
  and (sqlc.arg('include_deleted')::boolean or deleted_at is null)
order by created_at desc, id desc
limit sqlc.arg('max_rows');

-- name: ListSecretVersions :many
-- A secret's versions, newest first, without their sealed values.
select version, created_at, created_by, kek_id, destroyed_at, destroyed_by
from secret_versions
where secret_id = sqlc.arg('secret_id')
order by version desc;

-- name: GetSealedSecretVersion :one
select * from secret_versions where secret_id = sqlc.arg('secret_id') and version = sqlc.arg('version');

-- name: MarkSecretRead :exec
update secrets set last_read_at = sqlc.arg('now')::timestamptz, last_read_by = sqlc.arg('by')::text where id = sqlc.arg('id');

-- name: SetSecretDeleted :one
-- Deletes (deleted_by given) or restores (deleted_by null) a secret.
update secrets
set deleted_at = case when sqlc.narg('deleted_by')::text is null then null else sqlc.arg('now')::timestamptz end,
    deleted_by = sqlc.narg('deleted_by')
where id = sqlc.arg('id')
returning *;

-- name: DestroySecretVersion :execrows
update secret_versions
set destroyed_at = sqlc.arg('now')::timestamptz, destroyed_by = sqlc.arg('by')::text,
    kek_id = null, data_key_nonce = null, wrapped_data_key = null, value_nonce = null, ciphertext = null
where secret_id = sqlc.arg('secret_id') and version = sqlc.arg('version') and destroyed_at is null;

-- name: CountDataKeysByKEK :many
-- How many data keys each key-encryption key wraps (destroyed versions have none).
select kek_id::text as kek_id, count(*)::bigint as keys
from secret_versions
where kek_id is not null
group by kek_id
order by kek_id;

-- name: LockDataKeysToRewrap :many
-- Up to page_limit data keys wrapped under another key-encryption key than kek_id,
-- locked until the transaction ends, for a master key rotation to re-wrap.
select v.secret_id, v.version, s.name, v.kek_id::text as kek_id, v.data_key_nonce, v.wrapped_data_key
from secret_versions v
join secrets s on s.id = v.secret_id
where v.kek_id <> sqlc.arg('kek_id')::text
order by v.secret_id, v.version
limit sqlc.arg('page_limit')
for update of v;

-- name: RewrapDataKey :execrows
-- Replaces a version's wrapped data key, if it is still wrapped under from_kek_id.
update secret_versions
set kek_id = sqlc.arg('to_kek_id')::text, data_key_nonce = sqlc.arg('data_key_nonce'),
    wrapped_data_key = sqlc.arg('wrapped_data_key')
where secret_id = sqlc.arg('secret_id') and version = sqlc.arg('version') and kek_id = sqlc.arg('from_kek_id')::text;
