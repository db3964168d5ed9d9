-- name: InsertDevice :one
insert into devices (id, name, platform, agent_version, labels, public_key_fingerprint, created_at, updated_at)
values (sqlc.arg('id'), sqlc.arg('name'), sqlc.arg('platform'), sqlc.arg('agent_version'), sqlc.arg('labels'),
        sqlc.arg('public_key_fingerprint'), sqlc.arg('now'), sqlc.arg('now'))
returning *;

-- name: RepairDevice :one
-- A device pairs again under its id: new name, platform, key and labels; reinstate
-- lifts a revocation (an approver's explicit decision).
update devices
set name = sqlc.arg('name'), platform = sqlc.arg('platform'), agent_version = sqlc.arg('agent_version'),
    labels = sqlc.arg('labels'), public_key_fingerprint = sqlc.arg('public_key_fingerprint'),
    updated_at = sqlc.arg('now'), rotate_requested_at = null,
    revoked_at = case when sqlc.arg('reinstate')::boolean then null else revoked_at end,
    revoked_reason = case when sqlc.arg('reinstate')::boolean then '' else revoked_reason end
where id = sqlc.arg('id')
returning *;

-- name: GetDevice :one
select * from devices where id = sqlc.arg('id');

-- name: GetDeviceForUpdate :one
select * from devices where id = sqlc.arg('id') for update;

-- name: RenewDevice :one
-- Records a renewal: the new key, and the end of a requested rotation.
update devices
set public_key_fingerprint = sqlc.arg('public_key_fingerprint'), updated_at = sqlc.arg('now'),
    rotate_requested_at = null
where id = sqlc.arg('id') and revoked_at is null
returning *;

-- name: RevokeDevice :one
update devices
set revoked_at = sqlc.arg('now')::timestamptz, revoked_reason = sqlc.arg('reason'), updated_at = sqlc.arg('now')::timestamptz
where id = sqlc.arg('id') and revoked_at is null
returning *;

-- name: RequestDeviceRotation :one
update devices
set rotate_requested_at = sqlc.arg('now')::timestamptz, updated_at = sqlc.arg('now')::timestamptz
where id = sqlc.arg('id') and revoked_at is null
returning *;

-- name: ListDeviceCertificates :many
select * from issued_certificates
where device_id = sqlc.arg('device_id')::text
order by issued_at desc, serial desc;

-- name: RevokeDeviceCertificates :execrows
-- Revokes (at sqlc.arg('at'), possibly in the future) every certificate of a device that
-- is not revoked earlier already, except the one to keep.
update issued_certificates
set revoked_at = sqlc.arg('at')::timestamptz, revoked_reason = sqlc.arg('reason')
where device_id = sqlc.arg('device_id')::text
  and fingerprint <> sqlc.arg('keep_fingerprint')
  and (revoked_at is null or revoked_at > sqlc.arg('at')::timestamptz)
  and not_after > sqlc.arg('now');

-- name: RevokeCertificate :one
update issued_certificates
set revoked_at = sqlc.arg('now')::timestamptz, revoked_reason = sqlc.arg('reason')
where fingerprint = sqlc.arg('fingerprint') and kind = 'device'
  and (revoked_at is null or revoked_at > sqlc.arg('now')::timestamptz)
returning *;

-- name: ListRevokedCertificates :many
-- The device certificates revoked now or later that have not expired yet: what a
-- replica must refuse at the handshake.
select fingerprint, device_id, revoked_at from issued_certificates
where kind = 'device' and revoked_at is not null and not_after > sqlc.arg('now');

-- name: ListRevokedDevices :many
select id from devices where revoked_at is not null;
