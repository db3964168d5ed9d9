-- name: AttachDevice :one
-- Records a new Attach session of a device (replacing any earlier one, on any replica)
-- and what its hello said.
update devices
set session_id = sqlc.arg('session_id')::text, attached_replica = sqlc.arg('replica_id')::text,
    attached_at = sqlc.arg('now')::timestamptz, last_seen_at = sqlc.arg('now')::timestamptz,
    platform = sqlc.arg('platform'), agent_version = sqlc.arg('agent_version'),
    protocol_version = sqlc.arg('protocol_version'), capabilities = sqlc.arg('capabilities'),
    reported_labels = sqlc.arg('reported_labels'), updated_at = sqlc.arg('now')::timestamptz
where id = sqlc.arg('id') and revoked_at is null
returning *;

-- name: DetachDevice :execrows
-- Ends a session, unless a newer one replaced it.
update devices
set session_id = null, attached_replica = null, last_seen_at = sqlc.arg('now')::timestamptz
where id = sqlc.arg('id') and session_id = sqlc.arg('session_id')::text;

-- name: DetachReplica :execrows
-- Ends every session a replica held: at its start (a killed replica leaves them behind;
-- now is null and the last-seen times stay), and when it stops (now is the time).
update devices
set session_id = null, attached_replica = null,
    last_seen_at = coalesce(sqlc.narg('now')::timestamptz, last_seen_at)
where attached_replica = sqlc.arg('replica_id')::text;

-- name: UpdateCapabilities :execrows
update devices
set capabilities = sqlc.arg('capabilities'), updated_at = sqlc.arg('now')::timestamptz
where id = sqlc.arg('id') and session_id = sqlc.arg('session_id')::text;

-- name: TouchSessions :many
-- Records the heartbeats of many sessions at once; returns the devices whose session
-- is still the current one (the others were replaced).
update devices
set last_seen_at = greatest(devices.last_seen_at, v.seen_at)
from (select unnest(sqlc.arg('ids')::text[]) as id,
             unnest(sqlc.arg('session_ids')::text[]) as session_id,
             unnest(sqlc.arg('seen_at')::timestamptz[]) as seen_at) as v
where devices.id = v.id and devices.session_id = v.session_id
returning devices.id;

-- name: ListNodes :many
-- Nodes newest first, with the expiry of their newest valid certificate (the epoch
-- when they have none); presence is as the caller computes it from session_id and
-- last_seen_at. The labels filter matches a node's effective labels, as
-- labels.Effective makes them: those reported, overridden by those given (jsonb's ||
-- keeps the right operand's value of a key both hold).
select sqlc.embed(d), coalesce(cert.not_after, 'epoch')::timestamptz as certificate_not_after
from devices d
left join lateral (
    select c.not_after from issued_certificates c
    where c.device_id = d.id and (c.revoked_at is null or c.revoked_at > sqlc.arg('now')::timestamptz)
    order by c.not_after desc limit 1
) cert on true
where (sqlc.narg('after_created_at')::timestamptz is null
       or (d.created_at, d.id) < (sqlc.narg('after_created_at')::timestamptz, sqlc.arg('after_id')::text))
  and (sqlc.arg('include_revoked')::boolean or d.revoked_at is null)
  and (sqlc.arg('capability')::text = '' or d.capabilities @> jsonb_build_array(jsonb_build_object('name', sqlc.arg('capability')::text)))
  and (d.reported_labels || d.labels) @> sqlc.arg('labels')::jsonb
  and (sqlc.arg('presence')::text = ''
       or sqlc.arg('presence')::text = case
            when d.session_id is null then 'offline'
            when d.last_seen_at > sqlc.arg('now')::timestamptz - make_interval(secs => sqlc.arg('stale_after_seconds')::float8) then 'online'
            when d.last_seen_at > sqlc.arg('now')::timestamptz - make_interval(secs => sqlc.arg('offline_after_seconds')::float8) then 'stale'
            else 'offline' end)
order by d.created_at desc, d.id desc
limit sqlc.arg('page_limit');

-- name: GetNode :one
-- A node with the expiry of its newest valid certificate (the epoch when it has none).
select sqlc.embed(d), coalesce(cert.not_after, 'epoch')::timestamptz as certificate_not_after
from devices d
left join lateral (
    select c.not_after from issued_certificates c
    where c.device_id = d.id and (c.revoked_at is null or c.revoked_at > sqlc.arg('now')::timestamptz)
    order by c.not_after desc limit 1
) cert on true
where d.id = sqlc.arg('id');

-- name: GetNodeCapabilities :one
-- What deciding on a dispatch to a node not attached to the replica reads of it.
select revoked_at, protocol_version, capabilities from devices where id = sqlc.arg('id');
