-- Browser profiles and their sealed states (server/internal/browser). Times come from
-- the caller's clock.

-- name: InsertBrowserProfile :one
insert into browser_profiles (id, name, description, user_agent, viewport_width, viewport_height, locale, time_zone,
                              proxy, allowed_domains, labels, revision, created_at, created_by, updated_at, updated_by)
values (sqlc.arg('id'), sqlc.arg('name'), sqlc.arg('description'), sqlc.arg('user_agent'), sqlc.arg('viewport_width'),
        sqlc.arg('viewport_height'), sqlc.arg('locale'), sqlc.arg('time_zone'), sqlc.arg('proxy'),
        sqlc.arg('allowed_domains'), sqlc.arg('labels'), 1, sqlc.arg('now'), sqlc.arg('by'), sqlc.arg('now'), sqlc.arg('by'))
returning *;

-- name: GetBrowserProfileByID :one
select * from browser_profiles where id = sqlc.arg('id');

-- name: GetBrowserProfileByName :one
select * from browser_profiles where name = sqlc.arg('name');

-- name: LockBrowserProfileByID :one
-- The profile, locked for the rest of the transaction: every change of a profile or of
-- its states takes this lock first, so that its revisions and versions follow each other.
select * from browser_profiles where id = sqlc.arg('id') for update;

-- name: LockBrowserProfileByName :one
select * from browser_profiles where name = sqlc.arg('name') for update;

-- name: ListBrowserProfiles :many
-- By name, after the cursor when one is given.
select * from browser_profiles
where sqlc.arg('after_name')::text = '' or name > sqlc.arg('after_name')::text
order by name
limit sqlc.arg('max_rows');

-- name: UpdateBrowserProfile :one
-- The profile's new definition as its next revision.
update browser_profiles
set name = sqlc.arg('name'), description = sqlc.arg('description'), user_agent = sqlc.arg('user_agent'),
    viewport_width = sqlc.arg('viewport_width'), viewport_height = sqlc.arg('viewport_height'),
    locale = sqlc.arg('locale'), time_zone = sqlc.arg('time_zone'), proxy = sqlc.arg('proxy'),
    allowed_domains = sqlc.arg('allowed_domains'), labels = sqlc.arg('labels'), revision = revision + 1,
    updated_at = sqlc.arg('now'), updated_by = sqlc.arg('by')
where id = sqlc.arg('id')
returning *;

-- name: DeleteBrowserProfile :exec
-- Its states go with it (on delete cascade).
delete from browser_profiles where id = sqlc.arg('id');

-- name: BrowserProfileStateInfo :many
-- The newest state's version, time and size, of each profile of ids.
select distinct on (profile_id) profile_id, version, saved_at, size_bytes
from browser_profile_states
where profile_id = any(sqlc.arg('ids')::text[])
order by profile_id, version desc;

-- name: GetNewestBrowserProfileState :one
select * from browser_profile_states
where profile_id = sqlc.arg('profile_id')
order by version desc
limit 1;

-- name: NextBrowserProfileStateVersion :one
-- Takes the next state version number of a locked profile.
update browser_profiles set last_state_version = last_state_version + 1
where id = sqlc.arg('id')
returning last_state_version;

-- name: InsertBrowserProfileState :execrows
-- A new sealed state; nothing when the dispatch saved one already.
insert into browser_profile_states (profile_id, version, dispatch_id, saved_at, size_bytes, kek_id, data_key_nonce,
                                    wrapped_data_key, value_nonce, ciphertext)
values (sqlc.arg('profile_id'), sqlc.arg('version'), sqlc.arg('dispatch_id'), sqlc.arg('now'), sqlc.arg('size_bytes'),
        sqlc.arg('kek_id'), sqlc.arg('data_key_nonce'), sqlc.arg('wrapped_data_key'), sqlc.arg('value_nonce'),
        sqlc.arg('ciphertext'))
on conflict (profile_id, dispatch_id) do nothing;

-- name: GetBrowserProfileStateByDispatch :one
select version from browser_profile_states
where profile_id = sqlc.arg('profile_id') and dispatch_id = sqlc.arg('dispatch_id');

-- name: PruneBrowserProfileStates :execrows
-- Drops the versions of a profile but its keep newest.
delete from browser_profile_states s
where s.profile_id = sqlc.arg('profile_id')
  and s.version not in (select k.version from browser_profile_states k
                        where k.profile_id = sqlc.arg('profile_id')
                        order by k.version desc
                        limit sqlc.arg('keep')::integer);

-- name: DeleteBrowserProfileStates :execrows
delete from browser_profile_states where profile_id = sqlc.arg('profile_id');

-- name: CountBrowserStateKeysByKEK :many
-- How many data keys each key-encryption key wraps.
select kek_id, count(*)::bigint as keys
from browser_profile_states
group by kek_id
order by kek_id;

-- name: LockBrowserStateKeysToRewrap :many
-- Up to page_limit data keys wrapped under another key-encryption key than kek_id,
-- locked until the transaction ends, for a master key rotation to re-wrap.
select profile_id, version, kek_id, data_key_nonce, wrapped_data_key
from browser_profile_states
where kek_id <> sqlc.arg('kek_id')::text
order by profile_id, version
limit sqlc.arg('page_limit')
for update;

-- name: RewrapBrowserStateKey :execrows
-- Replaces a version's wrapped data key, if it is still wrapped under from_kek_id.
update browser_profile_states
set kek_id = sqlc.arg('to_kek_id')::text, data_key_nonce = sqlc.arg('data_key_nonce'),
    wrapped_data_key = sqlc.arg('wrapped_data_key')
where profile_id = sqlc.arg('profile_id') and version = sqlc.arg('version') and kek_id = sqlc.arg('from_kek_id')::text;

-- name: LockBrowserProxyReferences :exec
-- Serialises, until the transaction ends, the checks of the profiles' proxy references
-- with the vault's look for them (a secret being deleted or destroyed).
select pg_advisory_xact_lock(hashtext('palyra/browser_profiles/proxy'));

-- name: ListBrowserProfileProxies :many
-- The profiles with a proxy, and its secret reference.
select name, proxy from browser_profiles where proxy <> '' order by name;
