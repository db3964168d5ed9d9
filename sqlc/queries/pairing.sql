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

-- name: LockPINAttempts :exec
-- Makes PIN attempts take turns until the transaction ends: an address's wrong PINs are
-- counted before its next attempt is looked at. An advisory lock, not a row lock, so
-- that an attempt that only reads (a right PIN) commits without writing (no WAL flush)
-- and waits for no code being used.
select pg_advisory_xact_lock(hashtextextended('palyra.pairing_pin_attempts', 0));

-- name: LockActivePINCodes :many
-- The usable PIN codes, locked, to charge a wrong PIN to one of them: a code being used
-- meanwhile is waited for, and left out once used.
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
-- Uses a code for a new request and inserts the request, in one statement, announcing
-- the request on commit (as the trigger pairing_requests_notify announces each change
-- of state), so that the watches of every request learn of it. No row when the code
-- was used, burned, deleted or expired meanwhile: of concurrent starts with one code,
-- exactly one inserts its request.
with used as (
    update pairing_codes
    set used_at = sqlc.arg('created_at'), request_id = sqlc.arg('id')
    where pairing_codes.id = sqlc.arg('code_id') and used_at is null and burned_at is null and deleted_at is null
      and expires_at > sqlc.arg('created_at')
    returning pairing_codes.id
), inserted as (
    insert into pairing_requests (
        id, code_id, secret_hash, csr_der, public_key_fingerprint, device_name, platform,
        agent_version, source_address, previous_device_id, created_at, expires_at,
        device_claim, possession_certificate_fingerprint, possession_key_fingerprint
    )
    select sqlc.arg('id'), used.id, sqlc.arg('secret_hash'), sqlc.arg('csr_der'),
           sqlc.arg('public_key_fingerprint'), sqlc.arg('device_name'), sqlc.arg('platform'),
           sqlc.arg('agent_version'), sqlc.arg('source_address'), sqlc.narg('previous_device_id'),
           sqlc.arg('created_at'), sqlc.arg('expires_at'), sqlc.arg('device_claim'),
           sqlc.narg('possession_certificate_fingerprint'), sqlc.narg('possession_key_fingerprint')
    from used
    returning *
)
select inserted.*
from inserted cross join lateral (select pg_notify('palyra_pairing', inserted.id)) as announce;

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

-- name: ApprovePairingRequestAsNewDevice :one
-- Approves a pending request, registers its node as a new device and records the
-- certificate issued to it, in one statement: the device and the certificate are
-- written only when the request was pending and not overdue (no row otherwise). The
-- device's columns are those of devices' InsertDevice, the certificate's those of
-- identity's InsertIssuedCertificate.
with approved as (
    update pairing_requests
    set state = 'approved', decided_at = sqlc.arg('now'), decided_by = sqlc.arg('decided_by'),
        device_id = sqlc.arg('device_id'), certificate_der = sqlc.arg('certificate_der'),
        certificate_fingerprint = sqlc.arg('certificate_fingerprint'), labels = sqlc.arg('labels'),
        device_claim = sqlc.arg('device_claim')
    where pairing_requests.id = sqlc.arg('id') and state = 'pending_approval' and expires_at > sqlc.arg('now')
    returning *
), device as (
    insert into devices (id, name, platform, agent_version, labels, public_key_fingerprint, created_at, updated_at)
    select sqlc.arg('device_id'), approved.device_name, approved.platform, approved.agent_version, sqlc.arg('labels'),
           approved.public_key_fingerprint, sqlc.arg('now'), sqlc.arg('now')
    from approved
), certificate as (
    insert into issued_certificates (
        serial, fingerprint, authority_id, kind, subject, dns_names, ip_addresses, uris,
        not_before, not_after, issued_by_replica, device_id
    )
    select sqlc.arg('serial'), sqlc.arg('certificate_fingerprint'), sqlc.arg('authority_id'), sqlc.arg('kind'),
           sqlc.arg('subject'), sqlc.arg('dns_names')::text[], sqlc.arg('ip_addresses')::text[], sqlc.arg('uris')::text[],
           sqlc.arg('not_before'), sqlc.arg('not_after'), sqlc.arg('issued_by_replica'), sqlc.arg('device_id')
    from approved
)
select * from approved;
