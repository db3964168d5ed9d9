-- name: InsertPairingCode :one
insert into pairing_codes (id, method, code_mac, label, created_by, created_at, expires_at)
values (sqlc.arg('id'), sqlc.arg('method'), sqlc.arg('code_mac'), sqlc.arg('label'), sqlc.arg('created_by'),
        sqlc.arg('created_at'), sqlc.arg('expires_at'))
returning *;

-- name: GetPairingCode :one
select * from pairing_codes where id = sqlc.arg('id');

-- name: ListActivePairingCodes :many
-- The usable codes of a method, to compare a presented code with each in constant time.
select * from pairing_codes
where method = sqlc.arg('method') and used_at is null and burned_at is null and deleted_at is null
  and expires_at > sqlc.arg('now')
order by created_at
limit 10000;

-- name: LockActivePINCodes :many
-- The usable PIN codes, locked: PIN attempts take turns, so that an address's failures
-- are counted before its next attempt is looked at, and every failure is charged.
select * from pairing_codes
where method = 'pin' and used_at is null and burned_at is null and deleted_at is null
  and expires_at > sqlc.arg('now')
order by id
limit 10000
for update;

-- name: ListPINFailures :many
-- When the address's counted wrong PINs happened, since a time, newest first.
select failed_at from pairing_pin_failures
where source_address = sqlc.arg('source_address') and failed_at >= sqlc.arg('since')
order by failed_at desc;

-- name: InsertPINFailure :exec
insert into pairing_pin_failures (source_address, failed_at)
values (sqlc.arg('source_address'), sqlc.arg('failed_at'));

-- name: DeletePINFailures :execrows
-- Forgets the wrong PINs before a time (those that predate every usable code).
delete from pairing_pin_failures where failed_at < sqlc.arg('before');

-- name: CountFailedPairingAttempt :many
-- Counts a wrong attempt against the given usable codes and burns those that reach the
-- limit; returns the codes it burned.
update pairing_codes
set failed_attempts = failed_attempts + 1,
    burned_at = case when failed_attempts + 1 >= sqlc.arg('max_attempts')::integer then sqlc.arg('now')::timestamptz else burned_at end
where id = any(sqlc.arg('ids')::text[]) and used_at is null and burned_at is null and deleted_at is null
  and expires_at > sqlc.arg('now')::timestamptz
returning id, burned_at;

-- name: UsePairingCode :one
-- Uses a code for a request; returns no row when it was used, burned, deleted or
-- expired meanwhile.
update pairing_codes
set used_at = sqlc.arg('now'), request_id = sqlc.arg('request_id')
where id = sqlc.arg('id') and used_at is null and burned_at is null and deleted_at is null
  and expires_at > sqlc.arg('now')
returning *;

-- name: DeletePairingCode :one
update pairing_codes
set deleted_at = sqlc.arg('now')
where id = sqlc.arg('id') and used_at is null and burned_at is null and deleted_at is null
returning *;

-- name: ListPairingCodes :many
select * from pairing_codes
where (sqlc.narg('after_created_at')::timestamptz is null
       or (created_at, id) < (sqlc.narg('after_created_at')::timestamptz, sqlc.arg('after_id')::text))
  and (not sqlc.arg('active_only')::boolean
       or (used_at is null and burned_at is null and deleted_at is null and expires_at > sqlc.arg('now')::timestamptz))
order by created_at desc, id desc
limit sqlc.arg('page_limit');

-- name: InsertPairingRequest :one
insert into pairing_requests (
    id, code_id, secret_hash, csr_der, public_key_fingerprint, device_name, platform,
    agent_version, source_address, previous_device_id, created_at, expires_at,
    device_claim, possession_certificate_fingerprint, possession_key_fingerprint
) values (
    sqlc.arg('id'), sqlc.arg('code_id'), sqlc.arg('secret_hash'), sqlc.arg('csr_der'),
    sqlc.arg('public_key_fingerprint'), sqlc.arg('device_name'), sqlc.arg('platform'),
    sqlc.arg('agent_version'), sqlc.arg('source_address'), sqlc.narg('previous_device_id'),
    sqlc.arg('created_at'), sqlc.arg('expires_at'), sqlc.arg('device_claim'),
    sqlc.narg('possession_certificate_fingerprint'), sqlc.narg('possession_key_fingerprint')
)
returning *;

-- name: GetPairingRequest :one
select * from pairing_requests where id = sqlc.arg('id');

-- name: GetPairingRequestForUpdate :one
select * from pairing_requests where id = sqlc.arg('id') for update;

-- name: ListPairingRequests :many
select * from pairing_requests
where (sqlc.narg('after_created_at')::timestamptz is null
       or (created_at, id) < (sqlc.narg('after_created_at')::timestamptz, sqlc.arg('after_id')::text))
  and (sqlc.arg('state')::text = '' or state = sqlc.arg('state')::text)
order by created_at desc, id desc
limit sqlc.arg('page_limit');

-- name: ExpirePairingRequests :many
-- Moves the pending requests whose time ran out to expired; returns their ids.
update pairing_requests
set state = 'expired', decided_at = expires_at, decided_by = 'expiry',
    reason = 'no one approved or rejected it in time'
where state = 'pending_approval' and expires_at <= sqlc.arg('now')
returning id;

-- name: ApprovePairingRequest :one
update pairing_requests
set state = 'approved', decided_at = sqlc.arg('now'), decided_by = sqlc.arg('decided_by'),
    device_id = sqlc.arg('device_id'), certificate_der = sqlc.arg('certificate_der'),
    certificate_fingerprint = sqlc.arg('certificate_fingerprint'), labels = sqlc.arg('labels'),
    device_claim = sqlc.arg('device_claim')
where id = sqlc.arg('id') and state = 'pending_approval' and expires_at > sqlc.arg('now')
returning *;

-- name: RejectPairingRequest :one
update pairing_requests
set state = 'rejected', decided_at = sqlc.arg('now'), decided_by = sqlc.arg('decided_by'),
    reason = sqlc.arg('reason')
where id = sqlc.arg('id') and state = 'pending_approval' and expires_at > sqlc.arg('now')
returning *;

-- name: CompletePairingRequest :one
update pairing_requests
set state = 'completed', completed_at = sqlc.arg('now')
where id = sqlc.arg('id') and state = 'approved'
returning *;

-- name: NotifyPairingRequestCreated :exec
-- Announces a new request on commit, as the trigger pairing_requests_notify announces
-- each change of state, so that the watches of every request learn of it.
select pg_notify('palyra_pairing', sqlc.arg('id')::text);
